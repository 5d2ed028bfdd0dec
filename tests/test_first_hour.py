"""Issue 23, the first hour: one resolver for run arguments in every tool, --check running the
run's own checks, progress lines and the pace warning, honest builder ETAs, a checkpoint
cadence of its own, a resume of a run still in use, the gather without a deprecation warning."""

import io
import json
import shutil
import warnings
from pathlib import Path

import pytest
import yaml

from conftest import (
    CPU_PROJECT, REPO, assert_one_line_error, build_lsa, pretrain_argv, run_in_process, sigterm_after_step, tiny_config,
)
from training.engine.checkpoint import list_checkpoints, resolve_checkpoint


def named_copy(source: Path, runs: Path, name: str, wandb_id: str | None = None) -> Path:
    """A copy of a finished run under another name (and wandb id), as list_runs would show it."""
    target = runs / source.parent.name / name
    shutil.copytree(source, target)
    run_file = json.loads((target / "run.json").read_text())
    (target / "run.json").write_text(json.dumps({**run_file, "name": name, "wandb_id": wandb_id}))
    return target


@pytest.fixture(scope="module")
def named_runs(runs_zoo, tmp_path_factory):
    runs = tmp_path_factory.mktemp("named") / "runs"
    return {"runs": runs, "gamma": named_copy(runs_zoo["alpha"], runs, "gamma", wandb_id="k3x9q2ab"),
            "gammb": named_copy(runs_zoo["alpha"], runs, "gammb")}


# ---------------------------------------------------------------------------------------------
# 2a: every tool takes a run by path, name or wandb id


def test_evaluate_takes_a_run_name_and_a_wandb_id(named_runs):
    from conftest import load_script

    evaluate = load_script("evaluate")
    latest = resolve_checkpoint(named_runs["gamma"])
    for key in ("gamma", "k3x9q2ab", str(named_runs["gamma"])):
        result = evaluate.evaluate_checkpoint(evaluate.EvaluateArgs(checkpoint=key, runs_dir=named_runs["runs"],
                                                                    progress=False))
        assert result["checkpoint"] == str(latest) and result["eval/examples"] == 20, key


def test_export_and_solve_take_a_run_name_or_wandb_id(named_runs, tmp_path):
    runs = str(named_runs["runs"])
    out = run_in_process("scripts/export.py", "--checkpoint", "k3x9q2ab", "--runs-dir", runs, "--out", str(tmp_path / "e"))
    assert out.returncode == 0, out.stderr
    source = json.loads(out.stdout.strip().splitlines()[-1])["source"]
    assert source["run"] == "gamma" and source["checkpoint"] == str(resolve_checkpoint(named_runs["gamma"]))
    costs = tmp_path / "costs.csv"
    costs.write_text("1,2,3,4\n5,6,7,8\n9,1,2,3\n4,5,6,7\n")
    out = run_in_process("scripts/solve.py", "--checkpoint", "gamma", "--runs-dir", runs, "--input", str(costs))
    assert out.returncode == 0, out.stderr
    answer = json.loads(out.stdout.strip().splitlines()[-1])
    assert answer["task"] == "lsa" and answer["checkpoint"].startswith(str(named_runs["gamma"]))


def test_unknown_or_ambiguous_run_is_one_line_with_candidates(named_runs, tmp_path):
    runs = str(named_runs["runs"])
    out = run_in_process("scripts/export.py", "--checkpoint", "gamna", "--runs-dir", runs, "--out", str(tmp_path / "e"))
    assert_one_line_error(out, "gamna", "did you mean gamma", runs)
    out = run_in_process("scripts/solve.py", "--checkpoint", "gamm", "--runs-dir", runs, "--input", "-")
    assert_one_line_error(out, "gamm: the prefix matches 2 runs", "gamma", "gammb")
    out = run_in_process("scripts/evaluate.py", "--checkpoint", "zzz-nothing", "--runs-dir", runs)
    assert_one_line_error(out, "zzz-nothing", "no run directory, run name or wandb id")
    assert not (tmp_path / "e").exists()


@pytest.mark.slow
def test_load_checkpoint_takes_a_run_name(runs_zoo, tmp_path, capsys):
    from training.loop import train

    source = named_copy(runs_zoo["alpha"], tmp_path / "runs", "warmsrc", wandb_id="w4rm1d00")
    data = runs_zoo["alpha"].parents[2] / "lsa4"
    for key, name in (("warmsrc", "warm1"), ("w4rm1d00", "warm2")):
        train(tiny_config(tmp_path, f"train.load_checkpoint={key}", "train.max_steps=2", f"logging.run_name={name}",
                          data=data))
        assert f"initialised from {resolve_checkpoint(source)} (ema weights)" in capsys.readouterr().out


# ---------------------------------------------------------------------------------------------
# 2b: --check fails where the run fails, with the same line


