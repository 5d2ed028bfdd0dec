"""Run discovery: list_runs.py, finding a run by name / wandb id / prefix, resuming by either,
and metrics time that keeps counting across a resume."""

import json
import os
import shutil
import stat
import tempfile
from pathlib import Path

import pytest

from conftest import assert_one_line_error, load_script, run_in_process, run_module, tiny_config
from training.bookkeeping.runs import RunNotFound, find_run, read_metrics, summarize


def list_runs(capsys, *args):
    load_script("list_runs").main(list(args))
    return capsys.readouterr().out


@pytest.mark.slow
def test_list_runs_table_and_json(runs_zoo, capsys):
    runs_dir = str(runs_zoo["runs_dir"])
    out = run_in_process("scripts/list_runs.py", "--runs-dir", runs_dir)
    assert out.returncode == 0, out.stderr
    lines = out.stdout.strip().splitlines()
    assert lines[0].split()[:3] == ["created", "run", "task"] and len(lines) == 5
    for name in ("trm-lsa-cpu/alpha", "trm-lsa-cpu/beta", "trm-sudoku-cpu/sud", "trm-arith-cpu/ari"):
        assert any(name in line for line in lines[1:]), name

    listed = json.loads(list_runs(capsys, "--runs-dir", runs_dir, "--json", "--project", "trm-lsa-cpu", "--sort", "step"))
    assert [r["name"] for r in listed] == ["alpha", "beta"]  # same step: oldest first
    alpha = listed[0]
    assert alpha["task"] == "lsa" and alpha["arch"] == "trm/attention" and alpha["step"] == 40
    assert alpha["checkpoint"] == "step_0000040" and alpha["headline"] == "eval/lsa/optimal_cost_rate"
    assert alpha["best"]["eval/lsa/optimal_cost_rate"]["step"] in (20, 40)
    assert 0 < alpha["train_seconds"] <= alpha["wall_seconds"]


def test_list_runs_sorts_by_a_metric_best_last(runs_zoo, capsys):
    runs = json.loads(list_runs(capsys, "--runs-dir", str(runs_zoo["runs_dir"]), "--json", "--sort", "lm_loss"))
    losses = [r["best"]["eval/lm_loss"]["value"] for r in runs]
    assert losses == sorted(losses, reverse=True)  # lower is better: the best comes last
    names = [r["name"] for r in json.loads(list_runs(capsys, "--runs-dir", str(runs_zoo["runs_dir"]), "--json", "--sort",
                                                     "projected_optimal_cost_rate"))]
    assert set(names[:2]) == {"sud", "ari"}  # runs without the metric come first


@pytest.mark.slow
def test_list_runs_bad_input(runs_zoo, tmp_path, capsys):
    from core.errors import InputError

    assert_one_line_error(run_module("scripts/list_runs.py", "--runs-dir", str(runs_zoo["runs_dir"]), "--sort", "nope"),
                          "--sort nope")
    with pytest.raises(InputError, match="--runs-dir"):
        list_runs(capsys, "--runs-dir", str(tmp_path / "none"))
    with pytest.raises(SystemExit):
        list_runs(capsys, "--bogus")
    assert "--bogus" in capsys.readouterr().err


def copy_run(source, runs_dir, name, wandb_id=None):
    target = runs_dir / source.parent.name / name
    shutil.copytree(source, target)
    run_file = json.loads((target / "run.json").read_text())
    (target / "run.json").write_text(json.dumps({**run_file, "name": name, "wandb_id": wandb_id}))
    return target


def test_list_runs_shows_a_latest_checkpoint_that_is_gone_in_its_row(runs_zoo, tmp_path, capsys):
    """`checkpoints/latest` naming a checkpoint that was deleted (or is not whole): the run is
    still listed, its checkpoint cell says so; the other runs are listed as before."""
    runs = tmp_path / "runs"
    gone = copy_run(runs_zoo["alpha"], runs, "gone")
    half = copy_run(runs_zoo["alpha"], runs, "half")
    copy_run(runs_zoo["alpha"], runs, "whole")
    name = (gone / "checkpoints" / "latest").read_text().strip()
    shutil.rmtree(gone / "checkpoints" / name)
    (half / "checkpoints" / name / "optim.pt").unlink()
    rows = {line.split()[2]: line for line in list_runs(capsys, "--runs-dir", str(runs)).splitlines()[1:]}
    assert rows["trm-lsa-cpu/gone"].endswith(f"{name} (missing)"), rows
    assert rows["trm-lsa-cpu/half"].endswith(f"{name} (incomplete)"), rows
    assert rows["trm-lsa-cpu/whole"].endswith(name), rows
    assert capsys.readouterr().err == ""
    listed = {r["name"]: r for r in json.loads(list_runs(capsys, "--runs-dir", str(runs), "--json"))}
    assert {k: (v["checkpoint"], v["checkpoint_state"]) for k, v in listed.items()} == {
        "gone": (name, "missing"), "half": (name, "incomplete"), "whole": (name, "ok")}


