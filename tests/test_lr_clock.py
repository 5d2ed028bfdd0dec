"""optim.lr_schedule_clock: `steps` (the default) gives the LRs of the step schedule; `time` decays
the LR over train.max_train_seconds by the training clock all ranks agreed at the last log step,
warm-up in steps, ending within one log window's decay of the floor at the budget; a stop and
resume continues the schedule bit for bit, two torchrun ranks take the same LR at every step, and
a time clock without a budget is a one-line config error.

The runs use a stand-in clock (StepClock) that advances a fixed amount per training step, so no
assertion depends on the machine's speed (the two-rank run keeps the real clock: what it checks,
equal LRs on both ranks, holds at any speed)."""

from __future__ import annotations

import json
import math
import subprocess
import sys
import types

import pytest

from conftest import REPO, assert_one_line_error, build_lsa, pretrain_argv, run_in_process, sigterm_after_step, tiny_config
from training.bookkeeping.runs import read_metrics
from training.config import ConfigError
from training.engine.optim import lr_at, lr_at_time

PROJECT = "trm-lsa-cpu"
LR, EMB_LR, WARMUP, FLOOR = 3e-3, 1e-3, 4, 0.1  # the runs' schedule: optim.lr, puzzle_emb_lr, warm-up steps, min ratio
SCHEDULE = [f"optim.lr={LR}", f"optim.puzzle_emb_lr={EMB_LR}", f"optim.lr_warmup_steps={WARMUP}",
            f"optim.lr_min_ratio={FLOOR}"]
DT = 0.5  # StepClock's seconds per training step (exact in binary: the clock's sums are exact)


# ---------------------------------------------------------------------------------------------
# The schedule itself


def test_lr_at_time_warms_up_in_steps_and_decays_over_the_budget():
    # warm-up: a ramp over the steps, whatever the clock says
    assert lr_at_time(0, 0.0, 1.0, 10, 100.0, 0.1) == 0.0
    assert lr_at_time(5, 0.0, 1.0, 10, 100.0, 0.1) == pytest.approx(0.5)
    assert lr_at_time(10, 0.0, 1.0, 10, 100.0, 0.1) == 1.0
    assert lr_at_time(10**6, 0.0, 1.0, 10, 100.0, 0.1) == 1.0  # steps alone do not decay it
    # the cosine over the budget's seconds
    assert lr_at_time(10, 50.0, 1.0, 10, 100.0, 0.1) == pytest.approx(0.55)
    assert lr_at_time(10, 25.0, 2.0, 10, 100.0, 0.1) == pytest.approx(2.0 * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi / 4))))
    # the floor at the budget, exactly, and after it
    assert lr_at_time(10, 100.0, 1.0, 10, 100.0, 0.1) == 0.1
    assert lr_at_time(10, 250.0, 1.0, 10, 100.0, 0.1) == 0.1
    assert lr_at_time(500, 400.0, 2e-4, 500, 400.0, 0.1) == 2e-4 * 0.1
    # the two multiply: a warm-up still under way at half the budget
    assert lr_at_time(5, 50.0, 1.0, 10, 100.0, 0.1) == pytest.approx(0.5 * 0.55)
    # no warm-up; and min_ratio 1: no decay at all
    assert lr_at_time(0, 30.0, 1.0, 0, 100.0, 0.1) == pytest.approx(0.1 + 0.9 * 0.5 * (1 + math.cos(0.3 * math.pi)))
    assert lr_at_time(50, 99.0, 1.0, 10, 100.0, 1.0) == 1.0
    # decreasing in the seconds after the warm-up
    values = [lr_at_time(10, s, 1.0, 10, 100.0, 0.1) for s in range(0, 101, 5)]
    assert values == sorted(values, reverse=True) and len(set(values)) == len(values)


def test_default_is_the_step_clock(tmp_path):
    cfg = tiny_config(tmp_path)
    assert cfg.optim.lr_schedule_clock == "steps"
    assert tiny_config(tmp_path, "optim.lr_schedule_clock=time", "train.max_train_seconds=60").optim.lr_schedule_clock == "time"


