"""Review of run ownership (issue 17): a lock on a removed lock file, rewinds and wandb, a
failed launch that already rewound, a damaged run.json, file-system errors while owning a
run, a fork stopped before its first save, and `--check` of a run still training."""

import fcntl
import json
import os
from pathlib import Path

import pytest

from conftest import CPU_PROJECT, assert_one_line_error, dir_digest, lsa_world, run_in_process
from test_hostile_r3_owner import copy_run, pretrain  # the owner table's helpers

PROJECT = CPU_PROJECT


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """A dataset and a finished run `base` (6 steps, checkpoints at 3 and 6), built once."""
    return lsa_world(tmp_path_factory.mktemp("review"))


def rewind_argv(w, t, run):
    return pretrain(w, t, "logging.run_name=base", "train.rewind=true",
                    f"train.resume={run / 'checkpoints' / 'step_0000003'}", "train.max_steps=5", "train.eval_interval=5")


# ---------------------------------------------------------------------------------------------
# 1. A lock taken on a lock file that another launch removed meanwhile


def lock_file_swapped_after_open(monkeypatch, path, c_takes_new_one: bool):
    """Launch B opens .lock; before B's flock, A abandons (removes .lock) and, optionally,
    launch C creates a fresh .lock and locks it. Returns C's fd list (closed by the caller)."""
    import training.bookkeeping.run as run_module

    original, c_fds = run_module.open_lock_file, []

    def open_then_swap(p):
        fd = original(p)
        if not c_fds and p == path:
            os.unlink(path)
            c_fd = original(path) if c_takes_new_one else -1
            if c_takes_new_one:
                fcntl.flock(c_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                os.pwrite(c_fd, b"4242\n", 0)
            c_fds.append(c_fd)
        return fd

    monkeypatch.setattr(run_module, "open_lock_file", open_then_swap)
    return c_fds


def test_a_lock_on_a_removed_lock_file_does_not_own_a_run_that_another_launch_holds(tmp_path, monkeypatch):
    from training.config import ConfigError
    from training.bookkeeping.run import RunLock

    run_dir = tmp_path / "r"
    run_dir.mkdir()
    c_fds = lock_file_swapped_after_open(monkeypatch, run_dir / ".lock", c_takes_new_one=True)
    try:
        with pytest.raises(ConfigError, match="pid 4242"):
            RunLock(run_dir)
    finally:
        os.close(c_fds[0])


def test_a_lock_on_a_removed_lock_file_is_taken_again_on_the_file_there_now(tmp_path, monkeypatch):
    from training.bookkeeping.run import RunLock

    run_dir = tmp_path / "r"
    run_dir.mkdir()
    lock_file_swapped_after_open(monkeypatch, run_dir / ".lock", c_takes_new_one=False)
    lock = RunLock(run_dir)
    try:
        held, there = os.fstat(lock.fd), os.lstat(run_dir / ".lock")
        assert (held.st_dev, held.st_ino) == (there.st_dev, there.st_ino)
    finally:
        lock.release()


# ---------------------------------------------------------------------------------------------
# 2, 3. A rewind: a new wandb run with its parent; nothing moved aside by a launch that fails


def test_a_rewind_starts_a_new_wandb_run_and_records_its_parent(world, tmp_path, monkeypatch):
    import training.bookkeeping.run as run_module

    run = copy_run(world, tmp_path)
    original_restore, original_logger, given = run_module.restore, run_module.RunLogger, []

    def restore_with_a_wandb_id(state, ckpt):
        notes = original_restore(state, ckpt)
        state.wandb_id = "oldrun123"  # as a run logged to wandb would have saved it
        return notes

    def logger(*args, **kwargs):
        given.append(args[5] if len(args) > 5 else kwargs.get("wandb_id"))
        return original_logger(*args, **kwargs)

    monkeypatch.setattr(run_module, "restore", restore_with_a_wandb_id)
    monkeypatch.setattr(run_module, "RunLogger", logger)
    result = run_in_process(*rewind_argv(world, tmp_path, run))
    assert result.returncode == 0, result.stderr
    assert given == [None]  # not the rewound run's id: wandb would drop its earlier steps
    assert "new wandb run" in result.stdout
    record = json.loads((run / "run.json").read_text())
    assert record["parent"] == {"run": str(run), "checkpoint": "step_0000003", "step": 3, "rewind": True}


def test_a_rewind_that_fails_to_start_its_logger_moves_nothing_aside(world, tmp_path, monkeypatch):
    import training.bookkeeping.run as run_module

    run = copy_run(world, tmp_path)
    before = dir_digest(run / "checkpoints")

    def refusing_logger(*args, **kwargs):
        raise PermissionError(13, "Permission denied", str(run / "metrics.jsonl"))

    monkeypatch.setattr(run_module, "RunLogger", refusing_logger)
    result = run_in_process(*rewind_argv(world, tmp_path, run))
    assert_one_line_error(result, "metrics.jsonl", "Permission denied")
    assert dir_digest(run / "checkpoints") == before  # step 6 and `latest` where they were
    assert (run / "checkpoints" / "latest").read_text() == "step_0000006"


# ---------------------------------------------------------------------------------------------
# 4. A damaged run.json: one line before anything is written


@pytest.mark.parametrize("field,value", [("starts", "x"), ("created", "yesterday"), ("parent", [1]),
                                         ("wandb_id", 7)])
def test_a_damaged_run_file_refuses_a_resume_before_anything_is_written(world, tmp_path, field, value):
    run = copy_run(world, tmp_path)
    record = json.loads((run / "run.json").read_text())
    (run / "run.json").write_text(json.dumps({**record, field: value}))
    before = {name: dir_digest(run / name) if (run / name).is_dir() else (run / name).read_bytes()
              for name in ("config.json", "metrics.jsonl", "run.json", "checkpoints")}
    result = run_in_process(*pretrain(world, tmp_path, "logging.run_name=base", "train.resume=true",
                                      "train.max_steps=9"))
    assert_one_line_error(result, str(run / "run.json"), f"'{field}'")
    after = {name: dir_digest(run / name) if (run / name).is_dir() else (run / name).read_bytes() for name in before}
    assert after == before


# ---------------------------------------------------------------------------------------------
# 8. The file system refusing while a run is owned: one line every rank raises


def test_an_os_error_while_owning_a_run_is_a_one_line_error(world, tmp_path, monkeypatch):
    import training.bookkeeping.run as run_module
    from training.config import ConfigError
    from training.engine.distributed import World

    from conftest import tiny_config

    copy_run(world, tmp_path)
    denied = tmp_path / "runs" / PROJECT / "base" / "checkpoints"

    def check_denied(run_dir):
        raise PermissionError(13, "Permission denied", str(denied))

    monkeypatch.setattr(run_module, "check_run_dir", check_denied)
    cfg = tiny_config(tmp_path, "logging.run_name=base", "train.resume=true", "train.max_steps=9", data=world["data"])
    with pytest.raises(ConfigError, match="checkpoints: Permission denied"):  # a ReportedError: on_rank_zero forwards it
        run_module.plan_and_own(cfg, World())


# ---------------------------------------------------------------------------------------------
# 12. A fork stopped before its first save: the command the message names starts it again


def test_the_restart_hint_names_the_command_that_starts_the_same_fork_again(world, tmp_path):
    from conftest import tiny_config
    from training.loop import restart_hint
    from training.bookkeeping.run import plan_run

    run = copy_run(world, tmp_path)
    ckpt = run / "checkpoints" / "step_0000003"
    cfg = tiny_config(tmp_path, f"train.resume={ckpt}", "train.max_steps=5", data=world["data"])
    fork = plan_run(cfg).run_dir
    fork.mkdir()  # the fork was stopped before its first save
    (fork / "run.json").write_text(json.dumps({"starts": 1, "parent": {"run": str(run)}}))
    hint = restart_hint(fork)
    named = [a for a in hint.split() if a.startswith("logging.run_name=")]
    assert named == [f"logging.run_name={fork.name}"]
    again = plan_run(tiny_config(tmp_path, f"train.resume={ckpt}", "train.max_steps=5", named[0], data=world["data"]))
    assert again.run_dir == fork and again.parent["checkpoint"] == "step_0000003"


# ---------------------------------------------------------------------------------------------
# --check: a run still training, and the file system refusing


def test_check_refuses_a_resume_of_a_run_another_process_is_writing(world, tmp_path):
    run = copy_run(world, tmp_path)
    fd = os.open(run / ".lock", os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        os.pwrite(fd, b"4343\n", 0)
        result = run_in_process("pretrain.py", "--check", *pretrain(world, tmp_path, "logging.run_name=base",
                                                                    "train.resume=true", "train.max_steps=9")[1:])
    finally:
        os.close(fd)
    assert_one_line_error(result, "logging.run_name=base", "pid 4343")


def test_check_reports_an_os_error_in_one_line(world, tmp_path, monkeypatch):
    import training.bookkeeping.run as run_module

    copy_run(world, tmp_path)
    denied = tmp_path / "runs" / PROJECT / "base" / "checkpoints"

    def check_denied(run_dir):
        raise PermissionError(13, "Permission denied", str(denied))

    monkeypatch.setattr(run_module, "check_run_dir", check_denied)
    result = run_in_process("pretrain.py", "--check", *pretrain(world, tmp_path, "logging.run_name=base",
                                                                "train.resume=true", "train.max_steps=9")[1:])
    assert_one_line_error(result, str(denied), "Permission denied")


def test_a_level_made_by_another_launch_meanwhile_does_not_stop_the_levels_below(tmp_path, monkeypatch):
    """Two launches into one new runs dir: the other makes `runs/` between this one's look and
    its mkdir. This launch must still make the project and run directories (it used to stop at
    the first FileExistsError and then refuse its own missing parent)."""
    from training.bookkeeping.run import make_run_dir

    run_dir = tmp_path / "runs" / "project" / "run"
    real_mkdir = Path.mkdir

    def racing_mkdir(self, *args, **kwargs):
        if self == tmp_path / "runs" and not self.exists():
            real_mkdir(self)  # the other launch, just before us
        return real_mkdir(self, *args, **kwargs)

    monkeypatch.setattr(Path, "mkdir", racing_mkdir)
    made = make_run_dir(run_dir)
    assert run_dir.is_dir()
    assert made == (tmp_path / "runs" / "project", run_dir)  # not `runs`: the other launch made it
