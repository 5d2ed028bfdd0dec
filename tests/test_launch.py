"""train_lsa.sh with the real `screen` (CI installs it), and pretrain.py's own flags:
--help, --check, --cfg and -m validate like a run, and sweep jobs carry their number."""

import json
import os
import shutil
import subprocess
import sys
import time
import uuid

import pytest

from conftest import REPO, assert_one_line_error, build_lsa, run_in_process, run_module

pytestmark = pytest.mark.slow  # not in the fast subset (pytest -m "not slow")

TINY = ["data.build_args.num_train=40", "data.build_args.num_test=10", "train.global_batch_size=16",
        "arch.hidden_size=32", "arch.num_heads=2"]


def wait_for(condition, what: str, timeout: float = 180.0, poll: float = 0.1):
    """Poll until `condition()` is truthy (an event, not a fixed sleep); fail after `timeout`."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(poll)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


@pytest.fixture(scope="module")
def screen():
    """The screen binary; installed with apt-get when missing and possible (CI does it in .ci/run)."""
    if shutil.which("screen") is None and shutil.which("apt-get") and os.geteuid() == 0:
        subprocess.run(["apt-get", "install", "-y", "-qq", "screen"], capture_output=True, timeout=600)
    path = shutil.which("screen")
    if path is None:
        pytest.skip("screen is not installed and cannot be installed here")
    return path


def session_alive(screen, name):
    listing = subprocess.run([screen, "-ls"], capture_output=True, text=True).stdout
    return any(field.split(".", 1)[-1] == name for line in listing.splitlines() for field in line.split()[:1])


def launch(tmp_path, name, *overrides, **env_extra):
    env = {**os.environ, "CONFIG": "cfg_lsa_cpu", "RUN_NAME": name, "PYTHON": sys.executable,
           "LOG_DIR": str(tmp_path / "logs"), "WANDB_MODE": "disabled", **env_extra}
    return subprocess.run(
        ["bash", str(REPO / "train_lsa.sh"), f"data.path={tmp_path / 'data'}", f"logging.runs_dir={tmp_path / 'runs'}",
         *TINY, *overrides], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)


def test_train_lsa_sh_runs_in_screen_and_stops_the_documented_way(tmp_path, screen):
    name = f"trmtest-{uuid.uuid4().hex[:8]}"
    log = tmp_path / "logs" / f"{name}.log"
    run_dir = tmp_path / "runs" / "trm-lsa-cpu" / name
    try:
        started = launch(tmp_path, name, "train.max_steps=1000000", "train.eval_interval=5", "train.log_every=5")
        assert started.returncode == 0, started.stderr
        assert session_alive(screen, name)
        hints = started.stdout
        assert f"screen -r {name}" in hints and "-X stuff $'\\003'" in hints and "train.eval_interval=5" in hints
        assert f"RUN_NAME={name}" in hints and hints.count("train.max_steps=1000000") == 2  # continue + foreground
        wait_for(lambda: "step 5:" in log.read_text(), "the first evaluation in the log")
        size = log.stat().st_size
        wait_for(lambda: log.stat().st_size > size, "the log to grow")

        subprocess.run([screen, "-S", name, "-X", "stuff", "\x03"], check=True)  # the README's way to stop
        wait_for(lambda: not session_alive(screen, name), "the session to end after Ctrl-C")
    finally:
        if session_alive(screen, name):
            subprocess.run([screen, "-S", name, "-X", "quit"])
    text = log.read_text()
    assert "\r" not in text and "%|" not in text and "\x1b" not in text  # no progress-bar frames
    assert "stopped at step" in text and json.loads(text.strip().splitlines()[-1])["preempted"] is True
    assert (run_dir / "checkpoints" / "latest").is_file()


def test_train_lsa_sh_checks_before_starting_screen(tmp_path, screen):
    name = f"trmtest-{uuid.uuid4().hex[:8]}"
    try:
        bad_key = launch(tmp_path, name, "+train.lrr=1")
        assert_one_line_error(bad_key, "train.lrr")
        taken_dir = tmp_path / "runs" / "trm-lsa-cpu" / name  # a run with a checkpoint is taken
        (taken_dir / "checkpoints" / "step_0000001").mkdir(parents=True)
        (taken_dir / "checkpoints" / "latest").write_text("step_0000001")
        (taken_dir / "config.json").write_text("{}")
        taken = launch(tmp_path, name)
        assert_one_line_error(taken, f"logging.run_name={name}", "already holds a run")
        missing = launch(tmp_path, name + "-x", "train.resume=true")
        assert_one_line_error(missing, "train.resume=true")
        assert not session_alive(screen, name) and not session_alive(screen, name + "-x")
        assert not (tmp_path / "logs").exists()
    finally:
        for session in (name, name + "-x"):
            if session_alive(screen, session):
                subprocess.run([screen, "-S", session, "-X", "quit"])


def test_train_lsa_sh_reports_a_run_that_dies_at_start(tmp_path, screen):
    """Weights that cannot be loaded pass the check (it reads no weights: a broken dataset is
    its business now); the run's own error reaches the terminal and the script fails."""
    build_lsa(tmp_path / "data")
    weights = tmp_path / "ckpt"
    weights.mkdir()
    (weights / "model.pt").write_bytes(b"not a checkpoint")
    name = f"trmtest-{uuid.uuid4().hex[:8]}"
    try:
        result = launch(tmp_path, name, f"train.load_checkpoint={weights}")
    finally:
        if session_alive(screen, name):
            subprocess.run([screen, "-S", name, "-X", "quit"])
    assert result.returncode == 1
    assert "stopped before training started" in result.stderr and "model.pt" in result.stderr