@pytest.mark.parametrize("override", [
    "evaluators=[{name:sudoku}]",
    "train.global_batch_size=100000",
    "train.best_metric=eval/lsa/nope",
    "data.builder=null",  # with data.path naming no dataset below
    "train.checkpoint_every=-1",
])
def test_check_gives_the_runs_own_error(lsa_small, tmp_path, override):
    data = tmp_path / "missing" if override == "data.builder=null" else lsa_small
    argv = pretrain_argv(data, tmp_path / "runs", "train.max_steps=2", override)
    checked = run_in_process(argv[0], "--check", *argv[1:])
    ran = run_in_process(*argv)
    assert_one_line_error(checked, override.split("=")[0] if "builder" not in override else "data.path")
    assert checked.stderr.strip().splitlines()[-1] == ran.stderr.strip().splitlines()[-1]
    assert ran.returncode == 2
    assert not (tmp_path / "runs").exists() and not (tmp_path / "missing").exists()


def test_check_refuses_a_data_dir_the_build_would_refuse(tmp_path):
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "notes.txt").write_text("mine\n")
    argv = pretrain_argv(tmp_path / "data", tmp_path / "runs", "train.max_steps=2")
    assert_one_line_error(run_in_process(argv[0], "--check", *argv[1:]), f"data.path={tmp_path / 'data'}", "not empty")
    assert (tmp_path / "data" / "notes.txt").read_text() == "mine\n" and not (tmp_path / "runs").exists()


def test_check_reads_the_dataset_the_run_would_read(tmp_path):
    data = build_lsa(tmp_path / "data")
    (data / "train" / "all__inputs.npy").write_bytes(b"not numpy")
    argv = pretrain_argv(data, tmp_path / "runs", "train.max_steps=2")
    checked = run_in_process(argv[0], "--check", *argv[1:])
    assert_one_line_error(checked, "all__inputs.npy")
    assert checked.stderr == run_in_process(*argv).stderr and not (tmp_path / "runs").exists()


def test_check_passes_a_good_config_and_writes_nothing(lsa_small, tmp_path):
    argv = pretrain_argv(lsa_small, tmp_path / "runs", "train.max_steps=2", "train.best_metric=eval/lsa/optimal_cost_rate",
                         "logging.run_name=ok")
    out = run_in_process(argv[0], "--check", *argv[1:])
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == str(tmp_path / "runs" / CPU_PROJECT / "ok") and not (tmp_path / "runs").exists()


# ---------------------------------------------------------------------------------------------
# 4: progress lines, the pace warning, honest builder ETAs


def yaml_value(path: Path, dotted: str):
    value = yaml.safe_load(path.read_text())
    for part in dotted.split("."):
        value = value[part]
    return value


def test_new_fields_are_typed_with_defaults_in_the_base_config():
    from training.config import LoggingConfig, TrainConfig, base_config

    base = base_config()
    assert base["logging"]["progress_every"] == LoggingConfig().progress_every > 0
    fields = TrainConfig.model_fields
    for name in ("checkpoint_every", "checkpoint_every_minutes"):
        assert base["train"][name] == fields[name].default, name
    assert fields["checkpoint_every_minutes"].default > 0  # protects a run that sets nothing
    assert 0 < yaml_value(REPO / "config" / "cfg_sudoku.yaml", "train.checkpoint_every") < \
        yaml_value(REPO / "config" / "cfg_sudoku.yaml", "train.eval_interval")


@pytest.mark.slow
def test_progress_lines_land_in_the_log(lsa_small, tmp_path, capsys):
    from training.loop import train

    train(tiny_config(tmp_path, "train.max_steps=30", "train.eval_interval=30", "train.log_every=5",
                      "logging.progress_every=10", data=lsa_small))
    lines = [line for line in capsys.readouterr().out.splitlines() if line.startswith("step ") and "ETA" in line]
    assert [line.split(":")[0] for line in lines] == ["step 10/30 (33.3%)", "step 20/30 (66.7%)", "step 30/30 (100.0%)"]
    assert all("loss " in line and "steps/s" in line for line in lines)

    train(tiny_config(tmp_path, "train.max_steps=20", "train.log_every=5", "logging.progress_every=0",
                      "logging.run_name=quiet", "train.seed=7", data=lsa_small))
    out = capsys.readouterr().out
    assert "ETA" not in out
    # the run's opening line names its seed: a log alone says which seed made it
    assert [line for line in out.splitlines() if line.startswith("run quiet:") and ", seed 7; run dir " in line]


@pytest.mark.parametrize("config", ["cfg_lsa", "cfg_lsa_cpu"])
@pytest.mark.slow
def test_a_run_far_beyond_the_device_says_so_early(lsa_small, tmp_path, capsys, monkeypatch, config):
    from training.loop import train

    with sigterm_after_step(monkeypatch, 20):
        result = train(tiny_config(tmp_path, "train.max_steps=1000000000000", "train.log_every=5",
                                   "train.eval_interval=1000000", "train.device=cpu", data=lsa_small, name=config))
    assert result["preempted"] and result["step"] == 20
    warning = [line for line in capsys.readouterr().out.splitlines() if line.startswith("warning:")]
    assert len(warning) == 1 and "h of training" in warning[0] and "lower train.epochs or train.max_steps" in warning[0]
    assert ("CPU preset (add device=cpu" in warning[0]) == (config == "cfg_lsa")  # the preset, unless it is this run


