"""The ready device calls in docs/benchmarks/pending/ compose and validate: each script is run
under bash with a stand-in `python3` on PATH that records its arguments and does nothing else, so
the override strings checked here are the ones the script would really pass (they cannot drift
from a copy kept in the test); every pretrain.py and build_data.py command line then goes
through training.hydra_guard.compose_config + training.config.validate_config, and every
scripts/scaling.py one through scaling.py's own planning (each size composed and validated)."""

import json
import os
import re
import subprocess
import sys

import pytest

from conftest import REPO, load_script
from core.errors import InputError
from training.config import validate_config
from training.hydra_guard import compose_config

PENDING = REPO / "docs" / "benchmarks" / "pending"

RECORDER = f"""#!{sys.executable}
import json, os, sys
with open(os.environ["RECORDED"], "a") as f:
    f.write(json.dumps(sys.argv[1:]) + "\\n")
"""


def run_script(tmp_path, name, *args, found=""):
    """Run docs/benchmarks/pending/<name> with python3 (and nvidia-smi, find) replaced; returns
    the completed process and the python3 argument lists it recorded, in order. `found`: what the
    stand-in find prints (nothing: no real runs here); each of its calls adds a line to find.calls."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    (bin_dir / "python3").write_text(RECORDER)
    (bin_dir / "nvidia-smi").write_text("#!/bin/sh\necho 'name, driver_version'\n")
    (bin_dir / "find").write_text(f"#!/bin/sh\necho \"$*\" >> {tmp_path / 'find.calls'}\n"  # the scripts' `find /tmp/runs ...`
                                  + (f"echo {found}\n" if found else ""))
    for tool in bin_dir.iterdir():
        tool.chmod(0o755)
    recorded = tmp_path / "recorded.jsonl"
    recorded.unlink(missing_ok=True)
    (tmp_path / "tmp").mkdir(exist_ok=True)
    env = {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}", "RECORDED": str(recorded),
           "OUT": str(tmp_path / "out"), "TMPDIR": str(tmp_path / "tmp")}
    proc = subprocess.run(["bash", str(PENDING / name), *args], cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=120)
    calls = [json.loads(line) for line in recorded.read_text().splitlines()] if recorded.exists() else []
    return proc, calls


def entry_calls(calls, entry):
    """The recorded calls of one entry point (`pretrain.py`, `scripts/scaling.py`, ...)."""
    return [call[1:] for call in calls if call and call[0] == entry]


def same_dataset(build, run):
    """The build makes the dataset the run reads: same path, builder and arguments (workers only
    sets the build's parallelism, not its output)."""
    def args(cfg):
        return {k: v for k, v in cfg.data.build_args.items() if k != "workers"}
    return (build.data.path, build.data.builder, args(build)) == (run.data.path, run.data.builder, args(run))


def config_and_overrides(args):
    assert args[0] == "--config-name", args
    return args[1], args[2:]


def composed(args):
    """A pretrain.py / build_data.py command line's config, composed and validated."""
    name, overrides = config_and_overrides(args)
    return validate_config(compose_config(name, overrides))


def scaling_plans(args, tmp_path):
    """A scaling.py command line planned by scaling.py itself: every size composed and validated."""
    scaling = load_script("scaling")
    options, overrides, i = {}, [], 0
    while i < len(args):
        if args[i] in ("--config-name", "--sizes", "--gpus", "--runs-dir", "--out", "--prefix"):
            options[args[i]] = args[i + 1]
            i += 2
        else:
            assert not args[i].startswith("--"), f"an option this test does not know: {args[i]}"
            overrides.append(args[i])
            i += 1
    scaling.check_overrides(overrides)
    base, task, base_size = scaling.base_config(options["--config-name"], overrides)
    scaling.check_overrides(overrides, task.size_arg)
    return options, [scaling.Plan(options["--config-name"], overrides, base, task, base_size, size,
                                  options.get("--prefix", "scaling"), tmp_path / "runs")
                     for size in scaling.parse_sizes(options["--sizes"])]


@pytest.mark.parametrize("task", ["sudoku", "mul"])
@pytest.mark.parametrize("model", ["trm", "hrm", "transformer"])
def test_equal_budget_1gpu_commands_compose_and_validate(tmp_path, monkeypatch, task, model):
    monkeypatch.chdir(tmp_path)  # relative data paths: here, not the repository's data/
    proc, calls = run_script(tmp_path, "equal_budget_1gpu.sh", task, model)
    assert proc.returncode == 0, proc.stderr
    builds, runs = entry_calls(calls, "scripts/build_data.py"), entry_calls(calls, "pretrain.py")
    assert len(builds) == 1 and len(runs) == 1
    build, run = composed(builds[0]), composed(runs[0])
    assert same_dataset(build, run)
    assert run.arch.name == model and run.train.max_train_seconds == 400
    assert run.logging.run_name == f"{task}-{model}"
    if task == "sudoku" and model == "trm":
        assert run.train.depth_curriculum is not None  # the recipe's own, kept for the model it was cut for
    if task == "sudoku" and model != "trm":
        assert run.train.depth_curriculum is None and run.arch.pos_encodings == "rope"


def test_equal_budget_1gpu_passes_overrides_after_the_model_and_names_the_run_by_them(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    proc, calls = run_script(tmp_path, "equal_budget_1gpu.sh", "sudoku", "transformer", "arch.norm=pre")
    assert proc.returncode == 0, proc.stderr
    [run] = [composed(args) for args in entry_calls(calls, "pretrain.py")]
    assert run.arch.name == "transformer" and run.arch.norm == "pre" and run.arch.pos_encodings == "rope"
    assert run.logging.run_name == "sudoku-transformer-arch.norm_pre" and run.train.max_train_seconds == 400


def test_equal_budget_1gpu_builds_with_the_calls_data_overrides_and_refuses_logging_ones(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    extra = ["data.path=data/sudoku-val", "+data.build_args.val_size=100", "data.eval_split=val"]
    proc, calls = run_script(tmp_path, "equal_budget_1gpu.sh", "sudoku", "hrm", *extra)
    assert proc.returncode == 0, proc.stderr
    [build], [run] = entry_calls(calls, "scripts/build_data.py"), entry_calls(calls, "pretrain.py")
    build, run = composed(build), composed(run)
    assert same_dataset(build, run) and build.data.path.endswith("data/sudoku-val") and run.data.eval_split == "val"
    proc, calls = run_script(tmp_path, "equal_budget_1gpu.sh", "mul", "hrm", "logging.run_name=mine")
    assert proc.returncode == 2 and "logging.run_name=mine" in proc.stderr and calls == []


def test_equal_budget_1gpu_refuses_an_unknown_task_or_model(tmp_path):
    for args, culprit in ((["maze", "trm"], "unknown task 'maze'"), (["mul", "gpt"], "unknown model 'gpt'")):
        proc, calls = run_script(tmp_path, "equal_budget_1gpu.sh", *args)
        assert proc.returncode == 2 and culprit in proc.stderr and calls == []


@pytest.mark.parametrize("group, config, names", [
    ("sudoku", "cfg_sudoku_400s", ["sudoku400-trm", "sudoku400-hrm", "sudoku400-transformer"]),
    ("mul", "cfg_arith_mul", ["mul400-trm", "mul400-hrm", "mul400-transformer"]),
])
def test_equal_budget_x4_side_by_side_groups_compose_and_validate(tmp_path, monkeypatch, group, config, names):
    monkeypatch.chdir(tmp_path)
    proc, calls = run_script(tmp_path, "equal_budget_x4.sh", group)
    assert proc.returncode == 0, proc.stderr
    builds, runs = entry_calls(calls, "scripts/build_data.py"), entry_calls(calls, "pretrain.py")
    assert len(builds) == 1 and config_and_overrides(builds[0])[0] == config
    configs = sorted((composed(args) for args in runs), key=lambda cfg: names.index(cfg.logging.run_name))
    assert [cfg.logging.run_name for cfg in configs] == names
    for cfg in configs:
        assert cfg.arch.name == cfg.logging.run_name.rsplit("-", 1)[1] and cfg.train.max_train_seconds == 400
        assert same_dataset(composed(builds[0]), cfg)
        if group == "sudoku":
            assert (cfg.train.depth_curriculum is None) == (cfg.arch.name != "trm")


@pytest.mark.parametrize("group, config, sizes", [
    ("scaling", "cfg_lsa_400s", [4, 6, 9, 12]),
    ("mulscaling", "cfg_arith_mul", [3, 4, 5, 6]),
])
def test_equal_budget_x4_scaling_groups_plan_every_size(tmp_path, monkeypatch, group, config, sizes):
    monkeypatch.chdir(tmp_path)
    proc, calls = run_script(tmp_path, "equal_budget_x4.sh", group)
    assert proc.returncode == 0, proc.stderr
    sweeps = entry_calls(calls, "scripts/scaling.py")
    assert len(sweeps) == 1
    options, plans = scaling_plans(sweeps[0], tmp_path)
    assert options["--config-name"] == config and [plan.size for plan in plans] == sizes
    assert all(plan.cfg.train.max_train_seconds == 400 for plan in plans)


@pytest.mark.parametrize("config", ["cfg_lsa_400s", "cfg_sudoku_400s", "cfg_arith_mul"])
def test_curriculum_commands_compose_and_validate(tmp_path, monkeypatch, config):
    """curriculum.sh's call for each CONFIG builds the val split its run reads and runs the default
    schedule on it. Where the LR is on the clock, max_steps is only a cap and must stay out of the
    budget's reach: for cfg_sudoku_400s that is the shipped recipe's own cap (its val run did 6,467
    steps in 400 s), so the call is the shipped recipe evaluated on val."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("CONFIG", config)
    proc, calls = run_script(tmp_path, "curriculum.sh", "cur")
    assert proc.returncode == 0, proc.stderr
    builds, runs = entry_calls(calls, "scripts/build_data.py"), entry_calls(calls, "pretrain.py")
    assert len(builds) == 1 and len(runs) == 1
    build, run = composed(builds[0]), composed(runs[0])
    assert config_and_overrides(runs[0])[0] == config and same_dataset(build, run)
    assert run.data.eval_split == "val" and run.train.max_train_seconds == 400 and run.logging.run_name == "cur"
    assert [(p.until, p.H_cycles, p.L_cycles) for p in run.train.depth_curriculum.phases] == [(0.3, 1, 2), (0.6, 2, 4)]
    if run.optim.lr_schedule_clock == "time":
        assert run.train.max_steps >= 20000, "a cap the budget can reach ends the run before its 400 s"
    if config == "cfg_sudoku_400s":
        shipped = composed(["--config-name", config])
        assert (run.train.max_steps, run.optim.lr_schedule_clock, run.train.depth_curriculum) == (
            shipped.train.max_steps, shipped.optim.lr_schedule_clock, shipped.train.depth_curriculum)


def test_curriculum_refuses_an_unknown_config(tmp_path, monkeypatch):
    monkeypatch.setenv("CONFIG", "cfg_maze")
    proc, calls = run_script(tmp_path, "curriculum.sh")
    assert proc.returncode == 2 and "CONFIG=cfg_maze" in proc.stderr and calls == []


@pytest.mark.parametrize("config", ["cfg_lsa_400s", "cfg_sudoku_400s"])
def test_ship_runs_the_shipped_recipe_on_test(tmp_path, monkeypatch, config):
    """ship.sh CONFIG [overrides]: the build makes the dataset the run reads, and the run is the
    shipped config itself (only logging differs) with the call's overrides, on the test split."""
    monkeypatch.chdir(tmp_path)
    proc, calls = run_script(tmp_path, "ship.sh", config, "train.seed=1")
    assert proc.returncode == 0, proc.stderr
    builds, runs = entry_calls(calls, "scripts/build_data.py"), entry_calls(calls, "pretrain.py")
    assert len(builds) == 1 and len(runs) == 1
    build, run = composed(builds[0]), composed(runs[0])
    assert same_dataset(build, run) and run.data.eval_split == "test" and run.train.seed == 1
    shipped = composed(["--config-name", config, "train.seed=1"]).model_dump()
    assert {k: v for k, v in run.model_dump().items() if k != "logging"} == {k: v for k, v in shipped.items()
                                                                            if k != "logging"}


def test_ship_also_splits_evaluates_the_run_once_per_split(tmp_path, monkeypatch):
    """ALSO_SPLITS="val test": evaluate.py scores the run's checkpoint on each split, the run
    directory looked up once; with no run directory found, none is evaluated and the call says so."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("ALSO_SPLITS", "val test")
    proc, calls = run_script(tmp_path, "ship.sh", "cfg_arith_mul", found="/tmp/runs/trm-arith/ship")
    assert proc.returncode == 0, proc.stderr
    evaluations = entry_calls(calls, "scripts/evaluate.py")
    assert [e[e.index("--split") + 1] for e in evaluations] == ["val", "test"]
    assert all(e[e.index("--checkpoint") + 1] == "/tmp/runs/trm-arith/ship" for e in evaluations)
    assert sum("-name ship" in line and "-type d" in line for line in (tmp_path / "find.calls").read_text().splitlines()) == 1
    (tmp_path / "find.calls").unlink()
    proc, calls = run_script(tmp_path, "ship.sh", "cfg_arith_mul")
    assert proc.returncode == 0 and entry_calls(calls, "scripts/evaluate.py") == []
    assert "no run directory to evaluate on val" in proc.stdout


@pytest.mark.parametrize("size", [4, 6, 9, 12, 16])
def test_scaling_1gpu_plans_its_size_with_the_shipped_recipe(tmp_path, monkeypatch, size):
    monkeypatch.chdir(tmp_path)
    proc, calls = run_script(tmp_path, "scaling_1gpu.sh", str(size), "train.eval_interval=500")
    sweeps = entry_calls(calls, "scripts/scaling.py")
    assert len(sweeps) == 1, (proc.stdout, proc.stderr)
    options, plans = scaling_plans(sweeps[0], tmp_path)
    assert options["--config-name"] == "cfg_lsa_400s" and options["--prefix"] == "lsa400"
    [plan] = plans
    cfg = plan.cfg
    assert plan.size == size and plan.name == f"lsa400-n{size}" and cfg.data.build_args["n"] == size
    assert cfg.data.path.endswith(f"/data/lsa-{size}x{size}-10k-aug10")
    assert (cfg.train.max_train_seconds, cfg.train.max_steps) == (400, 7700)
    assert cfg.train.depth_curriculum is not None and cfg.train.device != "cpu"
    assert cfg.train.eval_interval == 500  # the call's own overrides reach the run
    assert [call[0] for call in calls if call[0] == "-m"] == ["-m"]  # the wheelhouse is installed first


@pytest.mark.parametrize("digits", [5, 6])
def test_scaling_1gpu_plans_multiplication_by_digits(tmp_path, monkeypatch, digits):
    """CONFIG=cfg_arith_mul: the size is max_digits, the runs are mul400-max_digits<d>, the budget the call's."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("CONFIG", "cfg_arith_mul")
    proc, calls = run_script(tmp_path, "scaling_1gpu.sh", str(digits), "train.max_train_seconds=400",
                             "optim.lr_schedule_clock=time", "train.max_steps=100000")
    sweeps = entry_calls(calls, "scripts/scaling.py")
    assert len(sweeps) == 1, (proc.stdout, proc.stderr)
    options, [plan] = scaling_plans(sweeps[0], tmp_path)
    assert options["--config-name"] == "cfg_arith_mul" and plan.name == f"mul400-max_digits{digits}"
    assert plan.cfg.data.build_args["max_digits"] == digits and plan.cfg.data.build_args["op"] == "mul"
    assert (plan.cfg.train.max_train_seconds, plan.cfg.optim.lr_schedule_clock) == (400, "time")


def test_scaling_1gpu_refuses_an_unknown_config(tmp_path, monkeypatch):
    monkeypatch.setenv("CONFIG", "cfg_maze")
    proc, calls = run_script(tmp_path, "scaling_1gpu.sh", "4")
    assert proc.returncode == 2 and "CONFIG=cfg_maze" in proc.stderr and calls == []


def test_scaling_1gpu_refuses_a_size_that_is_not_a_number(tmp_path):
    for args in (["x"], ["4,6"], []):
        proc, calls = run_script(tmp_path, "scaling_1gpu.sh", *args)
        assert proc.returncode != 0 and calls == [] and proc.stderr.strip()


def test_the_assembly_command_in_the_header_is_what_the_calls_produce():
    """The header's --report-only command names the prefix and the files the call copies back."""
    text = (PENDING / "scaling_1gpu.sh").read_text()
    assert "--report-only --config-name cfg_lsa_400s --sizes 4,6,9,12,16" in text
    assert "--prefix lsa400 --runs-dir $D/calls --out $D" in text and "cfg_lsa_400s) prefix=lsa400" in text
    with pytest.raises(InputError, match="use --prefix"):
        load_script("scaling").check_overrides(["logging.run_name=lsa400-n4"])


def test_the_pending_readme_lists_every_script_and_only_scripts_that_are_here():
    text = (PENDING / "README.md").read_text()
    scripts = {p.name for p in PENDING.glob("*.sh")}
    assert scripts and scripts <= set(re.findall(r"\b([\w-]+\.sh)\b", text))  # every ready call is listed
    called = set(re.findall(r"docs/benchmarks/pending/([\w-]+\.sh)", text))
    assert called and called <= scripts  # and no listed call is one that has moved or gone


def test_every_complete_command_in_the_pending_readme_composes_and_validates(tmp_path, monkeypatch):
    """The README's calls that carry no placeholder (N, a|b) are run as written, with the stand-in
    python3: each exits 0 and every pretrain.py / build_data.py / scaling.py command it passes validates."""
    import shlex

    commands = [c for c in re.findall(r"`((?:[A-Z]+=\S+ )*bash docs/benchmarks/pending/[^`]+)`",
                                      (PENDING / "README.md").read_text())
                if not re.search(r"\bN\b|\\\||\[the ", c)]
    assert len(commands) >= 4, commands
    monkeypatch.chdir(tmp_path)
    for command in commands:
        words = shlex.split(command)
        env = dict(w.split("=", 1) for w in words[:words.index("bash")])
        script, args = words[words.index("bash") + 1], words[words.index("bash") + 2:]
        for name, value in env.items():
            monkeypatch.setenv(name, value)
        proc, calls = run_script(tmp_path, script.rsplit("/", 1)[1], *args)
        for name in env:
            monkeypatch.delenv(name)
        assert proc.returncode == 0, (command, proc.stderr)
        runs = entry_calls(calls, "pretrain.py") + entry_calls(calls, "scripts/build_data.py")
        sweeps = entry_calls(calls, "scripts/scaling.py")
        assert runs or sweeps or entry_calls(calls, "scripts/profile_step.py"), command
        for args in runs:
            composed(args)
        for args in sweeps:  # scaling.py plans (composes and validates) every size itself
            assert scaling_plans(args, tmp_path)[1], command