def test_train_lsa_sh_without_screen_keeps_the_overrides():
    env = {**os.environ, "SCREEN": "/nonexistent/screen", "CONFIG": "cfg_lsa_cpu", "RUN_NAME": "r1"}
    result = subprocess.run(["bash", str(REPO / "train_lsa.sh"), "train.max_steps=7", "optim.lr=3e-4"], env=env,
                            capture_output=True, text=True, timeout=60)
    assert_one_line_error(result, "screen", "--config-name cfg_lsa_cpu logging.run_name=r1 train.max_steps=7 optim.lr=3e-4")


def test_pretrain_help_lists_the_configs():
    result = run_in_process("pretrain.py", "--help")
    assert result.returncode == 0
    for name in [p.stem for p in (REPO / "config").glob("cfg_*.yaml")] + ["arch=trm_mlp", "--check", "-m"]:
        assert name in result.stdout, name


@pytest.mark.parametrize("flags", [["--cfg", "job"], ["-m"]])
def test_hydra_flags_validate_like_a_run(flags):
    result = run_in_process("pretrain.py", "--config-name", "cfg_lsa_cpu", "+train.lrr=1", *flags)
    assert_one_line_error(result, "train.lrr")


@pytest.mark.parametrize("argv, overrides, flags", [
    (["--cfg", "job", "a=1"], ["a=1"], {"--cfg"}),
    (["-c", "job", "a=1"], ["a=1"], {"-c"}),
    (["--cfg=job", "a=1"], ["a=1"], {"--cfg"}),
    (["--info", "config", "a=1"], ["a=1"], {"--info"}),
    (["--info", "a=1"], ["a=1"], {"--info"}),  # --info's topic is optional
    (["-cn", "cfg_arith", "-m", "a=1,2"], ["a=1,2"], {"-cn", "-m"}),
])
def test_flag_values_are_not_taken_for_overrides(argv, overrides, flags):
    from conftest import REPO

    sys.path.insert(0, str(REPO))
    import pretrain

    config_name, parsed, seen = pretrain.parse_argv(argv)
    assert parsed == overrides and seen == flags
    assert config_name == ("cfg_arith" if "-cn" in argv else "cfg_lsa")
    assert pretrain.expand_sweeps(["a=1,2", "b=x"]) == [["a=1", "b=x"], ["a=2", "b=x"]]


def test_cfg_job_prints_a_valid_config():
    result = run_module("pretrain.py", "--config-name", "cfg_lsa_cpu", "--cfg", "job", "train.max_steps=5")
    assert result.returncode == 0, result.stderr
    assert "max_steps: 5" in result.stdout


