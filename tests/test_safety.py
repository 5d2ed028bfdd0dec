"""Safety beyond the hostile-input table: what --overwrite will replace, where a resumed run
writes, signals in every phase, full disks, concurrent dataset builds, and a property-based
test that mutates dataset.json, meta.json and state.pt fields."""

import json
import os
import resource
import shutil
import signal
import subprocess
import sys

import numpy as np
import pytest

from conftest import (
    CPU_PROJECT, REPO, assert_one_line_error, build_lsa, dir_digest, lsa_world, pretrain_argv, run_in_process,
)
from training.engine.checkpoint import resolve_checkpoint

PROJECT = CPU_PROJECT
pretrain = pretrain_argv


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    return lsa_world(tmp_path_factory.mktemp("safety"))


def subprocess_env():
    path = os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH")) if p)
    return {**os.environ, "PYTHONPATH": path, "WANDB_MODE": "disabled", "PYTHONUNBUFFERED": "1"}


# ---------------------------------------------------------------------------------------------
# --overwrite: what it does replace


def test_overwrite_replaces_a_dataset_this_project_built(tmp_path):
    out = tmp_path / "d"
    build_lsa(out, n=3, num_train=10, num_test=4, num_aug=1)
    assert json.loads((out / "train" / "dataset.json").read_text())["written_by"] == "tinyrecursion"
    result = run_in_process("-m", "dataset.build_lsa_dataset", "--output-dir", str(out), "--overwrite", "--no-progress",
                            "--n", "3", "--num-train", "12", "--num-test", "4", "--num-aug", "1")
    assert result.returncode == 0, result.stderr
    assert json.loads((out / "train" / "dataset.json").read_text())["total_groups"] == 12
    # A dataset this project wrote before the marker existed (task and seed, no marker) too.
    for split in ("train", "test"):
        meta = json.loads((out / split / "dataset.json").read_text())
        del meta["written_by"]
        (out / split / "dataset.json").write_text(json.dumps(meta))
    result = run_in_process("-m", "dataset.build_lsa_dataset", "--output-dir", str(out), "--overwrite", "--no-progress",
                            "--n", "3", "--num-train", "10", "--num-test", "4", "--num-aug", "1")
    assert result.returncode == 0, result.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["d"]  # no temporary directories left


# ---------------------------------------------------------------------------------------------
# Where a resumed run writes


def test_resume_from_a_checkpoint_elsewhere_writes_into_the_configured_run(world, tmp_path):
    elsewhere = tmp_path / "backup" / "somerun" / "checkpoints"
    shutil.copytree(resolve_checkpoint(world["run"]), elsewhere / "step_0000006")
    (elsewhere / "latest").write_text("step_0000006")
    before = dir_digest(tmp_path / "backup")
    runs = tmp_path / "runs"
    result = run_in_process(*pretrain(world["data"], runs, "logging.run_name=continued", "train.max_steps=9",
                                      f"train.resume={elsewhere.parent}"))
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout.strip().splitlines()[-1])["step"] == 9
    assert dir_digest(tmp_path / "backup") == before  # the checkpoint's surroundings are only read
    run = runs / PROJECT / "continued"
    assert json.loads((resolve_checkpoint(run) / "meta.json").read_text())["step"] == 9
    assert [r["step"] for r in map(json.loads, (run / "metrics.jsonl").read_text().splitlines())][0] > 6
    # Without a run name it gets a fresh one, still inside runs_dir/project.
    result = run_in_process(*pretrain(world["data"], runs, "train.max_steps=7", f"train.resume={elsewhere.parent}"))
    assert result.returncode == 0, result.stderr
    assert sorted(p.name for p in (runs / PROJECT).iterdir() if p.name != "continued") != []
    assert sorted(p.parent for p in runs.rglob("metrics.jsonl")) == sorted((runs / PROJECT).iterdir())
    # A name that already holds another run is refused.
    result = run_in_process(*pretrain(world["data"], runs, "logging.run_name=continued", f"train.resume={elsewhere}"))
    assert_one_line_error(result, "already holds a run")


def test_resume_with_another_batch_size_rebuilds_the_carry(world, tmp_path):
    shutil.copytree(world["run"], tmp_path / "runs" / PROJECT / "base")
    result = run_in_process(*pretrain(world["data"], tmp_path / "runs", "logging.run_name=base", "train.resume=true",
                                      "train.global_batch_size=16", "train.max_steps=8"))
    assert result.returncode == 0, result.stderr
    assert "ACT carry is rebuilt" in result.stdout
    assert json.loads(result.stdout.strip().splitlines()[-1])["step"] == 8


