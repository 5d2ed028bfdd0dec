"""Data parallelism on the CPU: torchrun with 2 processes (gloo) against 1, through the real
pretrain.py. Halting exploration is off so that no random draw separates the runs: what is left
is the order of float sums (the all-reduced gradients), so curves agree to a tolerance, not
bit for bit."""

import json
import os
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from conftest import REPO, build_lsa, run_in_process
from training.engine.checkpoint import resolve_checkpoint

pytestmark = pytest.mark.slow  # not in the fast subset (pytest -m "not slow")

PROJECT = "trm-lsa-cpu"
# 2 ranks vs 1 at the same global batch: per-step losses agree to this relative tolerance.
# Measured 2026-11-29 (2-core CPU): the largest gap over 24 steps was 1.3e-7 (mean 3.5e-8);
# 1e-4 leaves room for other CPUs and BLAS builds.
LOSS_RTOL = 1e-4
COMMON = ["arch.hidden_size=32", "arch.num_heads=2", "arch.H_cycles=1", "arch.L_cycles=2", "arch.halt_max_steps=3",
          "arch.halt_exploration_prob=0", "train.global_batch_size=32", "train.log_every=1", "logging.progress=false",
          "optim.lr=3e-3", "optim.lr_warmup_steps=5", "optim.puzzle_emb_lr=3e-3", "train.ema_rate=0.9"]


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return build_lsa(tmp_path_factory.mktemp("ddp") / "lsa4", num_train=100, num_test=21, num_aug=3)


def env():
    path = os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH")) if p)
    return {**os.environ, "PYTHONPATH": path, "WANDB_MODE": "disabled", "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}


def command(nproc, data, runs, *extra):
    launcher = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={nproc}"] if nproc \
        else [sys.executable]
    return [*launcher, "pretrain.py", "--config-name", "cfg_lsa_cpu", f"data.path={data}", f"logging.runs_dir={runs}",
            *COMMON, *extra]


def why(result):
    """A failed launch's stderr for the assertion: where a rank died (faulthandler's "Fatal Python
    error" with every thread's stack, which a rank that aborts prints first) and the end (torchrun's
    summary); CI once saw a rank abort and only the summary survived the cut."""
    text = result.stderr
    fatal = text.find("Fatal Python error")
    head = text[fatal:fatal + 6000] + "\n...\n" if fatal >= 0 else ""
    return head + text[-3000:]


def launch(nproc, data, runs, *extra, timeout=300):
    """nproc=None: one process, pretrain.py's command line run in this one (no process group:
    what `python pretrain.py` does, without a new interpreter); else torchrun with nproc processes."""
    if nproc is None:
        return run_in_process(*command(None, data, runs, *extra)[1:])
    return subprocess.run(command(nproc, data, runs, *extra), cwd=REPO, env=env(), capture_output=True, text=True,
                          timeout=timeout)


@pytest.fixture(scope="module")
def straight(data, tmp_path_factory):
    """The uninterrupted one-rank run (20 steps, evaluated at 10 and 20) the multi-rank runs are
    compared with; only read."""
    runs = tmp_path_factory.mktemp("straight") / "runs"
    result = launch(None, data, runs, "logging.run_name=straight", "train.max_steps=20", "train.eval_interval=10")
    assert result.returncode == 0, why(result)
    return runs / PROJECT / "straight"


@pytest.fixture(scope="module")
def two(data, tmp_path_factory):
    """The same run's first 10 steps on 2 ranks (evaluated at 5 and 10); tests that resume it
    copy it first."""
    runs = tmp_path_factory.mktemp("two") / "runs"
    result = launch(2, data, runs, "logging.run_name=two", "train.max_steps=10", "train.eval_interval=5")
    assert result.returncode == 0, why(result)
    return runs


def losses(run_dir):
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return {r["step"]: r["train/lm_loss"] for r in records if "train/lm_loss" in r}


def evals(run_dir):
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()
            if "eval/examples" in json.loads(line)]


def assert_close_curves(a, b):
    assert a.keys() == b.keys()
    gaps = {step: abs(a[step] - b[step]) / abs(b[step]) for step in a}
    assert max(gaps.values()) < LOSS_RTOL, max(gaps.items(), key=lambda kv: kv[1])


