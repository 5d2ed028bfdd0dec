"""Runs that survive: exact resume, pre-emption signals, kill -9 during a save, numeric
guards, refusal of pickled code, best checkpoints, starting from another run's weights."""

import json
import os
import signal
import subprocess
import sys
import time

import pytest
import torch

from conftest import REPO, TINY_CLI, build_lsa, run_in_process, sigterm_after_step, tiny_config
from models.losses import ACTLossHead
from training.engine.checkpoint import CheckpointError, load_file, resolve_checkpoint, save_checkpoint
from training.loop import TrainingDiverged, train

pytestmark = pytest.mark.slow  # not in the fast subset (pytest -m "not slow")

PROJECT = "trm-lsa-cpu"


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    return build_lsa(tmp_path_factory.mktemp("data") / "lsa4", num_train=300, num_test=100, num_aug=4)


def metrics(run_dir):
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def losses(run_dir):
    return {r["step"]: r["train/lm_loss"] for r in metrics(run_dir) if "train/lm_loss" in r}


def final_state(run_dir):
    ckpt = resolve_checkpoint(run_dir)
    return {name: load_file(ckpt / f"{name}.pt") for name in ("model", "ema", "optim")}


def assert_same_tensors(a, b, where=""):
    if isinstance(a, torch.Tensor):
        assert torch.equal(a, b), where
    elif isinstance(a, dict):
        assert a.keys() == b.keys(), where
        for k in a:
            assert_same_tensors(a[k], b[k], f"{where}.{k}")
    elif isinstance(a, (list, tuple)):
        for i, (x, y) in enumerate(zip(a, b)):
            assert_same_tensors(x, y, f"{where}[{i}]")
    else:
        assert a == b, where


# ---------------------------------------------------------------------------------------------
# Exact resume


def test_stop_and_resume_is_bit_exact_on_cpu(tmp_path, data_dir, monkeypatch):
    common = ["train.max_steps=40", "train.eval_interval=20", "train.log_every=1", "train.keep_checkpoints=5"]
    straight = train(tiny_config(tmp_path, *common, "logging.run_name=straight", data=data_dir))

    # The same run, stopped by a SIGTERM right after step 13 (mid-window, off the eval grid) ...
    with sigterm_after_step(monkeypatch, 13):
        first = train(tiny_config(tmp_path, *common, "logging.run_name=split", data=data_dir))
    assert first["preempted"] and first["step"] == 13
    # ... and resumed from its checkpoint.
    second = train(tiny_config(tmp_path, *common, "logging.run_name=split", "train.resume=true", data=data_dir))
    assert second["step"] == 40 and not second["preempted"]

    runs = tmp_path / "runs" / PROJECT
    assert losses(runs / "split") == losses(runs / "straight")  # every step's loss, exactly
    assert_same_tensors(final_state(runs / "split"), final_state(runs / "straight"))
    assert second["eval/lsa/optimal_cost_rate"] == straight["eval/lsa/optimal_cost_rate"]


def test_resume_refuses_a_different_model_and_names_the_field(tmp_path, data_dir):
    train(tiny_config(tmp_path, "train.max_steps=4", "train.eval_interval=4", "logging.run_name=r", data=data_dir))
    from training.config import ConfigError

    with pytest.raises(ConfigError, match="arch.hidden_size"):
        train(tiny_config(tmp_path, "train.max_steps=8", "train.resume=true", "logging.run_name=r",
                          "arch.hidden_size=16", data=data_dir))
    with pytest.raises(ConfigError, match="logging.run_name"):
        train(tiny_config(tmp_path, "train.max_steps=8", "train.resume=true", data=data_dir))
    # Extending the run is a permitted change.
    more = train(tiny_config(tmp_path, "train.max_steps=8", "train.resume=true", "logging.run_name=r", data=data_dir))
    assert more["step"] == 8


# ---------------------------------------------------------------------------------------------
# Signals