# ---------------------------------------------------------------------------------------------
# Signals in every phase (sent by the process to itself at a chosen point: deterministic)


def signal_when_called(monkeypatch, module, name, sig=signal.SIGTERM, on_call=1):
    original = getattr(module, name)
    calls = {"n": 0}

    def wrapper(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == on_call:
            os.kill(os.getpid(), sig)
        return original(*args, **kwargs)

    monkeypatch.setattr(module, name, wrapper)
    return calls


def test_sigterm_while_building_the_dataset_leaves_nothing(tmp_path, monkeypatch):
    import dataset.build_lsa_dataset as lsa

    signal_when_called(monkeypatch, lsa, "augment")
    data, runs = tmp_path / "data" / "lsa", tmp_path / "runs"
    result = run_in_process(*pretrain(data, runs, "logging.run_name=r",
                                      "data.build_args={n: 3, max_cost: 9, num_train: 20, num_test: 5, num_aug: 1, seed: 0}"))
    assert result.returncode == 128 + signal.SIGTERM
    assert len(result.stderr.strip().splitlines()) == 1 and "interrupted by SIGTERM" in result.stderr
    assert not data.exists() and not runs.exists()
    assert [p.name for p in data.parent.iterdir()] == [".lsa.lock"]  # no temporary directory left


def test_sigint_in_a_builder_exits_with_one_line(tmp_path, monkeypatch):
    import dataset.build_lsa_dataset as lsa

    signal_when_called(monkeypatch, lsa, "augment", signal.SIGINT)
    result = run_in_process("-m", "dataset.build_lsa_dataset", "--output-dir", str(tmp_path / "out"), "--no-progress",
                            "--n", "3", "--num-train", "10", "--num-test", "4")
    assert result.returncode == 128 + signal.SIGINT
    assert result.stderr.strip().splitlines() == ["error: interrupted by SIGINT; nothing half-written was left behind"]
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("phase", ["eval_at_start", "first_step"])
def test_sigterm_before_the_first_step_leaves_a_restartable_run(world, tmp_path, monkeypatch, phase):
    import training.loop as loop

    if phase == "eval_at_start":
        signal_when_called(monkeypatch, loop, "evaluate")
    else:
        signal_when_called(monkeypatch, loop, "train_step")
    argv = pretrain(world["data"], tmp_path / "runs", "logging.run_name=r", "train.eval_at_start=true",
                    "train.max_steps=4", "train.eval_interval=4")
    result = run_in_process(*argv)
    assert result.returncode == 128 + signal.SIGTERM, result.stderr
    assert result.stderr.strip().splitlines()[-1].startswith("error: interrupted by SIGTERM before the first training step")
    run = tmp_path / "runs" / PROJECT / "r"
    monkeypatch.undo()
    if phase == "eval_at_start":  # no checkpoint: the same command starts it again
        assert not (run / "checkpoints").exists() and "same command with logging.run_name=r starts it again" in result.stderr
        again = run_in_process(*argv)
    else:  # evaluation at start wrote a step-0 checkpoint: it resumes from there
        assert "train.resume=true" in result.stderr
        again = run_in_process(*argv, "train.resume=true")
    assert again.returncode == 0, again.stderr
    assert json.loads(again.stdout.strip().splitlines()[-1])["step"] == 4


def test_sigterm_during_a_training_evaluation_checkpoints(world, tmp_path, monkeypatch):
    import training.loop as loop

    signal_when_called(monkeypatch, loop, "evaluate")
    result = run_in_process(*pretrain(world["data"], tmp_path / "runs", "logging.run_name=r", "train.max_steps=8",
                                      "train.eval_interval=4"))
    assert result.returncode == 0, result.stderr
    ckpt = resolve_checkpoint(tmp_path / "runs" / PROJECT / "r")
    assert json.loads((ckpt / "meta.json").read_text())["preempted"] is True
    assert json.loads(result.stdout.strip().splitlines()[-1])["step"] == 4


# ---------------------------------------------------------------------------------------------
# Full disks (a file-size limit in a subprocess: writes past it fail with EFBIG)


def run_with_file_limit(args, limit):
    def preexec():
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    return subprocess.run([sys.executable, *args], cwd=REPO, capture_output=True, text=True, timeout=300,
                          env=subprocess_env(), preexec_fn=preexec)


@pytest.mark.slow
def test_full_disk_while_writing_metrics(world, tmp_path):
    result = run_with_file_limit(pretrain(world["data"], tmp_path / "runs", "logging.run_name=r", "train.max_steps=400",
                                          "train.log_every=1", "train.save_checkpoints=false"), 16 * 1024)
    assert_one_line_error(result, "metrics.jsonl", "cannot write")


@pytest.mark.slow
def test_full_disk_during_a_save_keeps_earlier_checkpoints(world, tmp_path):
    run = tmp_path / "runs" / PROJECT / "base"
    shutil.copytree(world["run"], run)
    before = dir_digest(run / "checkpoints")
    result = run_with_file_limit(pretrain(world["data"], tmp_path / "runs", "logging.run_name=base", "train.resume=true",
                                          "train.max_steps=9", "train.eval_interval=3"), 64 * 1024)
    assert_one_line_error(result, "cannot write checkpoint")
    assert dir_digest(run / "checkpoints") == before


def test_full_disk_while_writing_a_dataset(tmp_path):
    result = run_with_file_limit(["-m", "dataset.build_lsa_dataset", "--output-dir", str(tmp_path / "out"),
                                  "--no-progress", "--n", "6", "--num-train", "500", "--num-test", "10"], 8 * 1024)
    assert_one_line_error(result, "--output-dir", "cannot write the dataset")
    assert list(tmp_path.iterdir()) == []


# ---------------------------------------------------------------------------------------------
# Concurrent runs that need the same missing dataset


@pytest.mark.slow
def test_concurrent_runs_build_a_missing_dataset_once(tmp_path):
    data, runs = tmp_path / "data" / "lsa", tmp_path / "runs"
    build = "data.build_args={n: 4, max_cost: 9, num_train: 400, num_test: 20, num_aug: 4, seed: 0}"
    procs = [subprocess.Popen([sys.executable, *pretrain(data, runs, f"logging.run_name=r{i}", build, "train.max_steps=2")],
                              cwd=REPO, env=subprocess_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for i in range(2)]
    outputs = [p.communicate(timeout=300) for p in procs]
    for proc, (out, err) in zip(procs, outputs):
        assert proc.returncode == 0, err
    assert sum("Building dataset" in out for out, _ in outputs) == 1  # one built it; the other waited or found it
    assert json.loads((data / "train" / "dataset.json").read_text())["total_groups"] == 400


# ---------------------------------------------------------------------------------------------
# Sudoku CSV import


def test_sudoku_csv_with_a_byte_order_mark_imports(tmp_path):
    from dataset.sudoku_solver import generate_puzzle

    rng, rows = np.random.default_rng(0), []
    while len(rows) < 6:
        made = generate_puzzle(rng, 30, 32)
        if made:
            rows.append(made)
    text = "source,question,answer,rating\n" + "".join(
        f"g,{''.join(str(d) if d else '.' for d in p)},{''.join(map(str, s))},{r}\n" for p, s, r in rows)
    (tmp_path / "p.csv").write_bytes("\ufeff".encode() + text.encode())
    result = run_in_process("-m", "dataset.build_sudoku_dataset", "--output-dir", str(tmp_path / "out"),
                            "--source-csv", str(tmp_path / "p.csv"), "--num-test", "2", "--num-aug", "1", "--no-progress")
    assert result.returncode == 0, result.stderr
    assert json.loads((tmp_path / "out" / "train" / "dataset.json").read_text())["total_groups"] == 4


# ---------------------------------------------------------------------------------------------
# Found by a hostile tester after the first pass


def test_a_second_process_with_the_same_run_name_is_refused(world, tmp_path):
    """While one process writes a run (it holds the run's lock), another with the same name, a
    new run or a resume, is refused before it touches anything."""
    from training.bookkeeping.run import RunLock

    run, fresh = tmp_path / "runs" / PROJECT / "base", tmp_path / "runs" / PROJECT / "fresh"
    shutil.copytree(world["run"], run)
    fresh.mkdir()  # a new run that has not written its first checkpoint yet
    before = dir_digest(run)
    held = [RunLock(run), RunLock(fresh)]  # stand for the first processes
    try:
        for name, extra in (("base", ["train.resume=true"]), ("fresh", [])):
            result = run_in_process(*pretrain(world["data"], tmp_path / "runs", f"logging.run_name={name}",
                                              "train.max_steps=9", *extra))
            assert_one_line_error(result, "another process", "is writing")
    finally:
        for lock in held:
            lock.release()
    assert dir_digest(run) == before and [p.name for p in fresh.iterdir()] == [".lock"]
    resumed = run_in_process(*pretrain(world["data"], tmp_path / "runs", "logging.run_name=base", "train.resume=true",
                                       "train.max_steps=8"))
    assert resumed.returncode == 0, resumed.stderr


@pytest.mark.parametrize("sent_to", ["this thread", "the process", "another thread"])
def test_overwrite_swap_without_an_atomic_exchange_holds_signals(tmp_path, monkeypatch, sent_to):
    """Where the system cannot exchange two directories in one step, a signal that arrives
    between the two renames is held back until the new dataset is in place, whichever thread
    the system hands it to (a SIGTERM may land on any thread, e.g. one of OpenBLAS's). The
    signal is sent from inside the first rename, so this needs no timing and no thread count."""
    import threading

    import dataset.replace_guard as guard

    out = tmp_path / "ds"
    build_lsa(out, n=3, num_train=10, num_test=4, num_aug=1)
    monkeypatch.setattr(guard, "_exchange", lambda a, b: False)
    release = threading.Event()
    other = threading.Thread(target=release.wait)  # started now, so it does not inherit a signal mask set later
    other.start()
    real_replace, sent = os.replace, []

    def replace(src, dst):
        real_replace(src, dst)
        if str(dst).endswith(guard.PARKED) and not sent:  # the old dataset has just been moved aside
            sent.append(sent_to)
            if sent_to == "this thread":
                signal.pthread_kill(threading.get_ident(), signal.SIGTERM)
            elif sent_to == "the process":  # the system picks the thread
                os.kill(os.getpid(), signal.SIGTERM)
            else:
                signal.pthread_kill(other.ident, signal.SIGTERM)
                release.set()
                other.join()  # the other thread has taken the signal: its handler is due now

    monkeypatch.setattr(guard.os, "replace", replace)
    try:
        result = run_in_process("-m", "dataset.build_lsa_dataset", "--output-dir", str(out), "--overwrite",
                                "--no-progress", "--n", "3", "--num-train", "12", "--num-test", "4", "--num-aug", "1")
    finally:
        release.set()
        other.join()
    assert sent == [sent_to]
    assert result.returncode == 128 + signal.SIGTERM, result.stderr  # the signal still ends the build, after the swap
    assert json.loads((out / "train" / "dataset.json").read_text())["total_groups"] == 12  # the new one, whole
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ds"]


def test_a_signal_while_a_checkpoint_loads_is_not_blamed_on_the_file(world, tmp_path, monkeypatch):
    import training.engine.checkpoint as checkpoint

    shutil.copytree(world["run"], tmp_path / "runs" / PROJECT / "base")
    signal_when_called(monkeypatch, checkpoint.torch, "load", on_call=3)
    result = run_in_process(*pretrain(world["data"], tmp_path / "runs", "logging.run_name=base", "train.resume=true",
                                      "train.max_steps=9"))
    assert result.returncode == 128 + signal.SIGTERM and "cannot load" not in result.stderr, result.stderr


def test_checkpoint_backups_and_broken_metric_lines_do_not_stop_a_resume(world, tmp_path):
    """A copy the user made inside checkpoints/ is left alone (and never pruned); metric lines
    that are not records go aside with the stale ones."""
    run = tmp_path / "runs" / PROJECT / "base"
    shutil.copytree(world["run"], run)
    backup = run / "checkpoints" / "step_0000006.bak"
    shutil.copytree(resolve_checkpoint(run), backup)
    with open(run / "metrics.jsonl", "ab") as f:
        f.write(b'5\n{"step": null}\n\xff\xfe\n')
    result = run_in_process(*pretrain(world["data"], tmp_path / "runs", "logging.run_name=base", "train.resume=true",
                                      "train.max_steps=12", "train.eval_interval=3", "train.keep_checkpoints=1"))
    assert result.returncode == 0, result.stderr
    assert backup.is_dir()
    stale = "".join(p.read_text(errors="replace") for p in run.glob("metrics.stale-*.jsonl"))
    assert '{"step": null}' in stale and all(isinstance(json.loads(line)["step"], int)
                                             for line in (run / "metrics.jsonl").read_text().splitlines())


def test_a_signal_during_start_up_is_one_line(capsys):
    """Entry points install this handler first, before their heavy imports."""
    from core.early_signals import _exit

    with pytest.raises(SystemExit) as exit_info:
        _exit(signal.SIGINT, None)
    assert exit_info.value.code == 128 + signal.SIGINT
    assert capsys.readouterr().err == "error: interrupted by SIGINT during start-up; nothing was written\n"
