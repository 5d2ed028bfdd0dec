"""scripts/scaling.py: one recipe at several instance sizes of its task (LSA's n here, arithmetic's
max_digits in the last tests), a table and a plot of accuracy against size."""

import json
import shutil

import pytest

from conftest import (
    CPU_PROJECT, REPO as REPO_ROOT, TINY_CLI, assert_one_line_error, load_script, run_in_process, run_module,
)
from core.errors import InputError
from training.bookkeeping.runs import read_metrics

TINY = [*TINY_CLI, "data.build_args.num_train=30", "data.build_args.num_test=12", "data.build_args.num_aug=1",
        "train.global_batch_size=16", "train.max_steps=4", "train.eval_interval=2", "logging.wandb_mode=disabled"]


def argv(tmp_path, *extra):
    return ["--config-name", "cfg_lsa_cpu", "--out", str(tmp_path / "out"), "--runs-dir", str(tmp_path / "runs"),
            f"data.path={tmp_path / 'data' / 'lsa-4x4-tiny'}", *TINY, *extra]


def test_data_path_follows_the_size(tmp_path, monkeypatch):
    from evaluators.tasks import get_task

    path_for = get_task("lsa").size_data_path
    monkeypatch.chdir(tmp_path)
    here = str(tmp_path)
    assert path_for("data/lsa-9x9-10k-aug10", 9, 4) == f"{here}/data/lsa-4x4-10k-aug10"
    assert path_for("data/lsa-9x9-10k-aug10", 9, 12) == f"{here}/data/lsa-12x12-10k-aug10"
    assert path_for("data/lsa-9x9-10k-aug10", 9, 9) == f"{here}/data/lsa-9x9-10k-aug10"  # the config's own data
    assert path_for("/d/custom/", 9, 6) == "/d/custom-n6"  # a trailing slash names the same folder
    assert path_for("/d/custom", 9, 9) == "/d/custom"
    for wrong in ("/d/lsa-3x3", "/d/lsa-19x19"):  # a name that says another size than the config's n
        with pytest.raises(InputError, match="its name says"):
            path_for(wrong, 9, 4)