def _start(tmp_path, data_dir, *extra):
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH")) if p),
           "WANDB_MODE": "disabled", "PYTHONUNBUFFERED": "1"}
    args = [sys.executable, "pretrain.py", "--config-name", "cfg_lsa_cpu", f"data.path={data_dir}",
            f"logging.runs_dir={tmp_path / 'runs'}", "logging.run_name=sig", "logging.progress=false",
            "train.max_steps=100000", "train.log_every=5", "train.eval_interval=100000", *TINY_CLI, *extra]
    return subprocess.Popen(args, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _wait_for_training(tmp_path, proc, timeout=120, name="sig"):
    log = tmp_path / "runs" / PROJECT / name / "metrics.jsonl"
    deadline = time.time() + timeout
    while time.time() < deadline:
        if log.is_file() and "train/lm_loss" in log.read_text():
            return
        assert proc.poll() is None, proc.communicate()
        time.sleep(0.2)
    raise AssertionError("training did not start")


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT, signal.SIGHUP])  # SIGHUP: a closed terminal
def test_signal_checkpoints_and_exits_zero_then_resumes(tmp_path, data_dir, sig):
    proc = _start(tmp_path, data_dir)
    _wait_for_training(tmp_path, proc)
    sent = time.time()
    proc.send_signal(sig)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    assert time.time() - sent < 60
    run_dir = tmp_path / "runs" / PROJECT / "sig"
    ckpt = resolve_checkpoint(run_dir)
    meta = json.loads((ckpt / "meta.json").read_text())
    assert meta["preempted"] and meta["step"] > 0
    assert json.loads(out.strip().splitlines()[-1])["preempted"] is True
    # Resume it (in this process: the signal above went to the real command line) and let it
    # finish a few steps later.
    done = run_in_process("pretrain.py", "--config-name", "cfg_lsa_cpu", f"data.path={data_dir}",
                          f"logging.runs_dir={tmp_path / 'runs'}", "logging.run_name=sig", *TINY_CLI,
                          "train.resume=true", f"train.max_steps={meta['step'] + 5}", "train.eval_interval=100000")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout.strip().splitlines()[-1])["step"] == meta["step"] + 5
    # The checkpoint pre-emption wrote is an ordinary one for evaluate.py.
    ev = run_in_process("scripts/evaluate.py", "--checkpoint", str(ckpt), "--no-progress")
    assert ev.returncode == 0 and "eval/lsa/optimal_cost_rate" in json.loads(ev.stdout.strip().splitlines()[-1])


def test_a_signal_stops_a_sweep_not_only_its_job(tmp_path, data_dir):
    """Under -m the first SIGTERM checkpoints the running job and ends the sweep (exit 0): the
    next job must not start (a pre-empted sweep would otherwise train on until the SIGKILL)."""
    proc = _start(tmp_path, data_dir, "-m", "train.seed=0,1")
    _wait_for_training(tmp_path, proc, name="sig-0")
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    assert "sweep stopped at job 0 by a signal" in out and "job 1:" not in out
    assert "continue this job with: python pretrain.py --config-name cfg_lsa_cpu" in out
    assert "train.seed=0 logging.run_name=sig-0 train.resume=true" in out.splitlines()[-2]
    assert json.loads(out.strip().splitlines()[-1])["signal"] == signal.SIGTERM  # the JSON stays the last line
    runs = sorted(p.name for p in (tmp_path / "runs" / PROJECT).iterdir() if not p.name.startswith("."))
    assert runs == ["sig-0"], runs
    assert json.loads((resolve_checkpoint(tmp_path / "runs" / PROJECT / "sig-0") / "meta.json").read_text())["preempted"]


def test_second_signal_exits_at_once(tmp_path, data_dir):
    proc = _start(tmp_path, data_dir)
    _wait_for_training(tmp_path, proc)
    proc.send_signal(signal.SIGINT)
    proc.send_signal(signal.SIGINT)
    proc.communicate(timeout=30)
    assert proc.returncode in (0, 128 + signal.SIGINT)  # 0 only if the first save finished in between
    latest = tmp_path / "runs" / PROJECT / "sig" / "checkpoints" / "latest"
    if latest.exists():  # whatever exists must be whole
        ckpt = resolve_checkpoint(latest.parent.parent)
        for name in ("model", "ema", "optim", "state"):
            load_file(ckpt / f"{name}.pt")


# ---------------------------------------------------------------------------------------------
# kill -9 in the middle of saves

