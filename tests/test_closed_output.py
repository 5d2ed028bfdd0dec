"""A reader that goes away (`pretrain.py ... | head`): the standard stream it read is dropped, and
a training run takes it as a pre-emption (checkpoint, one line, exit 0), never a traceback or a
BrokenPipeError at shutdown (core/streams.py, training/engine/preemption.py)."""

import io
import json
import os
import signal
import subprocess
import sys
from contextlib import contextmanager, redirect_stderr, redirect_stdout

import pytest

from conftest import REPO, TINY_CLI, build_lsa, tiny_config
from core.streams import lost, watch_output
from training.engine.checkpoint import resolve_checkpoint

PROJECT = "trm-lsa-cpu"


class Pipe(io.StringIO):
    """A pipe's writing end whose reader leaves when `gone` is set: writes and flushes then raise
    BrokenPipeError, as a real one does."""

    def __init__(self) -> None:
        super().__init__()
        self.gone = False
        self.failed = 0

    def write(self, text: str) -> int:
        if self.gone:
            self.failed += 1
            raise BrokenPipeError(32, "Broken pipe")
        return super().write(text)

    def flush(self) -> None:
        if self.gone:
            self.failed += 1
            raise BrokenPipeError(32, "Broken pipe")


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    return build_lsa(tmp_path_factory.mktemp("data") / "lsa4", num_train=100, num_test=20, num_aug=2)


def test_a_closed_pipe_is_pointed_at_devnull_and_reported_once(monkeypatch):
    read_end, write_end = os.pipe()
    os.close(read_end)  # the reader went away
    stream = os.fdopen(write_end, "w")
    monkeypatch.setattr(sys, "stdout", stream)
    heard = []
    try:
        with watch_output(heard.append):
            print("one")  # buffered: nothing reaches the pipe yet
            assert heard == []
            sys.stdout.flush()  # the pipe is found closed here ...
            assert heard == ["stdout"] and lost("stdout")
            print("two", flush=True)  # ... and from then on writes go nowhere, quietly
            assert heard == ["stdout"]
        assert sys.stdout is stream
        stream.write("three")
        stream.flush()  # the descriptor itself is /dev/null now: the interpreter's last flush cannot fail
        os.write(write_end, b"four")
    finally:
        stream.close()


def test_a_listener_hears_of_a_stream_already_found_closed(monkeypatch):
    pipe = Pipe()
    monkeypatch.setattr(sys, "stderr", pipe)
    with watch_output():
        pipe.gone = True
        print("x", file=sys.stderr)
        heard = []
        with watch_output(heard.append):
            assert heard == ["stderr"]
    assert sys.stderr is pipe


def test_a_process_started_without_stdout_keeps_none(monkeypatch):
    """`python pretrain.py ... >&-`: sys.stdout is None, and print() to it does nothing; it stays so."""
    monkeypatch.setattr(sys, "stdout", None)
    with watch_output(lambda name: None):
        assert sys.stdout is None
        print("nowhere")
    assert sys.stdout is None


@pytest.mark.slow
def test_closed_stdout_during_training_checkpoints_and_stops(tmp_path, data_dir, monkeypatch):
    """The run's own progress lines find stdout closed after step 4: the run stops after the step
    it is in, checkpoints it, says so in one line on stderr, and a resume goes on from there."""
    import training.loop as loop
    from training.loop import train

    pipe, err = Pipe(), io.StringIO()
    original = loop.train_step

    def step_then_close(state):
        out = original(state)
        if state.step == 4:
            pipe.gone = True
        return out

    monkeypatch.setattr(loop, "train_step", step_then_close)
    common = ["train.max_steps=40", "train.eval_interval=1000", "train.log_every=1", "logging.progress_every=1",
              "logging.run_name=piped"]
    with redirect_stdout(pipe), redirect_stderr(err):
        result = train(tiny_config(tmp_path, *common, data=data_dir))
    assert sys.stdout is not pipe
    assert result["preempted"] and result["signal"] == signal.SIGPIPE and 4 <= result["step"] < 40, result
    assert pipe.failed == 1  # found closed once, nothing written to it afterwards
    run_dir = tmp_path / "runs" / PROJECT / "piped"
    meta = json.loads((resolve_checkpoint(run_dir) / "meta.json").read_text())
    assert meta["step"] == result["step"] and meta["preempted"]  # no step lost
    lines = err.getvalue().strip().splitlines()
    assert lines == [f"stopped at step {result['step']} (stdout closed): checkpoint written; continue with "
                     "train.resume=true logging.run_name=piped"], lines

    monkeypatch.setattr(loop, "train_step", original)
    more = train(tiny_config(tmp_path, *common, "train.resume=true", data=data_dir))
    assert more["step"] == 40 and not more["preempted"]


