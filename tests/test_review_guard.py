"""Second review of the guards (issue 17): Hydra's logging file handlers and the replace guard's
recovery of a parked directory.

A --config-dir YAML could name a logging.FileHandler with any filename and mode 'w'; Hydra
configures job logging before training and empties that file. Now a file handler may only
append to a .log file directly in Hydra's output dir. The replace guard's recovery now reports
its own errors in one line, and recovery and the fallback swap of one target take the same lock.
"""

import textwrap

import pytest

from conftest import REPO, assert_one_line_error, run_in_process
from test_hostile_r3_hydra import tree, with_dir
from training.hydra_guard import composed_problem

HANDLER = "logging.FileHandler"
OUT = "${hydra.runtime.output_dir}"


def logging_with(handler: dict) -> dict:
    return {"hydra": {"job_logging": {"handlers": {"file": handler}}}}


@pytest.mark.parametrize("handler, key", [
    ({"class": HANDLER, "filename": "/home/u/.bashrc", "mode": "w"}, "handlers.file.filename"),
    ({"class": HANDLER, "filename": "/home/u/.bashrc"}, "handlers.file.filename"),
    ({"class": HANDLER, "filename": f"{OUT}/../../.bashrc.log"}, "handlers.file.filename"),
    ({"class": HANDLER, "filename": f"{OUT}/sub/x.log"}, "handlers.file.filename"),
    ({"class": HANDLER, "filename": f"{OUT}/.bashrc"}, "handlers.file.filename"),
    ({"class": HANDLER, "filename": f"/etc/{OUT}/x.log"}, "handlers.file.filename"),
    ({"class": HANDLER}, "handlers.file.filename"),
    ({"class": HANDLER, "filename": f"{OUT}/x.log", "mode": "w"}, "handlers.file.mode"),
    ({"class": HANDLER, "filename": f"{OUT}/x.log", "mode": "w+"}, "handlers.file.mode"),
    ({"class": "logging.handlers.RotatingFileHandler", "filename": "/tmp/x.log"}, "handlers.file.filename"),
])
def test_a_file_handler_writing_elsewhere_is_refused(handler, key):
    path, why = composed_problem(logging_with(handler))
    assert path == f"hydra.job_logging.{key}" and "\n" not in why


def test_a_job_name_that_leaves_the_output_dir_is_refused():
    raw = logging_with({"class": HANDLER, "filename": f"{OUT}/${{hydra.job.name}}.log"})
    assert composed_problem(raw) is None  # Hydra's default log file
    raw["hydra"]["job"] = {"name": "../../victim"}
    assert composed_problem(raw)[0] == "hydra.job.name"


@pytest.mark.parametrize("handler", [
    {"class": HANDLER, "filename": f"{OUT}/${{hydra.job.name}}.log"},
    {"class": HANDLER, "filename": "${hydra:runtime.output_dir}/train.log", "mode": "a"},
])
def test_a_log_file_in_the_output_dir_passes(handler):
    assert composed_problem(logging_with(handler)) is None


def test_a_config_dir_file_handler_does_not_empty_a_user_file(tmp_path, monkeypatch):
    victim = tmp_path / "victim.txt"
    victim.write_text("precious\n")
    body = textwrap.dedent(f"""\
        hydra:
          job_logging:
            version: 1
            handlers:
              file: {{class: logging.FileHandler, filename: '{victim}', mode: w}}
            root: {{handlers: [file]}}
        """)
    argv = with_dir(body)(tmp_path)
    before, repo_before = tree(tmp_path), sorted(p.name for p in REPO.iterdir())
    monkeypatch.chdir(tmp_path)
    result = run_in_process("pretrain.py", *argv)
    assert_one_line_error(result, "confs/evil.yaml", "hydra.job_logging.handlers.file.filename", str(victim))
    assert victim.read_text() == "precious\n"
    assert tree(tmp_path) == before and sorted(p.name for p in REPO.iterdir()) == repo_before


@pytest.mark.parametrize("value", [".", ".hydra", "../x"])
def test_an_output_subdir_is_refused(value):
    path, why = composed_problem({"hydra": {"output_subdir": value}})
    assert path == "hydra.output_subdir" and "config.yaml" in why
    assert composed_problem({"hydra": {"output_subdir": None}}) is None


def test_an_output_subdir_override_is_refused_before_hydra_writes(tmp_path, monkeypatch):
    (tmp_path / "config.yaml").write_text("mine\n")
    before = tree(tmp_path)
    monkeypatch.chdir(tmp_path)
    result = run_in_process("pretrain.py", "--config-name", "cfg_lsa_cpu", "hydra.output_subdir=.")
    assert_one_line_error(result, "hydra.output_subdir=.", "hydra.output_subdir")
    assert tree(tmp_path) == before


# ---------------------------------------------------------------------------------------------
# The replace guard: recovery errors, and recovery racing a live fallback swap