# The saver reports every point of a save on stdout ("<save> <point>") and, at the point the test
# names, stops and waits to be killed: the kill lands exactly there, whatever the machine's speed.
# One process imports torch once and forks a saver per kill point (a new interpreter for each
# would spend most of the test importing torch); it says "pid <n>" before each saver's lines and
# "reaped <n> <status>" once that saver is gone.
SAVER = """
import os, sys, threading, torch
sys.path.insert(0, {repo!r})
import training.engine.checkpoint as checkpoint
root, kill_save, kill_points = sys.argv[1], int(sys.argv[2]), sys.argv[3:]
save = 0

def point(name):
    print(save, name, flush=True)
    if save == kill_save and name == kill_point:
        threading.Event().wait()  # here until SIGKILL

write_file, replace, set_pointer, prune = checkpoint._write_file, checkpoint.os.replace, checkpoint._set_pointer, checkpoint._prune
replace_file = checkpoint.replace_file
checkpoint._write_file = lambda path, fn: (point("write " + os.path.basename(path)), write_file(path, fn))[1]
checkpoint.replace_file = lambda path, content: (point("replace " + os.path.basename(path)), replace_file(path, content))[1]
checkpoint._set_pointer = lambda root, name, target: (point("pointer " + name), set_pointer(root, name, target))[1]
checkpoint._prune = lambda root, keep: (point("prune"), prune(root, keep))[1]
for n, kill_point in enumerate(kill_points):
    sys.stdout.flush()
    pid = os.fork()
    if pid == 0:
        run_dir = os.path.join(root, f"run{{n}}")
        big = {{"w": torch.randn(1_000_000)}}
        while save < kill_save:  # bounded: a kill point never reached ends the saver (the test fails, not hangs)
            save += 1
            big["w"] += 1
            payload = {{"model": big, "ema": big, "optim": {{}}, "state": {{"step": save}}}}
            checkpoint.save_checkpoint(run_dir, save, payload, {{"step": save}}, {{}}, keep=2)
            point("saved")
        sys.stdout.flush()
        os._exit(0)
    print("pid", pid, flush=True)
    print("reaped", pid, os.waitpid(pid, 0)[1], flush=True)
"""
KILL_POINTS = ["write model.pt", "write ema.pt", "write optim.pt", "write state.pt", "write config.json",
               "write meta.json", "pointer latest", "prune", "replace latest"]


def test_kill_9_during_saves_never_breaks_latest(tmp_path):
    """Kill the saver at points spread over its third save (two complete saves before it); after
    every kill `latest` names a complete checkpoint of save 2 or 3, and the next save removes
    what the killed one left."""
    script = tmp_path / "saver.py"
    script.write_text(SAVER.format(repo=str(REPO)))
    proc = subprocess.Popen([sys.executable, str(script), str(tmp_path), "3", *KILL_POINTS], stdout=subprocess.PIPE,
                            text=True)
    try:
        for n, kill_point in enumerate(KILL_POINTS):
            run_dir = tmp_path / f"run{n}"
            pid, seen = None, []
            for line in proc.stdout:  # wait for the event, not for time
                seen.append(line.strip())
                if seen[-1].startswith("pid "):
                    pid = int(seen[-1].split()[1])
                if seen[-1] == f"3 {kill_point}" or seen[-1].startswith("reaped "):
                    break
            assert pid and "2 saved" in seen and seen[-1] == f"3 {kill_point}", seen  # the kill lands inside save 3
            os.kill(pid, signal.SIGKILL)
            reaped = proc.stdout.readline().split()
            assert reaped == ["reaped", str(pid), str(int(signal.SIGKILL))], reaped  # gone, killed, before any check
            ckpt = resolve_checkpoint(run_dir)
            step = load_file(ckpt / "state.pt")["step"]
            # Until `latest` is replaced (after the checkpoint's rename) it names save 2; then save 3.
            assert step == (3 if kill_point == "prune" else 2), (kill_point, step)
            assert json.loads((ckpt / "meta.json").read_text())["step"] == step
            assert torch.equal(load_file(ckpt / "model.pt")["w"], load_file(ckpt / "ema.pt")["w"])
        assert proc.wait(timeout=60) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    # A later save cleans up after a killed one.
    save_checkpoint(tmp_path / "run0", 4, {"model": {"w": torch.ones(1)}, "state": {"step": 4}}, {}, {}, keep=2)
    assert not [p for p in (tmp_path / "run0" / "checkpoints").iterdir() if p.name.startswith(".tmp")]