def test_the_loop_takes_the_configured_clock(tmp_path):
    """loop.scheduled_lr: the step schedule by default; with the time clock, the clock agreed at
    the last log step (agreed_seconds), not the rank's own training seconds, in one process too."""
    from training.loop import scheduled_lr

    state = types.SimpleNamespace(cfg=tiny_config(tmp_path, *SCHEDULE), step=30, total_steps=40, train_seconds=9.0,
                                  agreed_seconds=2.0)
    assert scheduled_lr(state, LR) == lr_at(30, LR, WARMUP, 40, FLOOR)
    state.cfg = tiny_config(tmp_path, *SCHEDULE, "optim.lr_schedule_clock=time", "train.max_train_seconds=10")
    assert scheduled_lr(state, LR) == lr_at_time(30, 2.0, LR, WARMUP, 10.0, FLOOR)
    assert scheduled_lr(state, LR) != lr_at_time(30, 9.0, LR, WARMUP, 10.0, FLOOR) != lr_at(30, LR, WARMUP, 40, FLOOR)
    state.step, state.agreed_seconds = 2, 10.0  # still warming up at the end of the budget: at most the floor
    assert scheduled_lr(state, LR) == pytest.approx(LR * FLOOR * 2 / WARMUP)


def test_the_pace_warning_names_the_budget_under_the_time_clock(tmp_path):
    """Under the time clock train.max_steps is only a cap: a run far beyond the device is told to
    lower train.max_train_seconds, not max_steps; with the step clock the advice is unchanged."""
    from training.loop import pace_warning

    device = types.SimpleNamespace(type="cuda")
    cfg = tiny_config(tmp_path, *SCHEDULE, "optim.lr_schedule_clock=time", "train.max_train_seconds=172800",
                      "train.max_steps=100000000")
    state = types.SimpleNamespace(cfg=cfg, step=10, total_steps=100000000, train_seconds=5.0, device=device)
    warning = pace_warning(state, 2.0)
    assert warning.startswith("warning: train.max_train_seconds=172800 at 2 steps/s on cuda: about 48 h of training")
    assert warning.endswith("; lower train.max_train_seconds") and "max_steps" not in warning
    state.cfg = tiny_config(tmp_path, *SCHEDULE, "train.max_train_seconds=172800", "train.max_steps=100000000")
    assert "lower train.epochs or train.max_steps" in pace_warning(state, 2.0)
    state.cfg = tiny_config(tmp_path, *SCHEDULE, "optim.lr_schedule_clock=time", "train.max_train_seconds=3600",
                            "train.max_steps=100000000")
    assert pace_warning(state, 2.0) is None  # an hour's budget is not far beyond anything
    # the cap before the budget at this speed (100,000 steps at 2 steps/s: ~14 h of the 48 h): the
    # steps end the run, so they are what the line names, not the 48 h budget it would not reach
    state.cfg = tiny_config(tmp_path, *SCHEDULE, "optim.lr_schedule_clock=time", "train.max_train_seconds=172800",
                            "train.max_steps=100000")
    state.total_steps = 100000
    warning = pace_warning(state, 2.0)
    assert warning.startswith("warning: 99990 steps left at 2 steps/s on cuda: about 14 h of training")
    assert warning.endswith("lower train.epochs or train.max_steps, or lower train.max_train_seconds")


# ---------------------------------------------------------------------------------------------
# Config errors: one line naming the field


@pytest.mark.parametrize("overrides, culprits", [
    (["optim.lr_schedule_clock=time"], ("optim.lr_schedule_clock=time", "train.max_train_seconds", "not set")),
    (["optim.lr_schedule_clock=wall", "train.max_train_seconds=60"], ("optim.lr_schedule_clock", "'wall'")),
    (["optim.lr_schedule_clock=null", "train.max_train_seconds=60"], ("optim.lr_schedule_clock",)),
])
def test_bad_clocks_are_one_line_naming_the_field(tmp_path, overrides, culprits):
    with pytest.raises(ConfigError) as info:
        tiny_config(tmp_path, *overrides)
    message = str(info.value)
    assert "\n" not in message and all(c in message for c in culprits), message


def test_pretrain_refuses_a_time_clock_without_a_budget_in_one_line(tmp_path):
    result = run_in_process(*pretrain_argv(tmp_path / "data", tmp_path / "runs", "--check", "optim.lr_schedule_clock=time"))
    assert_one_line_error(result, "optim.lr_schedule_clock=time", "train.max_train_seconds")