import os  # noqa: E402
import shutil  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402

from conftest import build_lsa, dir_digest  # noqa: E402

OLD_MARK = '["<old>"]\n'
RECOVER_IN_ANOTHER_PROCESS = """
import fcntl, sys
from pathlib import Path
real_flock = fcntl.flock
def flock(fd, op):  # tells the test that this process now waits for (or takes) the swap lock
    if op == fcntl.LOCK_EX:
        Path(sys.argv[2]).touch()
    return real_flock(fd, op)
fcntl.flock = flock
from dataset.replace_guard import DATASET, check_target
check_target(sys.argv[1], DATASET, overwrite=True)
"""


def old_dataset(t):
    """A dataset this project built, marked so that the old one is told from a new build."""
    target = t / "data"
    build_lsa(target, n=3, num_train=10, num_test=4, num_aug=1)
    (target / "identifiers.json").write_text(OLD_MARK)
    return target


def wait_for(path, proc, deadline_s=120):
    """Wait until `path` exists (the other process got there), failing if it ends first or never does."""
    end = time.monotonic() + deadline_s
    while not path.exists():
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < end, f"{path} never appeared"
        time.sleep(0.01)


def test_recovery_waits_for_a_live_fallback_swap(tmp_path, monkeypatch):
    """Builder A has put the new dataset in place, its old one still parked; builder B's check
    finds the parked .old. B must wait for A's swap lock instead of deleting it, and A ends well."""
    import fcntl

    import dataset.replace_guard as guard

    target = old_dataset(tmp_path)
    lock = tmp_path / f".data{guard.SWAP_LOCK}"
    event = tmp_path.parent / f"{tmp_path.name}-b-waits"
    monkeypatch.setattr(guard, "_exchange", lambda a, b: False)
    real_replace, seen = os.replace, {}

    def replace(src, dst):
        if str(src).endswith(guard.PARKED) and str(dst) != str(target):  # A's third rename, about to run
            probe = os.open(lock, os.O_RDWR)
            try:
                with pytest.raises(BlockingIOError):  # A holds the lock across its renames
                    fcntl.flock(probe, fcntl.LOCK_EX | fcntl.LOCK_NB)
            finally:
                os.close(probe)
            seen["b"] = subprocess.Popen([sys.executable, "-c", RECOVER_IN_ANOTHER_PROCESS, str(target), str(event)],
                                         cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            wait_for(event, seen["b"])  # B has seen the parked .old and asks for the lock
        real_replace(src, dst)

    monkeypatch.setattr(guard.os, "replace", replace)
    build_lsa(target, n=3, num_train=12, num_test=4, num_aug=1, overwrite=True)
    monkeypatch.undo()
    out, err = seen["b"].communicate(timeout=300)
    assert seen["b"].returncode == 0, err
    assert "removed" not in err and "restored" not in err  # B found nothing left to recover
    assert (target / "identifiers.json").read_text() != OLD_MARK  # A's new dataset is in place
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data"]  # no .old, no tmp, no lock file left


def test_a_third_rename_failure_says_the_new_dataset_is_in_place(tmp_path, monkeypatch):
    import dataset.replace_guard as guard
    from core.errors import DatasetError

    target = old_dataset(tmp_path)
    monkeypatch.setattr(guard, "_exchange", lambda a, b: False)
    real_replace = os.replace

    def replace(src, dst):
        if str(src).endswith(guard.PARKED) and str(dst) != str(target):
            raise PermissionError(13, "Permission denied", str(src))
        real_replace(src, dst)

    monkeypatch.setattr(guard.os, "replace", replace)
    with pytest.raises(DatasetError) as caught:
        build_lsa(target, n=3, num_train=12, num_test=4, num_aug=1, overwrite=True)
    message = str(caught.value)
    assert "is in place" in message and ".old" in message and "nothing was changed" not in message
    assert "\n" not in message
    monkeypatch.undo()
    assert (target / "identifiers.json").read_text() != OLD_MARK
    guard.check_target(target, guard.DATASET, overwrite=True)  # the next write removes the parked one
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data"]


def test_a_recovery_error_is_one_line(tmp_path, monkeypatch):
    import dataset.replace_guard as guard

    target = old_dataset(tmp_path)
    shutil.copytree(target, tmp_path / ".data.tmp-abc.old")
    before = dir_digest(tmp_path)

    def rmtree(path, *args, **kwargs):
        raise PermissionError(13, "Permission denied", str(path))

    monkeypatch.setattr(guard.shutil, "rmtree", rmtree)
    result = run_in_process("-m", "dataset.build_lsa_dataset", "--output-dir", str(target), "--overwrite",
                            "--no-progress", "--n", "3", "--num-train", "10", "--num-test", "4", "--num-aug", "1")
    assert_one_line_error(result, "--output-dir", str(target), "interrupted replacement", "Permission denied")
    assert dir_digest(tmp_path) == before  # nothing changed, no lock file left
