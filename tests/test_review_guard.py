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
