"""Issue 23, item 7: Ctrl-C to pytest stops the suite, also while a test trains in-process (the
training's own SIGINT handler would otherwise take it as a pre-emption: checkpoint, return, the
test fails and the suite goes on). conftest.py's UserInterruptGuard turns a signal from outside
into KeyboardInterrupt; signals the tests send themselves still reach the training. The same with
`pytest -n 2` (pytest-xdist), the README's commands: a terminal's Ctrl-C reaches both workers."""

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

import pytest

import training.loop as loop
from conftest import build_lsa, tiny_config
from training.loop import train

TMP = Path({tmp!r})


@pytest.mark.parametrize("who", range(6))
def test_trains_until_stopped(tmp_path, monkeypatch, who):
    (TMP / f"began-{{who}}").write_text("began")
    original = loop.train_step

    def step_and_tell(state):
        out = original(state)
        if state.step == 2:
            (TMP / f"training-{{who}}").write_text("training")
        return out

    monkeypatch.setattr(loop, "train_step", step_and_tell)
    data = build_lsa(tmp_path / "data")
    train(tiny_config(tmp_path, "train.max_steps=100000000", "train.eval_interval=100000000", data=data))
'''


@pytest.mark.parametrize("workers", [0, 2])
def test_ctrl_c_stops_pytest_during_in_process_training(tmp_path, workers):
    """Ctrl-C in a terminal: SIGINT to pytest's process group (pytest, and with `-n 2` its two
    pytest-xdist workers) while each of them trains. Every inner test trains until stopped, so
    the ones that began are the ones running when the signal came: no other may begin after it."""
    running = max(workers, 1)
    (tmp_path / "test_inner.py").write_text(INNER.format(tmp=str(tmp_path)))
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO / "tests"), str(REPO)]), "WANDB_MODE": "disabled"}
    parallel = ["-n", str(workers)] if workers else []  # 0: plain pytest, no xdist flag
    proc = subprocess.Popen([sys.executable, "-m", "pytest", "-q", "-p", "conftest", "-p", "no:cacheprovider",
                             *parallel, str(tmp_path / "test_inner.py")], cwd=tmp_path, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True)  # a process group of its own, as a terminal gives
    try:
        deadline = time.monotonic() + 180
        while len(list(tmp_path.glob("training-*"))) < running:  # the event: each worker's test has taken 2 steps
            assert proc.poll() is None, proc.communicate()[0]
            assert time.monotonic() < deadline, "training did not start"
            time.sleep(0.05)
        sent = time.monotonic()
        os.killpg(proc.pid, signal.SIGINT)
        try:
            out, _ = proc.communicate(timeout=60)
        except subprocess.TimeoutExpired:  # a hang: SIGABRT makes pytest's faulthandler print every thread's stack
            os.killpg(proc.pid, signal.SIGABRT)
            pytest.fail(f"pytest still running 60 s after Ctrl-C; its threads:\n{proc.communicate(timeout=60)[0][-8000:]}")
        while group_alive(proc.pid):  # nothing of the suite is left running (the workers end with it)
            assert time.monotonic() - sent < 30, f"processes of the interrupted pytest are still alive:\n{out}"
            time.sleep(0.05)
    finally:
        if group_alive(proc.pid):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    assert proc.returncode == 2, out  # pytest's ExitCode.INTERRUPTED
    assert time.monotonic() - sent < 30, out
    # Plain pytest reports the KeyboardInterrupt; under xdist whichever gets there first does:
    # the controller's own KeyboardInterrupt, or a worker's "node down: keyboard-interrupt".
    assert "KeyboardInterrupt" in out or (workers and "keyboard-interrupt" in out), out
    began = sorted(p.name for p in tmp_path.glob("began-*"))
    assert len(began) == running, (began, out)  # the remaining tests did not run


def group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    return True