# ---------------------------------------------------------------------------------------------
# Training runs (a second or two each on a CPU; slow: the fast subset trains nothing end to end)


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    return build_lsa(tmp_path_factory.mktemp("data") / "lsa4", num_train=120, num_test=20, num_aug=2)


class StepClock:
    """The training loop's `time` module in these tests: perf_counter() moves DT seconds per
    training step taken and at no other time, so every step adds exactly DT to the training
    clock (evaluations add nothing), however fast the machine and however often the loop reads it."""

    def __init__(self):
        self.steps = 0

    def perf_counter(self):
        return self.steps * DT


@pytest.fixture
def lrs(monkeypatch):
    """Installs StepClock and records, per training step: (step, the agreed clock the step's LR
    was computed from, the weights' LR, the puzzle embedding's LR)."""
    import training.loop as loop

    clock, records = StepClock(), []
    original = loop.train_step

    def recording(state):
        out = original(state)
        clock.steps += 1
        records.append((state.step, state.agreed_seconds, state.adam.param_groups[0]["lr"],
                        state.sign.param_groups[0]["lr"]))
        return out

    monkeypatch.setattr(loop, "time", clock)
    monkeypatch.setattr(loop, "train_step", recording)
    return records


@pytest.mark.slow
def test_step_clock_gives_the_step_schedule(tmp_path, data_dir, lrs):
    """The default: each step's LRs are lr_at of the step over the planned steps, as before the
    option (the same function, called with the same arguments), warm-up and cosine both run."""
    from training.loop import train

    result = train(tiny_config(tmp_path, *SCHEDULE, "train.max_steps=12", "train.eval_interval=12", "train.log_every=4",
                               "logging.run_name=s", data=data_dir))
    assert result["step"] == 12
    assert [step for step, *_ in lrs] == list(range(1, 13))
    for step, _, lr, emb_lr in lrs:
        assert lr == lr_at(step, LR, WARMUP, 12, FLOOR) and emb_lr == lr_at(step, EMB_LR, WARMUP, 12, FLOOR), step
    assert lrs[-1][2] == LR * FLOOR  # the floor at the last planned step
    logged = {r["step"]: r["train/lr"] for r in read_metrics(tmp_path / "runs" / PROJECT / "s") if "train/lr" in r}
    assert logged == {step: lr for step, _, lr, _ in lrs if step % 4 == 0}


def time_run(tmp_path, data_dir, name, *extra):
    from training.loop import train

    return train(tiny_config(tmp_path, *SCHEDULE, "optim.lr_schedule_clock=time", "train.max_train_seconds=10",
                             "train.max_steps=100000", "train.eval_interval=100000", "train.log_every=3",
                             "train.keep_checkpoints=5", f"logging.run_name={name}", *extra, data=data_dir))