def test_two_ranks_follow_one_rank_and_score_every_example_once(data, straight, two):
    runs = two
    assert_close_curves(losses(runs / PROJECT / "two"), {k: v for k, v in losses(straight).items() if k <= 10})
    # Evaluation is sharded over the ranks (21 examples: 11 + 10) and gathered: each scored once.
    assert [r["step"] for r in evals(runs / PROJECT / "two")] == [5, 10]
    for record in evals(runs / PROJECT / "two"):
        assert record["eval/examples"] == 21
    predictions = np.load(runs / PROJECT / "two" / "eval" / "step_0000010" / "lsa_predictions.npz")
    test_inputs = np.load(data / "test" / "all__inputs.npy")
    assert np.array_equal(predictions["costs"].reshape(21, -1), test_inputs)  # all of them, in order, once
    (last_one,) = [r for r in evals(straight) if r["step"] == 10]
    last_two = evals(runs / PROJECT / "two")[-1]
    assert last_two["eval/lm_loss"] == pytest.approx(last_one["eval/lm_loss"], rel=1e-3)
    # Rank 0 alone wrote the run directory; the checkpoint records how many ranks made it.
    assert sorted(p.name for p in runs.iterdir()) == [PROJECT]
    assert json.loads((resolve_checkpoint(runs / PROJECT / "two") / "meta.json").read_text())["world_size"] == 2


@pytest.mark.parametrize("first, second", [(2, None), (None, 2)])
def test_resume_with_another_number_of_ranks(data, straight, two, tmp_path, first, second):
    """The carry is saved whole (rank order) and cut anew for the new world size; with
    exploration off nothing else depends on the ranks, so the resumed run follows the
    uninterrupted one-rank run."""
    runs = tmp_path / "runs"
    if first == 2:  # the first 10 steps on 2 ranks: the `two` run (a copy, since this resume adds to it)
        name = "two"
        shutil.copytree(two / PROJECT / name, runs / PROJECT / name)
    else:
        name = "r"
        part1 = launch(first, data, runs, f"logging.run_name={name}", "train.max_steps=10", "train.eval_interval=10")
        assert part1.returncode == 0, why(part1)
        assert json.loads((resolve_checkpoint(runs / PROJECT / name) / "meta.json").read_text())["step"] == 10
    part2 = launch(second, data, runs, f"logging.run_name={name}", "train.max_steps=20", "train.eval_interval=10",
                   "train.resume=true")
    assert part2.returncode == 0, why(part2)
    assert "random streams" in part2.stdout  # the log says the RNG streams could not continue as they were
    assert_close_curves(losses(runs / PROJECT / name), losses(straight))


def test_bad_setups_end_with_one_line_on_every_rank(data, tmp_path):
    runs = tmp_path / "runs"
    odd = launch(2, data, runs, "logging.run_name=odd", "train.global_batch_size=33", "train.max_steps=2")
    assert odd.returncode != 0
    assert odd.stderr.count("error: train.global_batch_size=33 is not divisible by the 2 ranks") == 2, why(odd)
    differ = launch(2, data, runs, "logging.run_name=differ", "train.seed=${oc.env:LOCAL_RANK}", "train.max_steps=2")
    assert differ.returncode != 0
    assert differ.stderr.count("error: the config differs between rank 0 and rank 1 (train.seed)") == 2, why(differ)
    assert not (runs / PROJECT).exists()  # neither left a run directory


def rank_pid(rank, marker, deadline):
    """The pid of the torchrun worker with RANK=rank whose command line holds `marker`."""
    while time.time() < deadline:
        for entry in os.listdir("/proc"):
            if not entry.isdigit():
                continue
            try:
                cmdline = open(f"/proc/{entry}/cmdline", "rb").read().decode(errors="replace")
                environ = open(f"/proc/{entry}/environ", "rb").read().decode(errors="replace").split("\0")
            except OSError:
                continue
            if marker in cmdline and "pretrain.py" in cmdline and f"RANK={rank}" in environ:
                return int(entry)
        time.sleep(0.1)
    raise AssertionError(f"no rank {rank} process found")