@pytest.mark.slow
def test_closed_stdout_before_the_first_step_ends_the_run_at_once(tmp_path, data_dir):
    """Before the first step there is nothing to checkpoint: as a signal there, one line and
    exit 128 + SIGPIPE, with what starts it again."""
    import pretrain

    pipe, err = Pipe(), io.StringIO()
    pipe.gone = True
    with redirect_stdout(pipe), redirect_stderr(err):
        code = pretrain.run("cfg_lsa_cpu", [f"data.path={data_dir}", f"logging.runs_dir={tmp_path / 'runs'}",
                                            "logging.run_name=early", *TINY_CLI])
    assert code == 128 + signal.SIGPIPE
    lines = err.getvalue().strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: interrupted by a closed stdout (broken pipe) before the "
                                                   "first training step finished"), lines
    assert "logging.run_name=early starts it again" in lines[0]


def _start(tmp_path, data_dir, *extra, stderr=subprocess.PIPE):
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH")) if p),
           "WANDB_MODE": "disabled", "PYTHONUNBUFFERED": "1"}
    args = [sys.executable, "pretrain.py", "--config-name", "cfg_lsa_cpu", f"data.path={data_dir}",
            f"logging.runs_dir={tmp_path / 'runs'}", "logging.run_name=pipe", *TINY_CLI, "train.max_steps=100000",
            "train.log_every=5", "logging.progress_every=5", "train.eval_interval=100000", *extra]
    return subprocess.Popen(args, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=stderr, text=True)


@contextmanager
def piped_stdout(monkeypatch):
    """sys.stdout as Python opens a piped one (block-buffered), inside the test itself (pytest's
    capture sets sys.stdout again after fixtures); yields what is in the pipe so far."""
    read_end, write_end = os.pipe()
    stream = io.TextIOWrapper(os.fdopen(write_end, "wb"), encoding="utf-8")
    monkeypatch.setattr(sys, "stdout", stream)
    os.set_blocking(read_end, False)
    try:
        yield lambda: os.read(read_end, 100)
    finally:
        os.close(read_end)
        stream.close()


def test_stdout_into_a_pipe_is_line_buffered(monkeypatch):
    """An entry point's watch_standard_streams() makes a piped stdout line-buffered: a training run's
    progress lines reach `| tee run.log` as they are printed (measured before: a step line printed at
    48 s reached the pipe only when the run ended), not in 8 KB blocks."""
    from core.streams import watch_standard_streams

    with piped_stdout(monkeypatch) as in_pipe:
        watch_standard_streams()
        print("step 5/100")
        assert in_pipe() == b"step 5/100\n"


def test_a_script_s_stdout_into_a_pipe_is_line_buffered(monkeypatch):
    """The scripts (evaluate, ttc_sweep, scaling, ...) run through core.cli.run_cli, which makes a
    piped stdout line-buffered too: a line printed inside main() is in the pipe before main returns."""
    from core.cli import run_cli

    seen = []
    with piped_stdout(monkeypatch) as in_pipe:
        def main():
            print("scored 10 of 10")
            seen.append(in_pipe())

        run_cli(main)
    assert seen == [b"scored 10 of 10\n"]


def _read_until(stream, start: str) -> None:
    for line in stream:
        if line.startswith(start):
            return
    raise AssertionError(f"no line starting {start!r}")


def _close_after_step_5(proc, closed: str) -> str:
    """Close the run's stdout or stderr (`closed`) once it has printed step 5; returns the other
    stream's text, after the run exited 0."""
    kept = proc.stderr if closed == "stdout" else proc.stdout
    try:
        _read_until(proc.stdout, "step 5/")
        getattr(proc, closed).close()
        text = kept.read()
        assert proc.wait(timeout=120) == 0, text
    finally:
        proc.kill()
        proc.wait()
    return text


@pytest.mark.slow
def test_pipe_into_head_stops_the_run_with_a_checkpoint(tmp_path, data_dir):
    """`pretrain.py ... | head`: head leaves after a progress line; the run checkpoints and exits 0
    with one line on stderr: no 'Broken pipe', no traceback, no BrokenPipeError at shutdown."""
    proc = _start(tmp_path, data_dir)
    err = _close_after_step_5(proc, "stdout")
    meta = json.loads((resolve_checkpoint(tmp_path / "runs" / PROJECT / "pipe") / "meta.json").read_text())
    assert meta["preempted"]
    lines = err.strip().splitlines()
    assert lines[-1] == (f"stopped at step {meta['step']} (stdout closed): checkpoint written; continue with "
                         "train.resume=true logging.run_name=pipe"), err
    assert "Traceback" not in err and "Exception ignored" not in err and "Broken pipe" not in err, err