@pytest.mark.slow
def test_time_clock_follows_the_agreed_clock_to_the_floor(tmp_path, data_dir, lrs, capsys):
    """10 s of budget at DT per step: 20 steps, the budget (not max_steps) ends the run. Each
    step's LR is lr_at_time of the clock read at the last log step (every 3 steps), so it holds
    for a log window and falls window by window to within one window's decay of the floor."""
    result = time_run(tmp_path, data_dir, "t", "logging.progress_every=6")
    assert result["step"] == 20 and result["train_seconds"] == 10.0 and not result["preempted"]
    for step, agreed, lr, emb_lr in lrs:
        assert agreed == DT * 3 * ((step - 1) // 3), (step, agreed)  # steps 1-3: 0; 4-6: 1.5 s; ...
        assert lr == lr_at_time(step, agreed, LR, WARMUP, 10.0, FLOOR), step
        assert emb_lr == lr_at_time(step, agreed, EMB_LR, WARMUP, 10.0, FLOOR), step
    after_warmup = [lr for step, _, lr, _ in lrs if step >= WARMUP]
    assert after_warmup == sorted(after_warmup, reverse=True) and after_warmup[0] < LR  # 1.5 s of 10 spent at step 4
    # The last window (steps 19-20) runs at the clock of step 18, 9 s of 10: within its decay of the floor.
    window_decay = LR * (1 - FLOOR) * 0.5 * (1 + math.cos(math.pi * 9 / 10))
    assert LR * FLOOR < lrs[-1][2] <= LR * FLOOR + window_decay + 1e-18
    assert lrs[-1][2] < LR * (FLOOR + 0.03)
    logged = {r["step"]: r["train/lr"] for r in read_metrics(tmp_path / "runs" / PROJECT / "t") if "train/lr" in r}
    assert logged == {step: lr for step, _, lr, _ in lrs if step % 3 == 0 or step == 20}
    out = capsys.readouterr().out
    assert "LR schedule: warm-up over 4 steps, then a cosine to 0.1 x the LR over train.max_train_seconds=10" in out
    # progress lines: the budget spent (the training seconds before the step), not a share of max_steps
    progress = [line.split(":")[0] for line in out.splitlines() if line.startswith("step ") and "ETA" in line]
    assert progress == [f"step {s} ({100 * (s - 1) * DT / 10:.1f}% of train.max_train_seconds=10)" for s in (6, 12, 18)]


@pytest.mark.slow
def test_time_clock_resumes_bit_for_bit(tmp_path, data_dir, lrs, monkeypatch):
    """Stopped after step 7, which is no log step: the checkpoint holds the clock agreed at step 6,
    not its own training seconds, so the resumed run's steps 8-9 take the LR the uninterrupted
    run took, and everything after it is the same, weights included."""
    from test_resilience import assert_same_tensors, final_state

    straight = time_run(tmp_path, data_dir, "straight")
    straight_lrs = list(lrs)
    lrs.clear()
    with sigterm_after_step(monkeypatch, 7):
        first = time_run(tmp_path, data_dir, "split")
    assert first["preempted"] and first["step"] == 7 and first["train_seconds"] == 7 * DT
    second = time_run(tmp_path, data_dir, "split", "train.resume=true")
    assert second["step"] == 20 and not second["preempted"]
    assert lrs[7] == (8, 6 * DT, *straight_lrs[7][2:])  # the first resumed step: the clock of step 6
    assert lrs == straight_lrs
    runs = tmp_path / "runs" / PROJECT

    def losses(run_dir):
        return {r["step"]: r["train/lm_loss"] for r in read_metrics(run_dir) if "train/lm_loss" in r}

    # The stop logged its own window (step 7), so the split run's window at step 9 holds steps 8-9 only.
    split, whole = losses(runs / "split"), losses(runs / "straight")
    split.pop(7), split.pop(9), whole.pop(9)
    assert split == whole and len(split) == 6
    assert_same_tensors(final_state(runs / "split"), final_state(runs / "straight"))
    assert second["eval/lsa/optimal_cost_rate"] == straight["eval/lsa/optimal_cost_rate"]


@pytest.mark.slow
def test_a_resume_after_the_budget_trains_no_step(tmp_path, data_dir, lrs):
    """A run the budget ended (20 steps of DT in 10 s) has nothing left to train: resuming it with
    the same budget is one line naming the field, before any step (it used to train one step
    more and evaluate and checkpoint again); with its last evaluation cut short by a stop, the
    resume redoes that evaluation and trains no step; a raised budget trains on."""
    from training.engine.checkpoint import load_meta

    assert time_run(tmp_path, data_dir, "done")["step"] == 20 and len(lrs) == 20
    with pytest.raises(ConfigError, match=r"train.max_train_seconds=10 is not above the training seconds of the "
                                          r"checkpoint it resumes from \(.*step_0000020, 10.000 s at step 20\)"):
        time_run(tmp_path, data_dir, "done", "train.resume=true")
    assert len(lrs) == 20
    ckpt = tmp_path / "runs" / PROJECT / "done" / "checkpoints" / "step_0000020"
    meta = json.loads((ckpt / "meta.json").read_text())
    (ckpt / "meta.json").write_text(json.dumps({**meta, "eval_pending": True}))
    assert load_meta(ckpt)["eval_pending"] is True
    redone = time_run(tmp_path, data_dir, "done", "train.resume=true")
    assert redone["step"] == 20 and len(lrs) == 20 and "eval/lsa/optimal_cost_rate" in redone
    assert time_run(tmp_path, data_dir, "done", "train.resume=true", "train.max_train_seconds=12")["step"] == 24
    assert [step for step, *_ in lrs[20:]] == [21, 22, 23, 24]


# ---------------------------------------------------------------------------------------------
# torchrun: both ranks take the same LR at every step

RECORDER = """
import json, os, runpy, sys
import training.loop as loop

original = loop.train_step
out = open(os.path.join({out!r}, "lr_rank" + os.environ["RANK"] + ".jsonl"), "w")

def recording(state):
    result = original(state)
    out.write(json.dumps([state.step, state.agreed_seconds, state.adam.param_groups[0]["lr"],
                          state.sign.param_groups[0]["lr"]]) + "\\n")
    out.flush()
    return result

loop.train_step = recording
sys.argv = [{pretrain!r}, *sys.argv[1:]]
runpy.run_path({pretrain!r}, run_name="__main__")
"""


@pytest.mark.slow
def test_two_ranks_take_the_same_lr_at_every_step(tmp_path):
    """torchrun, 2 ranks (gloo), the real clock: each rank measures its own training time, and
    both take the LR of the clock they agreed at the last log step, so the LRs are equal at every
    step (the ranks' own clocks differ in their last digits). Holds at any speed."""
    from test_distributed import COMMON, env

    data = build_lsa(tmp_path / "lsa4", num_train=100, num_test=21, num_aug=3)
    recorder = tmp_path / "record_lr.py"
    recorder.write_text(RECORDER.format(out=str(tmp_path), pretrain=str(REPO / "pretrain.py")))
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node=2", str(recorder),
               "--config-name", "cfg_lsa_cpu", f"data.path={data}", f"logging.runs_dir={tmp_path / 'runs'}", *COMMON,
               *SCHEDULE, "optim.lr_warmup_steps=2", "optim.lr_schedule_clock=time", "train.max_train_seconds=120",
               "train.max_steps=24", "train.log_every=4", "train.eval_interval=100000", "logging.run_name=r2"]
    run = subprocess.run(command, cwd=REPO, env=env(), capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]
    ranks = [[json.loads(line) for line in (tmp_path / f"lr_rank{r}.jsonl").read_text().splitlines()] for r in (0, 1)]
    assert ranks[0] == ranks[1]
    steps = [step for step, *_ in ranks[0]]
    assert steps == list(range(1, len(steps) + 1)) and len(steps) >= 5
    for step, agreed, lr, emb_lr in ranks[0]:
        assert lr == lr_at_time(step, agreed, LR, 2, 120.0, FLOOR) and emb_lr == lr_at_time(step, agreed, EMB_LR, 2, 120.0, FLOOR)
        assert (agreed > 0) == (step > 4)  # the clock agreed at step 4 is the first the LR uses
    agreed = [a for _, a, *_ in ranks[0]]
    assert agreed == sorted(agreed) and len(set(agreed)) >= 2
    assert all(lr < LR for step, _, lr, _ in ranks[0] if step > 4)  # the clock really decays it
    logged = {r["step"]: r["train/lr"] for r in read_metrics(tmp_path / "runs" / PROJECT / "r2") if "train/lr" in r}
    assert logged and all(logged[step] == lr for step, _, lr, _ in ranks[0] if step in logged)