def test_a_rank_that_dies_ends_the_run_without_a_hang(data, tmp_path):
    runs = tmp_path / "runs"
    proc = subprocess.Popen(command(2, data, runs, "logging.run_name=dies", "train.max_steps=100000",
                                    "train.eval_interval=100000", "train.dist_timeout_s=60"),
                            cwd=REPO, env=env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    log = runs / PROJECT / "dies" / "metrics.jsonl"
    deadline = time.time() + 120
    while not (log.is_file() and "train/lm_loss" in log.read_text()):  # wait for training, not for time
        assert proc.poll() is None and time.time() < deadline, proc.communicate()
        time.sleep(0.2)
    os.kill(rank_pid(1, str(runs), deadline), signal.SIGKILL)
    out, err = proc.communicate(timeout=120)  # torchrun stops the other rank; nothing waits forever
    assert proc.returncode != 0
    assert "error: rank 0 of 2 lost contact with another rank" in err and "[rank0]: Traceback" not in err, err[-3000:]


def test_sigterm_to_torchrun_checkpoints_once_and_resumes(data, tmp_path):
    """torchrun passes a SIGTERM on to every rank; the ranks agree at the next log step, save
    one checkpoint together and stop; the run then resumes (here in one process: a resume on 2
    ranks of a 2-rank pre-empted checkpoint is test_hostile_r3_bounds.py's signal test)."""
    runs = tmp_path / "runs"
    proc = subprocess.Popen(command(2, data, runs, "logging.run_name=pre", "train.max_steps=100000",
                                    "train.eval_interval=100000"),
                            cwd=REPO, env=env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    log = runs / PROJECT / "pre" / "metrics.jsonl"
    deadline = time.time() + 120
    while not (log.is_file() and "train/lm_loss" in log.read_text()):
        assert proc.poll() is None and time.time() < deadline, proc.communicate()
        time.sleep(0.2)
    proc.send_signal(signal.SIGTERM)
    proc.communicate(timeout=120)
    meta = json.loads((resolve_checkpoint(runs / PROJECT / "pre") / "meta.json").read_text())
    assert meta["preempted"] is True and meta["world_size"] == 2
    resumed = launch(None, data, runs, "logging.run_name=pre", "train.resume=true",
                     f"train.max_steps={meta['step'] + 3}", "train.eval_interval=100000")
    assert resumed.returncode == 0, why(resumed)
    assert max(losses(runs / PROJECT / "pre")) == meta["step"] + 3


# ---------------------------------------------------------------------------------------------
# Tearing the process group down (in-process, with a stand-in for torch.distributed's calls)


class FakeGroup:
    """Records what close_world does; `barrier_error` is raised by the final barrier."""

    def __init__(self, monkeypatch, barrier_error=None, destroy_error=None):
        import training.engine.distributed as td

        self.calls, self.handlers_during_destroy = [], None
        self.barrier_error, self.destroy_error = barrier_error, destroy_error
        monkeypatch.setattr(td.dist, "is_initialized", lambda: True)
        monkeypatch.setattr(td.dist, "barrier", self.barrier)
        monkeypatch.setattr(td.dist, "destroy_process_group", self.destroy)

    def barrier(self):
        self.calls.append("barrier")
        if self.barrier_error is not None:
            raise self.barrier_error

    def destroy(self):
        self.calls.append("destroy")
        self.handlers_during_destroy = {s: signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGINT)}
        if self.destroy_error is not None:
            raise self.destroy_error


WORLD2 = dict(rank=1, world_size=2, local_rank=1, backend="gloo")


def test_a_finished_rank_meets_the_others_then_tears_down(monkeypatch):
    from training.engine.distributed import World, close_world

    group = FakeGroup(monkeypatch)
    before = {s: signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGINT)}
    close_world(World(**WORLD2), finished=True)
    assert group.calls == ["barrier", "destroy"]
    assert group.handlers_during_destroy == before  # a finished rank stays interruptible


@pytest.mark.parametrize("error, warning", [
    ("interrupted", "interrupted by SIGTERM while waiting for the other ranks at the end"),
    (RuntimeError("[gloo] Connection closed by peer"), "another rank did not reach the final barrier"),
])
def test_a_finished_rank_only_warns_about_the_final_barrier(monkeypatch, capsys, error, warning):
    from core.signals import Interrupted
    from training.engine.distributed import World, close_world

    group = FakeGroup(monkeypatch, barrier_error=Interrupted(signal.SIGTERM) if error == "interrupted" else error)
    close_world(World(**WORLD2), finished=True)  # no exception: the run had finished and saved
    assert group.calls == ["barrier", "destroy"]
    assert warning in capsys.readouterr().err


def test_an_unexpected_barrier_error_is_raised_after_the_teardown(monkeypatch):
    from training.engine.distributed import World, close_world

    group = FakeGroup(monkeypatch, barrier_error=ValueError("a bug"))
    with pytest.raises(ValueError, match="a bug"):
        close_world(World(**WORLD2), finished=True)
    assert group.calls == ["barrier", "destroy"]


def test_after_an_error_no_barrier_and_signals_wait_out_the_teardown(monkeypatch, capsys):
    from training.engine.distributed import World, close_world

    group = FakeGroup(monkeypatch, destroy_error=RuntimeError("teardown broke"))
    before = {s: signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGINT)}
    close_world(World(**WORLD2), finished=False)  # the error being reported is not replaced
    assert group.calls == ["destroy"]
    assert set(group.handlers_during_destroy.values()) == {signal.SIG_IGN}
    assert {s: signal.getsignal(s) for s in before} == before
    assert "tearing the process group down failed (teardown broke)" in capsys.readouterr().err


def test_clearing_frames_reaches_causes_and_contexts():
    """A local held by a frame reached only through __context__ (raise X from Y inside except Z)."""
    import weakref

    from training.loop import clear_traceback_frames

    class Held:
        pass

    refs = []

    def inner():
        held = Held()
        refs.append(weakref.ref(held))
        raise KeyError("inner")

    def outer():
        try:
            inner()
        except KeyError:
            raise ValueError("outer") from RuntimeError("cause")

    try:
        outer()
    except ValueError as exc:
        caught = exc
    assert refs[0]() is not None  # inner()'s frame, in the KeyError's traceback, still holds it
    clear_traceback_frames(caught)
    assert refs[0]() is None
