"""Issue 23, item 7: Ctrl-C to pytest stops the suite, also while a test trains in-process (the
training's own SIGINT handler would otherwise take it as a pre-emption: checkpoint, return, the
test fails and the suite goes on). conftest.py's UserInterruptGuard turns a signal from outside
into KeyboardInterrupt; signals the tests send themselves still reach the training."""

import os
import signal
import subprocess
import sys
import time

import pytest

from conftest import REPO

pytestmark = pytest.mark.slow  # not in the fast subset (pytest -m "not slow")

INNER = '''
from pathlib import Path

import training.loop as loop
from conftest import build_lsa, tiny_config
from training.loop import train

STARTED, AFTER = Path({started!r}), Path({after!r})


def test_trains_until_stopped(tmp_path, monkeypatch):
    original = loop.train_step

    def step_and_tell(state):
        out = original(state)
        if state.step == 2:
            STARTED.write_text("training")
        return out

    monkeypatch.setattr(loop, "train_step", step_and_tell)
    data = build_lsa(tmp_path / "data")
    train(tiny_config(tmp_path, "train.max_steps=100000000", "train.eval_interval=100000000", data=data))


def test_after_the_interrupt():
    AFTER.write_text("ran")
'''


def test_ctrl_c_stops_pytest_during_in_process_training(tmp_path):
    started, after = tmp_path / "started", tmp_path / "after"
    (tmp_path / "test_inner.py").write_text(INNER.format(started=str(started), after=str(after)))
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO / "tests"), str(REPO)]), "WANDB_MODE": "disabled"}
    proc = subprocess.Popen([sys.executable, "-m", "pytest", "-q", "-p", "conftest", "-p", "no:cacheprovider",
                             str(tmp_path / "test_inner.py")], cwd=tmp_path, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.monotonic() + 120
        while not started.exists():  # the event: the inner test's training has taken two steps
            assert proc.poll() is None, proc.communicate()[0]
            assert time.monotonic() < deadline, "training did not start"
            time.sleep(0.05)
        sent = time.monotonic()
        proc.send_signal(signal.SIGINT)
        out, _ = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 2, out  # pytest's ExitCode.INTERRUPTED
    assert time.monotonic() - sent < 30, out
    assert "KeyboardInterrupt" in out and not after.exists(), out  # the remaining test did not run