def test_failed_save_keeps_previous_checkpoint(tmp_path, monkeypatch):
    payload = {"model": {"w": torch.ones(3)}, "state": {"step": 1}}
    first = save_checkpoint(tmp_path, 1, payload, {}, {}, keep=2)

    def disk_full(obj, f, *args, **kwargs):
        f.write(b"partial")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(torch, "save", disk_full)
    with pytest.raises(CheckpointError, match="No space left on device"):
        save_checkpoint(tmp_path, 2, payload, {}, {}, keep=2)
    assert resolve_checkpoint(tmp_path) == first
    assert not [p for p in (tmp_path / "checkpoints").iterdir() if p.name.startswith(".tmp")]


# ---------------------------------------------------------------------------------------------
# Numeric guards


def _inject(monkeypatch, bad_calls):
    """Make the training ACT step's loss NaN on the given call numbers (1-based)."""
    original = ACTLossHead.forward
    calls = {"n": 0}

    def forward(self, carry, batch):
        new_carry, loss, metrics, outputs = original(self, carry, batch)
        if self.training:
            calls["n"] += 1
            if calls["n"] in bad_calls:
                loss = loss * float("nan")
        return new_carry, loss, metrics, outputs

    monkeypatch.setattr(ACTLossHead, "forward", forward)


def test_non_finite_steps_are_skipped_and_counted(tmp_path, data_dir, monkeypatch):
    _inject(monkeypatch, {5, 6, 7})
    result = train(tiny_config(tmp_path, "train.max_steps=20", "train.eval_interval=20", "train.log_every=4",
                               "logging.run_name=skip", data=data_dir))
    assert result["skipped_steps"] == 3 and result["rollbacks"] == 0 and result["step"] == 20
    records = metrics(tmp_path / "runs" / PROJECT / "skip")
    assert sum(r.get("train/skipped_steps", 0) for r in records) == 3
    assert all(torch.isfinite(t).all() for t in final_state(tmp_path / "runs" / PROJECT / "skip")["model"].values())


def test_skipped_step_leaves_weights_unchanged(tmp_path, data_dir, monkeypatch):
    from training.loop import train_step
    from training.engine.setup import build_train_state

    _inject(monkeypatch, {3})
    state = build_train_state(tiny_config(tmp_path, "train.max_steps=10", data=data_dir), progress=False)
    train_step(state)
    train_step(state)
    before = {k: v.clone() for k, v in state.model.state_dict().items()}
    ema_before = [s.clone() for s in state.ema.shadow]
    out = train_step(state)  # call 3: NaN loss
    assert out[-1] == 1.0 and int(state.bad_in_a_row) == 1
    assert all(torch.equal(v, before[k]) for k, v in state.model.state_dict().items())
    assert all(torch.equal(a, b) for a, b in zip(state.ema.shadow, ema_before))
    assert bool(state.carry["halted"].all())  # every example restarts after a bad step
    train_step(state)
    assert int(state.bad_in_a_row) == 0


def test_non_finite_gradient_is_skipped(tmp_path, data_dir, monkeypatch):
    from training.loop import train_step
    from training.engine.setup import build_train_state

    state = build_train_state(tiny_config(tmp_path, "train.max_steps=10", data=data_dir), progress=False)
    train_step(state)
    hook = state.model.lm_head.weight.register_hook(lambda g: g * float("nan"))
    before = state.model.lm_head.weight.detach().clone()
    out = train_step(state)
    hook.remove()
    assert out[-1] == 1.0 and torch.equal(state.model.lm_head.weight.detach(), before)


def test_rollback_to_last_checkpoint_with_lower_lr(tmp_path, data_dir, monkeypatch):
    _inject(monkeypatch, set(range(25, 35)))  # 10 bad calls; 5 in a row trigger a rollback
    result = train(tiny_config(tmp_path, "train.max_steps=40", "train.eval_interval=20", "train.log_every=1",
                               "train.max_bad_steps=5", "logging.run_name=rb", data=data_dir))
    assert result["rollbacks"] == 2 and result["step"] == 40
    records = metrics(tmp_path / "runs" / PROJECT / "rb")
    scales = [r["train/lr_scale"] for r in records if "train/lr_scale" in r]
    assert scales == [0.5, 0.25]
    last_lr = [r["train/lr"] for r in records if "train/lr" in r][-1]
    assert last_lr < 0.3 * 3e-3