@pytest.mark.slow
def test_each_size_trains_and_the_table_and_plot_come_from_its_last_evaluation(tmp_path, capsys):
    scaling = load_script("scaling")
    scaling.main(argv(tmp_path, "--sizes", "3,4", "--gpus", "0,1"))  # two runs side by side
    printed = capsys.readouterr().out
    assert "n=3: exit 0" in printed and "n=4: exit 0" in printed and "(GPU 0)" in printed and "(GPU 1)" in printed
    out = tmp_path / "out"
    report = json.loads((out / "scaling.json").read_text())
    assert [row["n"] for row in report["rows"]] == [3, 4]
    for row in report["rows"]:
        run = tmp_path / "runs" / CPU_PROJECT / f"scaling-n{row['n']}"
        assert row["run"] == str(run)
        config = json.loads((run / "config.json").read_text())
        assert config["data"]["build_args"]["n"] == row["n"]
        assert config["data"]["path"] == str(tmp_path / "data" / f"lsa-{row['n']}x{row['n']}-tiny")
        last = [r for r in read_metrics(run) if "eval/examples" in r][-1]
        assert last["step"] == 4 and row["step"] == 4
        for key in ("eval/lsa/optimal_cost_rate", "eval/lsa/exact_accuracy", "eval/lsa/valid_permutation_rate",
                    "eval/lsa/projected_optimal_cost_rate"):
            assert row[key] == last[key]
        assert (out / f"n{row['n']}.log").read_text().strip()
    table = (out / "scaling.md").read_text().splitlines()
    assert table[0].startswith("| n | steps | train seconds | optimal cost rate")
    assert [line.split("|")[1].strip() for line in table[2:4]] == ["3", "4"]
    assert (out / "scaling.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "--sizes 3,4 --gpus 0,1" in report["command"] and report["headline"] == "eval/lsa/optimal_cost_rate"

    # --report-only rebuilds the same report from the runs; training again under the same names is refused
    (out / "scaling.json").unlink()
    scaling.main(argv(tmp_path, "--sizes", "3,4", "--report-only"))
    again = json.loads((out / "scaling.json").read_text())
    assert again["rows"] == report["rows"] and again["headline"] == report["headline"]
    assert again["command"].endswith("--sizes 3,4 --report-only")  # what made this report
    before = {name: (out / name).read_bytes() for name in ("scaling.json", "n3.log", "n4.log")}
    with pytest.raises(InputError, match="already holds scaling.json"):  # an earlier sweep's report and logs stay
        scaling.main(argv(tmp_path, "--sizes", "3,4"))
    with pytest.raises(InputError, match="scaling-n3 exists already"):
        scaling.main(argv(tmp_path, "--sizes", "3,4", "--out", str(tmp_path / "out2")))
    assert before == {name: (out / name).read_bytes() for name in before}


@pytest.mark.slow
def test_a_failing_size_is_named_with_its_error(tmp_path):
    with pytest.raises(InputError, match=r"n=3 failed \(error: train.global_batch_size=64 is larger"):
        load_script("scaling").main(argv(tmp_path, "--sizes", "3", "train.global_batch_size=64"))


@pytest.mark.parametrize("extra, culprit", [
    (["--sizes", "1,4"], "n=1"),
    (["--sizes", "4,x"], "--sizes 4,x"),
    (["--sizes", "4,4"], "appears twice"),
    (["--gpus", "0,a"], "--gpus 0,a"),
    (["--prefix", "../x"], "--prefix"),
    (["--config-name", "cfg_sudoku_cpu"], "data.builder is 'sudoku'"),
    (["optim.lr=abc"], "optim.lr"),
    (["--out", "."], "a folder of its own"),  # "" is refused by the parser (tests/test_tools.py)
    (["logging.run_name=foo"], "use --prefix"),
    (["data.build_args.n=5"], "use --sizes"),
    (["~data.build_args.n"], "use --sizes"),
    (["logging.runs_dir=/x"], "use --runs-dir"),
    (["data.build_args.max_cost=0"], "data.build_args: max_cost"),
    (["--gpus", "\u00b2"], "--gpus"),
    (["--gpus", "0,00"], "appears twice"),
])
def test_bad_input_is_one_line_and_nothing_is_written(tmp_path, extra, culprit):
    scaling = load_script("scaling")
    with pytest.raises(InputError) as info:
        scaling.main(argv(tmp_path, *extra))
    assert culprit in str(info.value)
    assert not (tmp_path / "out").exists() and not (tmp_path / "runs").exists() and not (tmp_path / "data").exists()


@pytest.mark.slow
def test_command_line_contract(tmp_path):
    assert_one_line_error(run_module("scripts/scaling.py", *argv(tmp_path, "--sizes", "0")), "n=0")


@pytest.mark.slow
def test_build_data_builds_what_pretrain_would_use_once(tmp_path, capsys):
    build = load_script("build_data").main
    data = tmp_path / "lsa-5x5"
    args = ["--config-name", "cfg_lsa_cpu", f"data.path={data}", "data.build_args.n=5", "data.build_args.num_train=20",
            "data.build_args.num_test=5"]
    build([*args, "logging.progress=false"])
    meta = json.loads((data / "train" / "dataset.json").read_text())
    assert meta["seq_len"] == 25 and "built in" in capsys.readouterr().out
    assert meta["build_args"] == {"n": 5, "max_cost": 9, "num_train": 20, "num_test": 5, "num_aug": 10, "seed": 0,
                                  "unique_optimum": False, "unique_optimum_train": False, "transpose": True}
    before = sorted((p.name, p.stat().st_mtime_ns) for p in data.rglob("*"))
    build(args)
    assert "present; nothing to build" in capsys.readouterr().out
    with pytest.raises(InputError, match=r"built with num_train=20 \(the config: 2000\), num_test=5 \(the config: 1000\)"):
        build(args[:4])  # the config's own num_train and num_test
    assert sorted((p.name, p.stat().st_mtime_ns) for p in data.rglob("*")) == before
    bad = run_module("scripts/build_data.py", "--config-name", "cfg_lsa_cpu", f"data.path={tmp_path / 'bad'}",
                     "data.build_args.n=1")
    assert_one_line_error(bad, "data.build_args", "n")
    assert not (tmp_path / "bad").exists()


@pytest.mark.slow
def test_ctrl_c_reaches_the_running_size_once_and_it_checkpoints(tmp_path):
    """A Ctrl-C (SIGINT to the terminal's whole process group) reaches the script alone, since
    the runs live in their own session; the script passes one SIGTERM on, the run writes a
    checkpoint (a second signal would have made it exit at once), the script exits 128 + 2."""
    import os
    import signal
    import subprocess
    import sys
    import time

    from conftest import REPO
    from training.engine.checkpoint import resolve_checkpoint

    env = {**os.environ, "WANDB_MODE": "disabled"}
    proc = subprocess.Popen([sys.executable, str(REPO / "scripts" / "scaling.py"),
                             *argv(tmp_path, "--sizes", "3,4", "train.max_steps=100000", "train.eval_interval=100000",
                                   "train.log_every=1")],
                            cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)  # a process group of its own, as a terminal gives
    run = tmp_path / "runs" / CPU_PROJECT / "scaling-n3"
    deadline = time.time() + 180
    while not ((run / "metrics.jsonl").is_file() and "train/lm_loss" in (run / "metrics.jsonl").read_text()):
        assert proc.poll() is None and time.time() < deadline, proc.communicate()
        time.sleep(0.2)  # polling for the event (the first logged step), not waiting a fixed time
    os.killpg(proc.pid, signal.SIGINT)
    out, err = proc.communicate(timeout=180)
    assert proc.returncode == 128 + signal.SIGINT, err
    assert err.strip().splitlines() == ["error: interrupted by SIGINT; nothing half-written was left behind"], err
    meta = json.loads((resolve_checkpoint(run) / "meta.json").read_text())
    assert meta["preempted"] is True
    assert "stopped at step" in (tmp_path / "out" / "n3.log").read_text()
    assert not (tmp_path / "runs" / CPU_PROJECT / "scaling-n4").exists()  # the next size never started


def test_a_data_path_that_names_or_holds_another_size_is_refused(tmp_path):
    from conftest import build_lsa

    scaling = load_script("scaling")
    with pytest.raises(InputError, match="its name says 3x3 but data.build_args.n=4"):
        scaling.main([*argv(tmp_path, "--sizes", "3,4"), f"data.path={tmp_path / 'data' / 'lsa-3x3'}"])
    build_lsa(tmp_path / "data" / "mine", n=3)  # at the path the config's own size (4) would use
    with pytest.raises(InputError, match="holds a dataset with task='lsa', n=3, not lsa n=4"):
        scaling.main([*argv(tmp_path, "--sizes", "4"), f"data.path={tmp_path / 'data' / 'mine'}"])
    assert not (tmp_path / "runs").exists() and not (tmp_path / "out").exists()


@pytest.fixture(scope="module")
def sweep(tmp_path_factory):
    """A finished one-size sweep, started from another folder with relative paths."""
    import os

    root = tmp_path_factory.mktemp("sweep")
    cwd = os.getcwd()
    os.chdir(root)
    try:
        load_script("scaling").main(["--config-name", "cfg_lsa_cpu", "--out", "out", "--runs-dir", "runs", "--sizes", "3",
                                         "data.path=data/lsa-4x4-tiny", *TINY])
    finally:
        os.chdir(cwd)
    return root


@pytest.mark.slow
def test_relative_paths_mean_the_current_folder_for_the_script_and_its_runs(sweep):
    run = sweep / "runs" / CPU_PROJECT / "scaling-n3"
    assert (run / "config.json").is_file() and (sweep / "data" / "lsa-3x3-tiny" / "train" / "dataset.json").is_file()
    assert json.loads((run / "config.json").read_text())["data"]["path"] == str(sweep / "data" / "lsa-3x3-tiny")
    assert json.loads((sweep / "out" / "scaling.json").read_text())["rows"][0]["run"] == str(run)


def damage_config(run):
    (run / "config.json").write_text("{bad")


def damage_config_list(run):
    (run / "config.json").write_text("[]")


def damage_line(run):
    with open(run / "metrics.jsonl", "a") as f:
        f.write("[1, 2, 3]\n{\"step\": 9}\n")


def damage_step(run):
    lines = (run / "metrics.jsonl").read_text().splitlines()
    (run / "metrics.jsonl").write_text("\n".join([lines[0].replace('"step": ', '"step": "abc", "x": '), *lines[1:]]) + "\n")


def damage_metric(run, value):
    lines = (run / "metrics.jsonl").read_text().splitlines()
    last = max(i for i, line in enumerate(lines) if "eval/examples" in line)
    record = json.loads(lines[last])
    record["eval/lsa/optimal_cost_rate"] = value
    lines[last] = json.dumps(record)
    (run / "metrics.jsonl").write_text("\n".join(lines) + "\n")


def damage_deep(run):
    with open(run / "metrics.jsonl", "a") as f:
        f.write("[" * 100000 + "]" * 100000 + "\n{\"step\": 9}\n")


@pytest.mark.parametrize("damage, culprit", [
    (damage_config, "config.json: cannot read JSON"),
    (damage_config_list, "config.json: expected a JSON object"),
    (damage_line, "metrics.jsonl:"),
    (damage_step, "metrics.jsonl:1: expected an object with an integer 'step'"),
    (lambda run: damage_metric(run, "hello"), "eval/lsa/optimal_cost_rate: expected a finite number"),
    (lambda run: damage_metric(run, float("nan")), "eval/lsa/optimal_cost_rate: expected a finite number"),
    (damage_deep, "not a JSON line"),
    (lambda run: shutil.rmtree(run), "no run scaling-n3 in"),
])
def test_report_only_over_damaged_runs_is_one_line_and_leaves_the_report(sweep, tmp_path, damage, culprit):
    runs = tmp_path / "runs"
    shutil.copytree(sweep / "runs", runs)
    out = tmp_path / "out"
    shutil.copytree(sweep / "out", out)
    before = {name: (out / name).read_bytes() for name in ("scaling.json", "scaling.md", "scaling.png")}
    damage(runs / CPU_PROJECT / "scaling-n3")
    with pytest.raises(InputError) as info:
        load_script("scaling").main(["--config-name", "cfg_lsa_cpu", "--out", str(out), "--runs-dir", str(runs),
                                         "--sizes", "3", f"data.path={sweep / 'data' / 'lsa-4x4-tiny'}", *TINY,
                                         "--report-only"])
    assert culprit in str(info.value) and "\n" not in str(info.value)
    assert before == {name: (out / name).read_bytes() for name in before}
    assert sorted(p.name for p in out.iterdir()) == ["n3.log", "scaling.json", "scaling.md", "scaling.png"]


@pytest.mark.slow
def test_runs_of_separate_calls_assemble_into_one_report(sweep, tmp_path, monkeypatch):
    """One size per device call (docs/benchmarks/pending/scaling_1gpu.sh): each call is its own
    sweep, with its own runs folder and --out, and only the run's config.json, metrics.jsonl and
    run.json come back. Copied side by side under one folder, --report-only with the sweep's
    config and sizes reads them as one table, each row the same as its own call's report."""
    scaling = load_script("scaling")
    scaling.main(["--config-name", "cfg_lsa_cpu", "--sizes", "4", "--out", str(tmp_path / "call4"), "--runs-dir",
                  str(tmp_path / "machine2"), f"data.path={tmp_path / 'data' / 'lsa-4x4-tiny'}", *TINY])
    calls = tmp_path / "calls"
    for runs_dir, out in ((sweep / "runs", sweep / "out"), (tmp_path / "machine2", tmp_path / "call4")):
        [run] = [row["run"] for row in json.loads((out / "scaling.json").read_text())["rows"]]
        copy = calls / CPU_PROJECT / run.rsplit("/", 1)[1]
        copy.mkdir(parents=True)
        for name in ("config.json", "metrics.jsonl", "run.json"):  # what the call copies back: no checkpoints
            shutil.copy(runs_dir / CPU_PROJECT / copy.name / name, copy / name)
    monkeypatch.chdir(tmp_path)  # the config's own data paths (none built here) resolve under tmp_path
    table = tmp_path / "table"
    scaling.main(["--report-only", "--config-name", "cfg_lsa_cpu", "--sizes", "3,4", "--runs-dir", str(calls),
                  "--out", str(table)])
    report = json.loads((table / "scaling.json").read_text())
    alone = [json.loads((out / "scaling.json").read_text())["rows"][0] for out in (sweep / "out", tmp_path / "call4")]
    assert [row["n"] for row in report["rows"]] == [3, 4]
    for row, own in zip(report["rows"], alone):
        assert row["run"] == str(calls / CPU_PROJECT / f"scaling-n{row['n']}")
        assert {k: v for k, v in row.items() if k != "run"} == {k: v for k, v in own.items() if k != "run"}
        assert row["step"] == 4 and "eval/lsa/optimal_cost_rate" in row
    lines = (table / "scaling.md").read_text().splitlines()
    assert [line.split("|")[1].strip() for line in lines[2:4]] == ["3", "4"]
    assert (table / "scaling.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # and later from its own scaling.json alone, as any sweep's report
    (table / "scaling.md").unlink()
    scaling.main(["--out", str(table), "--report-only"])
    assert json.loads((table / "scaling.json").read_text()) == report and (table / "scaling.md").is_file()


def test_a_report_that_cannot_be_written_leaves_the_old_one_whole(sweep, tmp_path):
    out = tmp_path / "out"
    shutil.copytree(sweep / "out", out)
    before = (out / "scaling.json").read_bytes()
    (out / "scaling.md").unlink()
    (out / "scaling.md").mkdir()
    with pytest.raises(InputError, match="scaling.md there is not a file"):
        load_script("scaling").main(["--config-name", "cfg_lsa_cpu", "--out", str(out), "--runs-dir",
                                         str(sweep / "runs"), "--sizes", "3",
                                         f"data.path={sweep / 'data' / 'lsa-4x4-tiny'}", *TINY, "--report-only"])
    assert (out / "scaling.json").read_bytes() == before


@pytest.mark.slow
def test_build_data_refuses_a_dataset_of_other_arguments_or_a_broken_one(tmp_path):
    from conftest import build_lsa

    data = build_lsa(tmp_path / "lsa", n=4)
    before = sorted((p.name, p.stat().st_mtime_ns) for p in data.rglob("*"))
    # in-process: build_data.py's real command line is the test above's
    result = run_in_process("scripts/build_data.py", "--config-name", "cfg_lsa_cpu", f"data.path={data}",
                            "data.build_args.n=5")
    assert_one_line_error(result, f"data.path={data}", "n=4 (the config: 5)")
    (tmp_path / "fake" / "train").mkdir(parents=True)
    (tmp_path / "fake" / "test").mkdir()
    for split in ("train", "test"):
        (tmp_path / "fake" / split / "dataset.json").write_text("{}")
    with pytest.raises(InputError, match="fake/train/dataset.json: pad_id: Field required"):
        load_script("build_data").main(["--config-name", "cfg_lsa_cpu", f"data.path={tmp_path / 'fake'}"])
    assert sorted((p.name, p.stat().st_mtime_ns) for p in data.rglob("*")) == before


def test_pretrain_says_when_its_data_was_built_with_other_arguments(tmp_path):
    from conftest import build_lsa, pretrain_argv, run_in_process

    data = build_lsa(tmp_path / "lsa", n=4)
    result = run_in_process(*pretrain_argv(data, tmp_path / "runs", "data.build_args.n=5", "train.max_steps=1",
                                           "train.global_batch_size=16", "train.eval_interval=1"))
    assert result.returncode == 0, result.stderr
    note = next(line for line in result.stdout.splitlines() if line.startswith("note: "))
    assert note.startswith(f"note: {data} was built with n=4 (the config: 5), ")  # then num_train etc.
    assert note.endswith("; training on it as it is")


def test_an_existing_size_dataset_built_with_other_arguments_is_refused(tmp_path):
    from conftest import build_lsa

    build_lsa(tmp_path / "data" / "lsa-3x3-tiny", n=3, max_cost=20, num_train=30, num_test=12, num_aug=1)
    with pytest.raises(InputError, match=r"holds the n=3 dataset built with max_cost=20 \(the config: 9\)"):
        load_script("scaling").main(argv(tmp_path, "--sizes", "3"))
    assert not (tmp_path / "runs").exists()


def test_a_failure_while_writing_the_report_leaves_the_old_one(sweep, tmp_path, monkeypatch):
    scaling = load_script("scaling")
    out = tmp_path / "out"
    shutil.copytree(sweep / "out", out)
    before = {p.name: p.read_bytes() for p in out.iterdir()}

    def broken_plot(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(scaling, "plot", broken_plot)
    with pytest.raises(OSError, match="No space left"):
        scaling.main(["--config-name", "cfg_lsa_cpu", "--out", str(out), "--runs-dir", str(sweep / "runs"), "--sizes", "3",
                      f"data.path={sweep / 'data' / 'lsa-4x4-tiny'}", *TINY, "--report-only"])
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before  # no temporary file left either


@pytest.mark.parametrize("damage, culprit", [
    (lambda c: c["data"].__setitem__("build_args", None), "this is not the n=3 run"),
    (lambda c: c.__setitem__("train", [1]), "config.json: train is not a mapping"),
])
def test_report_only_over_odd_run_configs(sweep, tmp_path, damage, culprit):
    runs = tmp_path / "runs"
    shutil.copytree(sweep / "runs", runs)
    config_file = runs / CPU_PROJECT / "scaling-n3" / "config.json"
    config = json.loads(config_file.read_text())
    damage(config)
    config_file.write_text(json.dumps(config))
    with pytest.raises(InputError, match=culprit):
        load_script("scaling").main(["--config-name", "cfg_lsa_cpu", "--out", str(tmp_path / "out"), "--runs-dir",
                                         str(runs), "--sizes", "3", f"data.path={sweep / 'data' / 'lsa-4x4-tiny'}",
                                         *TINY, "--report-only"])


def test_gpu_indices_are_those_this_process_sees(tmp_path, monkeypatch):
    """--gpus 1 under CUDA_VISIBLE_DEVICES=5,7 is physical GPU 7 for the run."""
    scaling = load_script("scaling")
    seen = []

    def fake_popen(command, env, **kwargs):
        seen.append(env.get("CUDA_VISIBLE_DEVICES"))
        raise OSError(24, "Too many open files")

    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "5,7")
    monkeypatch.setattr(scaling.subprocess, "Popen", fake_popen)
    with pytest.raises(OSError):
        scaling.main(argv(tmp_path, "--sizes", "3", "--gpus", "1"))
    assert seen == ["7"]


def test_no_run_is_left_running_when_starting_another_fails(tmp_path, monkeypatch):
    scaling = load_script("scaling")
    real_popen, started = scaling.subprocess.Popen, []

    def second_fails(*args, **kwargs):
        if started:
            raise OSError(24, "Too many open files")
        started.append(real_popen(*args, **kwargs))
        return started[-1]

    monkeypatch.setattr(scaling.subprocess, "Popen", second_fails)
    with pytest.raises(OSError, match="Too many open files"):
        scaling.main(argv(tmp_path, "--sizes", "3,4", "--gpus", "0,1", "train.max_steps=100000"))
    assert started and started[0].poll() is not None  # stopped and waited for, not left training


# ---------------------------------------------------------------------------------------------
# Issue 23: --report-only reads the sweep from its own report; equal series stay visible


def test_report_only_alone_reads_the_reports_own_sweep(sweep, tmp_path, monkeypatch):
    """`--out DIR --report-only` alone: the config, sizes and runs come from DIR/scaling.json (not the
    script's defaults, cfg_lsa_400s at 4,6,9,12), and the training command there is kept as it was."""
    out = tmp_path / "out"
    shutil.copytree(sweep / "out", out)
    before = json.loads((out / "scaling.json").read_text())
    (out / "scaling.md").unlink()
    monkeypatch.chdir(tmp_path)  # another folder than the sweep's
    load_script("scaling").main(["--out", str(out), "--report-only"])
    after = json.loads((out / "scaling.json").read_text())
    assert after == before
    assert f"Command: `{before['command']}`" in (out / "scaling.md").read_text()
    assert "--report-only" not in before["command"] and "--sizes 3" in before["command"]
    # the runs moved: --runs-dir says where they are now
    moved = tmp_path / "moved"
    shutil.move(str(sweep / "runs"), str(moved))
    try:
        load_script("scaling").main(["--out", str(out), "--report-only", "--runs-dir", str(moved)])
        assert json.loads((out / "scaling.json").read_text())["rows"][0]["run"].startswith(str(moved))
    finally:
        shutil.move(str(moved), str(sweep / "runs"))


def test_report_only_without_a_report_or_with_half_a_sweep_is_one_line(tmp_path):
    scaling = load_script("scaling")
    with pytest.raises(InputError, match="scaling.json is missing"):
        scaling.main(["--out", str(tmp_path / "none"), "--report-only"])
    with pytest.raises(InputError, match="give both --config-name and --sizes"):
        scaling.main(["--out", str(tmp_path / "none"), "--report-only", "--config-name", "cfg_lsa_cpu"])
    (tmp_path / "odd").mkdir()
    (tmp_path / "odd" / "scaling.json").write_text(json.dumps({"rows": [{"n": "4"}]}))
    with pytest.raises(InputError, match="not a report of this script"):
        scaling.main(["--out", str(tmp_path / "odd"), "--report-only"])


def test_equal_series_stay_visible_in_the_plot():
    """Four metrics all 0% at every n (an unlearned size) are four lines told apart by marker,
    line style and a small sideways shift, not one line hiding three."""
    from evaluators.tasks import get_task

    scaling, columns = load_script("scaling"), get_task("lsa").scaling_columns()
    rows = [{"n": n, "step": 10, **{key: 0.0 for key, _ in columns}} for n in (4, 6, 9)]
    lines = [line for line in scaling.figure(rows, "t", "n", columns, "n").axes[0].lines if line.get_label() in
             {label for _, label in columns}]
    assert len(lines) == 4
    assert len({line.get_marker() for line in lines}) == 4 and len({line.get_linestyle() for line in lines}) == 4
    assert len({tuple(line.get_xdata()) for line in lines}) == 4


# ---------------------------------------------------------------------------------------------
# Issue 19/21: the sweep is generic, its size the task's registry entry's (Task.size_arg)

LEGACY = REPO_ROOT / "docs" / "benchmarks" / "2026-11-29-cpu-scaling"


def test_a_report_of_the_old_lsa_script_still_reads(tmp_path):
    """docs/benchmarks/2026-11-29-cpu-scaling was written as scripts/lsa_scaling.py (no size_arg,
    rows keyed by n): --report-only over its runs (rebuilt here from the metrics committed beside
    it) gives the same rows and the same table, its command kept."""
    record = json.loads((LEGACY / "scaling.json").read_text())
    assert "size_arg" not in record
    runs = tmp_path / "runs"
    for row in record["rows"]:
        run = runs / "trm-lsa-cpu" / f"cpu-scaling-n{row['n']}"
        run.mkdir(parents=True)
        shutil.copy(LEGACY / f"n{row['n']}.metrics.jsonl", run / "metrics.jsonl")
        (run / "config.json").write_text(json.dumps({"data": {"builder": "lsa", "build_args": {"n": row["n"]}},
                                                     "train": {"max_train_seconds": 300, "max_steps": 100000}}))
    out = tmp_path / "out"
    out.mkdir()
    shutil.copy(LEGACY / "scaling.json", out / "scaling.json")
    load_script("scaling").main(["--out", str(out), "--report-only", "--runs-dir", str(runs)])
    again = json.loads((out / "scaling.json").read_text())
    assert again["command"] == record["command"] and again["size_arg"] == "n" and again["task"] == "lsa"
    assert [{k: v for k, v in r.items() if k not in ("run", "train")} for r in again["rows"]] == \
        [{k: v for k, v in r.items() if k != "run"} for r in record["rows"]]
    assert (out / "scaling.md").read_text() == (LEGACY / "scaling.md").read_text()
    assert (out / "scaling.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_a_task_without_a_size_is_one_line(tmp_path):
    with pytest.raises(InputError) as info:
        load_script("scaling").main(["--config-name", "cfg_sudoku_cpu", "--out", str(tmp_path / "out")])
    message = str(info.value)
    assert "data.builder is 'sudoku', a task with no instance size" in message and "\n" not in message
    assert message.endswith("arith, lsa, maze")
    assert not (tmp_path / "out").exists()


def test_arith_sweeps_max_digits(tmp_path):
    """cfg_arith_mul's CPU preset (1..3 digits) at 4 and 5 digits: each size its own max_digits, data
    path (d1-3-cpu -> d1-4-cpu), run name and log; a size too small for the config's --num-train
    refused when planned (the builder's argument check); its own size key refused as an override;
    nothing trained or written."""
    scaling = load_script("scaling")
    base, task, size = scaling.base_config("cfg_arith_mul", ["device=cpu"])
    assert (task.name, task.size_arg, size) == ("arith", "max_digits", 3)
    plans = [scaling.Plan("cfg_arith_mul", ["device=cpu"], base, task, size, k, "s", tmp_path / "runs") for k in (4, 5)]
    with pytest.raises(InputError, match=r"max_digits=2 is not a valid arith size .*--num-train 20000: only 5050"):
        scaling.Plan("cfg_arith_mul", ["device=cpu"], base, task, size, 2, "s", tmp_path / "runs")
    for plan, k in zip(plans, (4, 5)):
        assert plan.cfg.data.build_args["max_digits"] == k and plan.cfg.data.build_args["min_digits"] == 1
        assert plan.cfg.data.path.endswith(f"/arith-mul-b10-d1-{k}-cpu") and plan.name == f"s-max_digits{k}"
        assert plan.log == f"max_digits{k}.log" and f"data.build_args.max_digits={k}" in plan.command
    assert task.scaling_columns()[0] == ("eval/arith/exact_accuracy", "exact")
    with pytest.raises(InputError, match="use --sizes"):
        scaling.main(["--config-name", "cfg_arith_mul", "--out", str(tmp_path / "out"), "data.build_args.max_digits=5"])
    with pytest.raises(InputError, match=r"its name says up to 3 digits but data.build_args.max_digits=4"):
        scaling.main(["--config-name", "cfg_arith_mul", "--out", str(tmp_path / "out"), "--sizes", "2",
                      f"data.path={tmp_path / 'arith-mul-d1-3'}"])
    assert not any(tmp_path.iterdir())


@pytest.mark.slow
def test_an_arith_sweep_trains_each_digit_count(tmp_path):
    load_script("scaling").main(["--config-name", "cfg_arith_cpu", "--sizes", "2,3", "--out", str(tmp_path / "out"),
                                 "--runs-dir", str(tmp_path / "runs"), f"data.path={tmp_path / 'data' / 'arith-d1-4'}",
                                 *TINY, "data.build_args.num_train=200", "data.build_args.num_test=50",
                                 "data.build_args.num_aug=1"])
    report = json.loads((tmp_path / "out" / "scaling.json").read_text())
    assert report["size_arg"] == "max_digits" and report["headline"] == "eval/arith/exact_accuracy"
    for row, k in zip(report["rows"], (2, 3)):
        run = tmp_path / "runs" / "trm-arith-cpu" / f"scaling-max_digits{k}"
        config = json.loads((run / "config.json").read_text())
        assert row["max_digits"] == k and row["run"] == str(run) and row["step"] == 4
        assert config["data"]["path"] == str(tmp_path / "data" / f"arith-d1-{k}")
        assert config["data"]["build_args"]["max_digits"] == k
        last = [r for r in read_metrics(run) if "eval/examples" in r][-1]
        assert row["eval/arith/digit_accuracy"] == last["eval/arith/digit_accuracy"]
    assert (tmp_path / "out" / "scaling.md").read_text().startswith("| max_digits | steps | train seconds | exact |")