@pytest.mark.slow
def test_a_checkpoint_without_the_agreed_clock_resumes_from_its_training_seconds(tmp_path, data_dir, lrs, monkeypatch):
    """A checkpoint written before the agreed clock was saved continues from its training seconds;
    a bad saved value is refused naming the file and field."""
    import torch

    from training.engine.checkpoint import CheckpointError, resolve_checkpoint

    with sigterm_after_step(monkeypatch, 7):
        time_run(tmp_path, data_dir, "old")
    state_file = resolve_checkpoint(tmp_path / "runs" / PROJECT / "old") / "state.pt"
    saved = torch.load(state_file, weights_only=True)
    assert saved["agreed_seconds"] == 6 * DT and saved["train_seconds"] == 7 * DT
    saved["agreed_seconds"] = float("nan")
    torch.save(saved, state_file)
    with pytest.raises(CheckpointError) as info:
        time_run(tmp_path, data_dir, "old", "train.resume=true")
    assert "state.pt" in str(info.value) and "agreed_seconds" in str(info.value) and "\n" not in str(info.value)
    del saved["agreed_seconds"]
    torch.save(saved, state_file)
    lrs.clear()
    assert time_run(tmp_path, data_dir, "old", "train.resume=true")["step"] == 20
    assert lrs[0][:2] == (8, 7 * DT)