def test_every_cpu_preset_is_known_as_one():
    """The pace warning's test for "already a CPU preset": every task config with device=cpu
    (arith_lengen's own preset included) lands in a preset project; the GPU configs do not."""
    from training.hydra_guard import compose_config
    from training.loop import cpu_preset_projects

    projects = cpu_preset_projects()
    for name in ("cfg_lsa", "cfg_sudoku", "cfg_arith", "cfg_arith_lengen", "cfg_maze"):
        assert compose_config(name, ["device=cpu"])["logging"]["project"] in projects, name
        assert compose_config(name, [])["logging"]["project"] not in projects, name


def test_builder_eta_waits_for_enough_items():
    from dataset.common import ETA_AFTER, ProgressBar

    bar = ProgressBar(total=1000, file=io.StringIO(), mininterval=0)
    bar.update(1)
    assert "ETA once" in str(bar) and "<" not in str(bar)
    bar.update(int(ETA_AFTER * 1000))
    assert "ETA once" not in str(bar) and "<" in str(bar) and bar.smoothing == 0
    bar.close()


# ---------------------------------------------------------------------------------------------
# 5: a checkpoint cadence of its own


@pytest.mark.slow
def test_checkpoint_every_saves_between_evaluations_and_a_crash_loses_less(lsa_small, tmp_path, monkeypatch):
    import training.loop as loop
    from training.loop import train

    original = loop.train_step

    def crash_at_16(state):
        if state.step == 15:
            raise RuntimeError("simulated crash")  # like a kill -9: no stop handler, no final save
        return original(state)

    monkeypatch.setattr(loop, "train_step", crash_at_16)
    cfg = ("train.max_steps=40", "train.eval_interval=20", "train.checkpoint_every=7", "train.keep_checkpoints=1",
           "logging.run_name=cad")
    with pytest.raises(RuntimeError, match="simulated crash"):
        train(tiny_config(tmp_path, *cfg, data=lsa_small))
    run_dir = tmp_path / "runs" / CPU_PROJECT / "cad"
    assert resolve_checkpoint(run_dir).name == "step_0000014"  # not nothing: the evaluation at 20 was never reached
    monkeypatch.setattr(loop, "train_step", original)
    result = train(tiny_config(tmp_path, *cfg, "train.resume=true", "train.best_metric=eval/lm_loss",
                               "train.best_mode=min", data=lsa_small))
    assert result["step"] == 40
    kept = {p.name for p in list_checkpoints(run_dir)}
    best = (run_dir / "checkpoints" / "best").read_text().strip()
    assert resolve_checkpoint(run_dir).name == "step_0000040" and best in kept
    assert kept <= {"step_0000035", "step_0000040", best}  # keep-last-1, plus what latest and best name


def test_timed_saves_are_decided_by_the_manager(tmp_path):
    from types import SimpleNamespace

    from training.engine.checkpoint import CheckpointManager

    cfg = SimpleNamespace(checkpoint_every=0, checkpoint_every_minutes=5.0, save_checkpoints=True, eval_interval=100)
    manager = CheckpointManager(tmp_path, cfg, {}, {})
    assert not manager.minutes_passed() and not manager.save_due(7)
    manager.last_save -= 5 * 60  # as if five minutes had passed since the last save
    assert manager.minutes_passed() and manager.save_due(7, manager.minutes_passed())
    cfg.checkpoint_every_minutes = 0
    assert not manager.minutes_passed()
    cfg.checkpoint_every = 7
    assert manager.save_due(14) and not manager.save_due(15)
    cfg.save_checkpoints = False
    assert not manager.save_due(14, True)


# ---------------------------------------------------------------------------------------------
# Small items


def test_resuming_a_run_still_in_use_says_so(lsa_small, tmp_path):
    from training.config import ConfigError
    from training.bookkeeping.run import RunLock, plan_run

    run_dir = tmp_path / "runs" / CPU_PROJECT / "busy"
    run_dir.mkdir(parents=True)
    cfg = tiny_config(tmp_path, "train.resume=true", "logging.run_name=busy", "train.max_steps=5", data=lsa_small)
    lock = RunLock(run_dir)  # another launch of the run, before its first save
    try:
        with pytest.raises(ConfigError, match="in use by another process"):
            plan_run(cfg)
    finally:
        lock.release()
    with pytest.raises(ConfigError, match="stopped before its first save"):
        plan_run(cfg)


def test_gather_uses_the_current_torch_api():
    import tempfile

    import torch
    import torch.distributed as dist

    from training.engine.distributed import World, gather_rows

    class OneRankGroup(World):
        distributed = property(lambda self: True)

    store = tempfile.NamedTemporaryFile(delete=False)
    store.close()
    dist.init_process_group("gloo", init_method=f"file://{store.name}", rank=0, world_size=1)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            rows = gather_rows(torch.arange(6.0).reshape(3, 2), OneRankGroup())
        assert rows.tolist() == [[0.0, 1.0], [2.0, 3.0], [4.0, 5.0]]
    finally:
        dist.destroy_process_group()
        Path(store.name).unlink(missing_ok=True)