def test_multirun_validates_every_job_and_names_runs_by_job_number(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # where Hydra would put multirun/
    bad = run_in_process("pretrain.py", "--config-name", "cfg_lsa_cpu", "-m", "optim.lr=1e-3,-1")
    assert_one_line_error(bad, "optim.lr")
    assert not (tmp_path / "multirun").exists()  # refused before the first job ran
    result = run_module(str(REPO / "pretrain.py"), "--config-name", "cfg_lsa_cpu", "-m", "train.max_steps=2,3", *TINY,
                        "train.eval_interval=2", "logging.run_name=sw", f"data.path={tmp_path / 'data'}",
                        f"logging.runs_dir={tmp_path / 'runs'}", "logging.progress=false", cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "job 0: run sw-0 (train.max_steps=2" in result.stdout and "job 1: run sw-1 (train.max_steps=3" in result.stdout
    steps = {p.name: json.loads((p / "config.json").read_text())["train"]["max_steps"]
             for p in (tmp_path / "runs" / "trm-lsa-cpu").iterdir() if not p.name.startswith(".")}
    assert steps == {"sw-0": 2, "sw-1": 3}
    assert sorted(p.name for p in tmp_path.iterdir()) == [".data.lock", "data", "runs"]  # the sweep record: in runs_dir


def test_flags_may_come_anywhere_among_the_overrides(tmp_path, monkeypatch):
    """Hydra's parser takes the overrides as one run of words; pretrain.py puts its flags first, so
    `A=1 -m B=1,2` is the sweep it reads as, not `unrecognized arguments: B=1,2`."""
    sys.path.insert(0, str(REPO))
    import pretrain as module

    assert module.flags_first(["a=1", "-m", "b=1,2", "--config-dir", "d", "c=3", "--info", "config"]) == [
        "a=1", "b=1,2", "c=3", "-m", "--config-dir", "d", "--info", "config"]
    assert module.flags_first(["a=1", "--config-n", "cfg_lsa_cpu", "b=2"]) == ["a=1", "b=2", "--config-n", "cfg_lsa_cpu"]
    for argv in (["a=1", "--info"], ["a=1", "-i", "defaults"], ["--info", "defaults", "a=1"], ["a=1", "-m", "b=1,2"],
                 ["a=1", "--config-n", "cfg_lsa_cpu", "--cfg", "job"], ["~a", "-m", "+c=1,2", "--config-name=x"]):
        module.hydra_args(module.flags_first(argv))  # Hydra's own parser takes each (a usage error would raise)
    monkeypatch.chdir(tmp_path)
    bad = run_in_process("pretrain.py", "--config-name", "cfg_lsa_cpu", "train.max_steps=2", "-m", "optim.lr=1e-3,-1")
    assert_one_line_error(bad, "optim.lr")  # the sweep was read and its job 1 refused, before anything ran
    assert "unrecognized" not in bad.stderr and not (tmp_path / "multirun").exists()


def test_check_refuses_what_the_run_directory_cannot_be_as_the_run_does(tmp_path):
    """A file where the run directory (or runs_dir) would be, and a folder of the user's with the
    run's name: --check says so in the run's own line (train_lsa.sh relies on it), and so does the
    run, before writing anything; the user's files stay as they were."""
    runs = tmp_path / "runs"
    (runs / "trm-lsa-cpu").mkdir(parents=True)
    (runs / "trm-lsa-cpu" / "afile").write_text("x")
    (runs / "trm-lsa-cpu" / "mine").mkdir()
    (runs / "trm-lsa-cpu" / "mine" / "notes.txt").write_text("precious")
    (tmp_path / "runs_file").write_text("y")
    base = ["--config-name", "cfg_lsa_cpu", f"data.path={tmp_path / 'data'}", *TINY]
    cases = [(f"logging.runs_dir={runs}", "logging.run_name=afile", "afile: is not a directory"),
             (f"logging.runs_dir={tmp_path / 'runs_file'}", "logging.run_name=r", "runs_file: is not a directory"),
             (f"logging.runs_dir={runs}", "logging.run_name=mine", "exists and holds files that are not a run's ('notes.txt')")]
    for runs_dir, name, said in cases:
        for mode in (["--check"], ["logging.progress=false"]):
            result = run_in_process("pretrain.py", *mode, *base, runs_dir, name)
            assert_one_line_error(result, said)
    assert (runs / "trm-lsa-cpu" / "afile").read_text() == "x" and (tmp_path / "runs_file").read_text() == "y"
    assert sorted(p.name for p in (runs / "trm-lsa-cpu" / "mine").iterdir()) == ["notes.txt"]
    # a directory holding only what a run writes (one that stopped before its first checkpoint) may start again
    (runs / "trm-lsa-cpu" / "again").mkdir()
    for name in ("config.json", "metrics.jsonl", ".lock", "metrics.stale-1.jsonl"):
        (runs / "trm-lsa-cpu" / "again" / name).write_text("")
    again = run_in_process("pretrain.py", "--check", *base, f"logging.runs_dir={runs}", "logging.run_name=again")
    assert again.returncode == 0, again.stderr


def test_check_refuses_a_dangling_link_above_the_run_directory_as_the_run_does(tmp_path):
    """A dangling symbolic link as logging.runs_dir, or higher up: no directory can be made
    through it. --check refused nothing (the run then failed with mkdir's 'No such file or
    directory'); both now say it in the same line, and nothing is created."""
    (tmp_path / "link").symlink_to(tmp_path / "nowhere")
    base = ["--config-name", "cfg_lsa_cpu", f"data.path={tmp_path / 'data'}", *TINY, "logging.run_name=r"]
    for runs_dir in (tmp_path / "link", tmp_path / "link" / "deeper"):
        checked = run_in_process("pretrain.py", "--check", *base, f"logging.runs_dir={runs_dir}")
        ran = run_in_process("pretrain.py", *base, "logging.progress=false", f"logging.runs_dir={runs_dir}")
        assert_one_line_error(checked, f"logging.runs_dir: cannot create {runs_dir}/trm-lsa-cpu/r",
                              f"{tmp_path / 'link'} is a dangling symbolic link")
        assert checked.stderr == ran.stderr and ran.returncode == 2
    assert sorted(p.name for p in tmp_path.iterdir()) == ["link"] and not (tmp_path / "nowhere").exists()


def test_check_names_a_link_loop_above_the_run_directory_a_loop_not_a_dangling_link(tmp_path):
    """A symbolic link loop (one naming itself, or two naming each other) as logging.runs_dir, or
    higher up, was called 'a dangling symbolic link': it is not one (its target is a link that
    exists), so --check and the run both say it is a loop, in the same line; nothing is created."""
    (tmp_path / "self").symlink_to("self")
    (tmp_path / "a").symlink_to("b")
    (tmp_path / "b").symlink_to("a")
    base = ["--config-name", "cfg_lsa_cpu", f"data.path={tmp_path / 'data'}", *TINY, "logging.run_name=r"]
    for link, target in (("self", "self"), ("a", "b")):
        for runs_dir in (tmp_path / link, tmp_path / link / "deeper"):
            checked = run_in_process("pretrain.py", "--check", *base, f"logging.runs_dir={runs_dir}")
            ran = run_in_process("pretrain.py", *base, "logging.progress=false", f"logging.runs_dir={runs_dir}")
            assert_one_line_error(checked, f"logging.runs_dir: cannot create {runs_dir}/trm-lsa-cpu/r",
                                  f"{tmp_path / link} is a symbolic link loop, to {target})")
            assert "dangling" not in checked.stderr
            assert checked.stderr == ran.stderr and ran.returncode == 2
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a", "b", "self"]


@pytest.mark.parametrize("builder", ["lsa", "null"])
def test_check_names_a_broken_link_at_data_path_as_the_run_does(tmp_path, builder):
    """data.path at or below a symbolic link loop or a dangling link: with a builder, --check said
    the dataset 'will be built first' (only the build then refused it); without one, 'no dataset
    there', naming no link. --check and the run now say the same line naming the link; nothing
    is built or created."""
    (tmp_path / "self").symlink_to("self")
    (tmp_path / "dangling").symlink_to("nowhere")
    runs = tmp_path / "runs"
    base = ["--config-name", "cfg_lsa_cpu", *TINY, f"data.builder={builder}", f"logging.runs_dir={runs}",
            "logging.run_name=r"]
    for link, kind in (("self", "a symbolic link loop, to self"), ("dangling", "a dangling symbolic link, to nowhere")):
        for data in (tmp_path / link, tmp_path / link / "deeper"):
            checked = run_in_process("pretrain.py", "--check", *base, f"data.path={data}")
            ran = run_in_process("pretrain.py", *base, "logging.progress=false", f"data.path={data}")
            assert_one_line_error(checked, f"data.path={data}: no dataset there, and none can be built there "
                                           f"({tmp_path / link} is {kind})")
            assert checked.stderr == ran.stderr and ran.returncode == 2
    assert sorted(p.name for p in tmp_path.iterdir()) == ["dangling", "self"]


def test_check_prints_the_run_dir_and_starts_nothing(tmp_path):
    result = run_in_process("pretrain.py", "--check", "--config-name", "cfg_lsa_cpu", "logging.run_name=c1",
                        f"logging.runs_dir={tmp_path / 'runs'}", f"data.path={tmp_path / 'data'}")
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == str(tmp_path / "runs" / "trm-lsa-cpu" / "c1")
    assert not any(tmp_path.iterdir())
    no_data = run_in_process("pretrain.py", "--check", "--config-name", "cfg_lsa_cpu", "data.builder=null",
                         f"data.path={tmp_path / 'nodata'}")
    assert_one_line_error(no_data, "data.path=")