def test_gives_up_with_a_clear_error(tmp_path, data_dir, monkeypatch):
    _inject(monkeypatch, set(range(1, 1000)))
    with pytest.raises(TrainingDiverged, match="no checkpoint to roll back to"):
        train(tiny_config(tmp_path, "train.max_steps=40", "train.eval_interval=100", "train.log_every=1",
                          "train.max_bad_steps=3", "logging.run_name=gu", data=data_dir))
    monkeypatch.undo()
    _inject(monkeypatch, set(range(12, 1000)))
    with pytest.raises(TrainingDiverged, match="rollbacks"):
        train(tiny_config(tmp_path, "train.max_steps=60", "train.eval_interval=10", "train.log_every=1",
                          "train.max_bad_steps=3", "train.max_rollbacks=1", "logging.run_name=gu2", data=data_dir))


# ---------------------------------------------------------------------------------------------
# Security


class Exploit:
    def __reduce__(self):
        return (os.system, (f"touch {os.environ.get('EXPLOIT_MARKER', '/tmp/exploit-marker')}",))


def test_checkpoint_with_pickled_code_is_refused(tmp_path, monkeypatch):
    marker = tmp_path / "pwned"
    monkeypatch.setenv("EXPLOIT_MARKER", str(marker))
    path = tmp_path / "model.pt"
    torch.save({"w": torch.ones(2), "payload": Exploit()}, path)
    with pytest.raises(CheckpointError, match="refused"):
        load_file(path)
    assert not marker.exists()


# ---------------------------------------------------------------------------------------------
# Best checkpoint and starting from another run's weights


def test_best_checkpoint_survives_pruning_and_seeds_a_new_run(tmp_path, data_dir):
    # The rate only rises over these steps; with best_mode=min the best checkpoint is the first
    # evaluation's, so keep_checkpoints=1 must keep it beside the latest while pruning the middle one.
    src = train(tiny_config(tmp_path, "train.max_steps=60", "train.eval_interval=20", "train.keep_checkpoints=1",
                            "train.best_metric=eval/lsa/projected_optimal_cost_rate", "train.best_mode=min",
                            "logging.run_name=best", data=data_dir))
    ckpts = tmp_path / "runs" / PROJECT / "best" / "checkpoints"
    best_dir = resolve_checkpoint(ckpts / "best")
    evals = [r for r in metrics(ckpts.parent) if "eval/lsa/projected_optimal_cost_rate" in r]
    best_value = min(r["eval/lsa/projected_optimal_cost_rate"] for r in evals)
    assert json.loads((best_dir / "meta.json").read_text())["metrics"]["eval/lsa/projected_optimal_cost_rate"] == best_value
    kept = sorted(p.name for p in ckpts.iterdir() if p.is_dir())
    assert kept == sorted({best_dir.name, "step_0000060"}) and len(kept) == 2  # the best is not the latest

    # A new run from the best weights: its first evaluation equals the source's at that checkpoint.
    new = train(tiny_config(tmp_path, "train.max_steps=1", "train.eval_at_start=true", "logging.run_name=child",
                            f"train.load_checkpoint={ckpts / 'best'}", "optim.lr=1e-12", "optim.puzzle_emb_lr=1e-12",
                            data=data_dir))
    first_eval = [r for r in metrics(tmp_path / "runs" / PROJECT / "child") if "eval/accuracy" in r][0]
    assert first_eval["eval/lsa/projected_optimal_cost_rate"] == best_value
    assert new["step"] == 1 and src["step"] == 60
    ev = run_in_process("scripts/evaluate.py", "--checkpoint", str(ckpts / "best"), "--no-progress")
    assert ev.returncode == 0, ev.stderr
    assert json.loads(ev.stdout.strip().splitlines()[-1])["eval/lsa/projected_optimal_cost_rate"] == best_value


# ---------------------------------------------------------------------------------------------
# Reproducibility


def test_same_seed_same_loss_curve(tmp_path, data_dir):
    a = train(tiny_config(tmp_path, "train.max_steps=15", "train.log_every=1", "logging.run_name=a", data=data_dir))
    b = train(tiny_config(tmp_path, "train.max_steps=15", "train.log_every=1", "logging.run_name=b", data=data_dir))
    runs = tmp_path / "runs" / PROJECT
    assert losses(runs / "a") == losses(runs / "b") and a["eval/accuracy"] == b["eval/accuracy"]