def list_runs_as_another_user(capsys, runs, *args) -> str:
    """list_runs.py's output (exit 0 asserted) where file permissions apply: as this user, or,
    for root (who reads everything), in a child process that has become `nobody`."""
    if os.geteuid() != 0:
        return list_runs(capsys, "--runs-dir", str(runs), *args)
    list_runs(capsys, "--runs-dir", str(runs), *args)  # imports whatever the listing needs, as root
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: no pytest from here on, only the listing and an exit code
        code = 1
        try:
            os.close(read_end)
            os.setgid(65534)
            os.setuid(65534)
            os.dup2(write_end, 1)
            os.dup2(write_end, 2)
            import sys
            sys.stdout = os.fdopen(1, "w")
            sys.stderr = sys.stdout
            load_script("list_runs").main(["--runs-dir", str(runs), *args])
            sys.stdout.flush()
            code = 0
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else 1
        except BaseException as exc:  # noqa: BLE001 (reported to the parent)
            os.write(write_end, f"{type(exc).__name__}: {exc}".encode())
        finally:
            os._exit(code)
    os.close(write_end)
    with os.fdopen(read_end, "rb") as f:
        out = f.read().decode()
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0, out
    return out


def test_list_runs_lists_a_run_whose_checkpoint_it_cannot_read(runs_zoo, capsys):
    """A shared runs directory: another user's run whose checkpoint folder this user cannot read
    (private). Its row says so; the listing goes on (it used to stop at it: 'Permission denied')."""
    shared = Path(tempfile.mkdtemp(prefix="shared-runs-"))
    try:
        runs = shared / "runs"
        private = copy_run(runs_zoo["alpha"], runs, "private")
        copy_run(runs_zoo["alpha"], runs, "open")
        for path in (shared, *shared.rglob("*")):  # readable to everyone (a shared folder) ...
            path.chmod(path.stat().st_mode | stat.S_IRUSR | stat.S_IRGRP | stat.S_IROTH
                       | (stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH if path.is_dir() else 0))
        name = (private / "checkpoints" / "latest").read_text().strip()
        (private / "checkpoints" / name).chmod(0o700 if os.geteuid() == 0 else 0)  # ... but this folder
        rows = {line.split()[2]: line for line in list_runs_as_another_user(capsys, runs).splitlines()[1:]}
        assert rows["trm-lsa-cpu/private"].endswith(f"{name} (unreadable)"), rows
        assert rows["trm-lsa-cpu/open"].endswith(name), rows
        listed = {r["name"]: r["checkpoint_state"] for r in json.loads(list_runs_as_another_user(capsys, runs, "--json"))}
        assert listed == {"private": "unreadable", "open": "ok"}, listed
    finally:
        for path in (shared, *shared.rglob("*")):
            if path.is_dir():
                path.chmod(0o700)
        shutil.rmtree(shared)


def test_find_run_by_name_id_and_prefix(runs_zoo, tmp_path):
    runs = tmp_path / "runs"
    gamma = copy_run(runs_zoo["alpha"], runs, "gamma", wandb_id="k3x9q2ab")
    delta = copy_run(runs_zoo["alpha"], runs, "delta")
    (delta / "wandb" / "offline-run-20261128_120000-zz81aa00").mkdir(parents=True)
    assert find_run("gamma", runs) == gamma
    assert find_run("k3x9q2ab", runs) == gamma and find_run("k3x", runs) == gamma
    assert find_run("zz81aa00", runs) == delta and find_run("del", runs) == delta
    assert find_run(str(delta), runs) == delta
    copy_run(runs_zoo["alpha"], runs, "gammb")
    with pytest.raises(RunNotFound, match="gamm: the prefix matches 2 runs"):
        find_run("gamm", runs)
    with pytest.raises(RunNotFound, match="nothere: no run directory, run name or wandb id"):
        find_run("nothere", runs)


@pytest.mark.parametrize("key", ["by-name", "k3x9q2ab"])
def test_resume_by_name_or_wandb_id_continues_and_time_keeps_counting(runs_zoo, tmp_path, key):
    from training.loop import train

    runs = tmp_path / "runs"
    run_dir = copy_run(runs_zoo["alpha"], runs, "by-name", wandb_id="k3x9q2ab")
    before = read_metrics(run_dir)
    data = runs_zoo["alpha"].parents[2] / "lsa4"
    result = train(tiny_config(tmp_path, f"train.resume={key}", "train.max_steps=50", "train.eval_interval=10", data=data))
    assert result["run_dir"] == str(run_dir) and result["step"] == 50
    after = read_metrics(run_dir)[len(before):]
    assert after and after[0]["step"] > 40
    times = [r["time"] for r in before + after]
    assert times == sorted(times) and after[0]["time"] >= before[-1]["time"]
    assert json.loads((run_dir / "run.json").read_text())["starts"] == 2
    assert summarize(run_dir).step == 50


@pytest.mark.slow
def test_resume_by_unknown_name_is_one_line(runs_zoo, tmp_path):
    out = run_in_process("pretrain.py", "--config-name", "cfg_lsa_cpu", "train.resume=no-such-run",
                         f"logging.runs_dir={runs_zoo['runs_dir']}", f"data.path={tmp_path / 'data'}")
    assert_one_line_error(out, "no-such-run", "list_runs.py")