@pytest.mark.slow
def test_closed_stderr_under_the_progress_bar_stops_the_run_with_a_checkpoint(tmp_path, data_dir):
    """The progress bar (stderr) finds its reader gone: the same stop, its line on stdout."""
    proc = _start(tmp_path, data_dir, "logging.progress=true")
    out = _close_after_step_5(proc, "stderr")
    meta = json.loads((resolve_checkpoint(tmp_path / "runs" / PROJECT / "pipe") / "meta.json").read_text())
    lines = out.strip().splitlines()
    assert f"stopped at step {meta['step']} (stderr closed): checkpoint written" in lines[-2], out
    result = json.loads(lines[-1])
    assert result["preempted"] and result["signal"] == signal.SIGPIPE and result["step"] == meta["step"]


@pytest.mark.slow
def test_closed_stdout_stops_a_sweep_and_its_sweep_line_reaches_stderr(tmp_path, data_dir):
    """`pretrain.py -m ... | head`: the running job checkpoints, the jobs after it are not started,
    and the sweep's own line (which jobs were skipped, the whole command that continues this job)
    goes to stderr, as the run's stop line does: stdout has no reader."""
    proc = _start(tmp_path, data_dir, "-m", "train.seed=0,1")
    err = _close_after_step_5(proc, "stdout")
    lines = err.strip().splitlines()
    assert lines[-1].startswith("sweep stopped at job 0 by a closed stdout: the jobs after it were not started; "
                                "continue this job with: python pretrain.py --config-name cfg_lsa_cpu "), err
    assert lines[-1].endswith("train.seed=0 logging.run_name=pipe-0 train.resume=true"), err
    assert lines[-2].startswith("stopped at step ") and "(stdout closed)" in lines[-2], err
    runs = sorted(p.name for p in (tmp_path / "runs" / PROJECT).iterdir() if not p.name.startswith("."))
    assert runs == ["pipe-0"], runs


@pytest.mark.slow
def test_closed_stderr_before_the_first_step_says_so_on_stdout(tmp_path, data_dir):
    """stderr has no reader from the start: the progress bar finds it closed before the first step
    finished, the run ends at once (exit 128 + SIGPIPE), and its one line goes to stdout."""
    read_end, write_end = os.pipe()
    os.close(read_end)  # the reader of stderr is gone before the run starts
    try:
        proc = _start(tmp_path, data_dir, "logging.progress=true", stderr=write_end)
    finally:
        os.close(write_end)
    out, _ = proc.communicate(timeout=120)
    assert proc.returncode == 128 + signal.SIGPIPE, out
    lines = out.strip().splitlines()
    assert lines[-1].startswith("error: interrupted by a closed stderr (broken pipe) before the first training step "
                                "finished"), out
    assert "logging.run_name=pipe starts it again" in lines[-1], out


@pytest.mark.slow
@pytest.mark.parametrize("fd", [1, 2])
def test_a_run_started_without_stdout_or_stderr_trains(tmp_path, data_dir, fd):
    """`pretrain.py ... >&-` or `2>&-`: the stream was never there (Python sets it to None), which
    is no reader leaving: the run trains to its end. Without stderr it exited 1 before anything,
    silently (faulthandler.enable() refuses a None stderr, and so would the progress bar)."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH")) if p),
           "WANDB_MODE": "disabled"}
    args = [sys.executable, "pretrain.py", "--config-name", "cfg_lsa_cpu", f"data.path={data_dir}",
            f"logging.runs_dir={tmp_path / 'runs'}", "logging.run_name=closed", *TINY_CLI, "train.max_steps=4",
            "train.eval_interval=4", "logging.progress=true"]
    proc = subprocess.run(args, cwd=REPO, env=env, capture_output=True, text=True, timeout=300,
                          preexec_fn=lambda: os.close(fd))
    assert proc.returncode == 0, (proc.stdout, proc.stderr)
    meta = json.loads((resolve_checkpoint(tmp_path / "runs" / PROJECT / "closed") / "meta.json").read_text())
    assert meta["step"] == 4 and not meta.get("preempted")
    if fd == 2:
        assert json.loads(proc.stdout.strip().splitlines()[-1])["step"] == 4
    else:
        assert "Traceback" not in proc.stderr and "Exception ignored" not in proc.stderr, proc.stderr
