"""Hostile input, round three: who owns a run, and what a resume may touch (issue 17, items 3
and 7). Table rows run a real `pretrain.py` command line in this process and end with their
exit code: 2 and one line naming the culprit, or 0 with the right result; every path the row
watches (other runs, backups, a user's folders) is byte-for-byte unchanged afterwards. The
focused tests below the table cover the two-launch race (ordered deterministically: the
competing launch runs from inside the first one's dataset build or right after its planning),
forks and rewinds of an older checkpoint, and the checkpoint files' own rules."""

import json
import os
import shutil

import pytest
import torch

from conftest import CPU_PROJECT, assert_one_line_error, dir_digest, lsa_world, pretrain_argv, run_in_process, tiny_config

PROJECT = CPU_PROJECT


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """A dataset and a finished run `base` (6 steps, checkpoints at 3 and 6), built once."""
    return lsa_world(tmp_path_factory.mktemp("owner"))


def digest(path):
    if path.is_symlink():
        return ("link", os.readlink(path))
    return dir_digest(path) if path.is_dir() else (path.read_bytes() if path.exists() else None)


def copy_run(w, t, name="base"):
    dst = t / "runs" / PROJECT / name
    shutil.copytree(w["run"], dst)
    return dst


def pretrain(w, t, *extra):
    return pretrain_argv(w["data"], t / "runs", *extra)


def hard_link_copy(src, dst):
    """`cp -al src dst`: the same directory tree, every file a hard link."""
    shutil.copytree(src, dst, copy_function=os.link)


def user_folder(t):
    folder = t / "mine"
    folder.mkdir(exist_ok=True)
    (folder / "notes.txt").write_text("keep me")
    return folder


def metrics_steps(run):
    return [json.loads(line)["step"] for line in (run / "metrics.jsonl").read_text().splitlines()]


# Each setup(w, t) -> (argv, watched paths, paths that must not exist after, check(t, result) or None).


def case_new(make, *extra):
    """A new run `new` after `make(w, t)` prepared the ground; `make` returns paths to watch."""
    def setup(w, t):
        watched = make(w, t) or []
        return pretrain(w, t, "logging.run_name=new", "train.max_steps=2", *extra), watched, [], None
    return setup


def case_check(make):
    """`pretrain.py --check` of a new run `new` after `make(w, t)`."""
    def setup(w, t):
        argv, watched, absent, check = case_new(make)(w, t)
        return ["pretrain.py", "--check", *argv[1:]], watched, absent, check
    return setup


def case_resume(mutate, *extra, check=None, resume=None, max_steps=9, check_only=False):
    """A copy of the base run, mutated by `mutate(run, t)` (which returns extra paths to watch),
    then resumed with `extra`: by name (train.resume=true), or from `resume`, a path inside the
    copied run ("" for the run itself)."""
    def setup(w, t):
        run = copy_run(w, t)
        watched = mutate(run, t) or []
        how = "train.resume=true" if resume is None else f"train.resume={run / resume}"
        argv = pretrain(w, t, "logging.run_name=base", how, f"train.max_steps={max_steps}", *extra)
        if check_only:
            argv.insert(1, "--check")
        return argv, watched, [], check
    return setup


def symlinked_run_dir(w, t):
    target = user_folder(t)
    (t / "runs" / PROJECT).mkdir(parents=True)
    (t / "runs" / PROJECT / "new").symlink_to(target)
    return [target]


def symlinked_project_dir(w, t):
    target = user_folder(t)
    (t / "runs").mkdir()
    (t / "runs" / PROJECT).symlink_to(target)
    return [target]


def run_dir_symlink_to_a_run(run, t):
    """runs/P/base is a symbolic link to the real run, kept elsewhere."""
    real = t / "elsewhere" / "base"
    real.parent.mkdir()
    shutil.move(str(run), real)
    run.symlink_to(real)
    return [real]


def project_symlink_to_runs(run, t):
    """runs/P is a symbolic link to a folder holding the real runs."""
    real = t / "elsewhere"
    shutil.move(str(run.parent), real)
    run.parent.symlink_to(real)
    return [real]


def backup_cp_al(run, t):
    backup = t / "backup"
    hard_link_copy(run, backup)
    return [backup]


def user_tmp_folder(run, t):
    folder = run / "checkpoints" / ".tmp-mine"
    folder.mkdir()
    (folder / "notes.txt").write_text("keep me")
    return [folder]


def no_latest(run, t):
    (run / "checkpoints" / "latest").unlink()


def no_latest_newest_truncated(run, t):
    (run / "checkpoints" / "latest").unlink()
    model = run / "checkpoints" / "step_0000006" / "model.pt"
    model.write_bytes(model.read_bytes()[:100])
    return [run / "checkpoints" / "step_0000006"]


def resumed_from(step):
    def check(t, result):
        assert f"from step_{step:07d}" in result.stdout, result.stdout[-2000:]
        assert json.loads(result.stdout.strip().splitlines()[-1])["step"] == 9
    return check


def sampler_seed_is(seed):
    def check(t, result):
        from training.engine.checkpoint import load_file, resolve_checkpoint

        assert json.loads(result.stdout.strip().splitlines()[-1])["step"] == 9
        ckpt = resolve_checkpoint(t / "runs" / PROJECT / "base")
        assert load_file(ckpt / "state.pt")["sampler"]["seed"] == seed and "train.seed changed" in result.stdout
    return check


def finished_at(step):
    def check(t, result):
        assert json.loads(result.stdout.strip().splitlines()[-1])["step"] == step
    return check


def case_fork_explicit_same_name(w, t):
    run = copy_run(w, t)
    argv = pretrain(w, t, "logging.run_name=base", f"train.resume={run / 'checkpoints' / 'step_0000003'}",
                    "train.max_steps=5")
    return argv, [run], [], None


def case_rewind_other_run(w, t):
    run = copy_run(w, t)
    argv = pretrain(w, t, "logging.run_name=new", f"train.resume={run / 'checkpoints' / 'step_0000003'}",
                    "train.max_steps=5", "train.rewind=true")
    return argv, [run], [t / "runs" / PROJECT / "new"], None


def case_empty_runs_dir(w, t):
    work = t / "work"
    work.mkdir()
    (work / "notes.txt").write_text("mine")
    argv = pretrain_argv(w["data"], t / "unused", "logging.run_name=new", "train.max_steps=2")
    argv[argv.index(f"logging.runs_dir={t / 'unused'}")] = "logging.runs_dir="
    return argv, [work], [t / "unused"], None, work


CASES = {
    # --- a run directory that is not a real directory inside the runs dir ----------------------
    "new run dir a symlink to a user folder": (case_new(symlinked_run_dir), "symbolic link", 2),
    "new run under a symlinked project dir": (case_new(symlinked_project_dir), "symbolic link", 2),
    "resume of a run dir that is a symlink": (case_resume(run_dir_symlink_to_a_run), "symbolic link", 2),
    "resume under a symlinked project dir": (case_resume(project_symlink_to_runs), "symbolic link", 2),
    "empty logging.runs_dir": (case_empty_runs_dir, "logging.runs_dir", 2),
    "--check of a run under a symlinked project dir": (case_check(symlinked_project_dir), "symbolic link", 2),
    "--check of a resume with nothing left to train": (case_resume(lambda r, t: [r], "train.max_steps=4", check_only=True),
                                                       "train.max_steps=4", 2),
    # --- hard-linked backups keep their content --------------------------------------------
    "resume beside a cp -al backup": (case_resume(backup_cp_al, "train.eval_interval=3", check=finished_at(9)), None, 0),
    "rewind beside a cp -al backup (re-evaluates step 6)": (case_resume(
        backup_cp_al, "train.rewind=true", "train.eval_interval=3", resume="checkpoints/step_0000003", max_steps=6,
        check=finished_at(6)), None, 0),
    # --- temporary folders the project did not make ---------------------------------------
    "resume keeps a user's checkpoints/.tmp-* folder": (case_resume(user_tmp_folder, "train.eval_interval=3",
                                                                    check=finished_at(9)), None, 0),
    # --- a first save killed before `latest` ------------------------------------------------
    "resume without latest": (case_resume(no_latest, check=resumed_from(6)), None, 0),
    "resume without latest, newest truncated": (case_resume(no_latest_newest_truncated, check=resumed_from(3)), None, 0),
    # --- nothing left to train, a changed sampler -------------------------------------------
    "resume with max_steps at the checkpoint's step": (case_resume(lambda r, t: [r], "train.max_steps=6"),
                                                       "train.max_steps=6", 2),
    "resume with max_steps below the checkpoint's step": (case_resume(lambda r, t: [r], "train.max_steps=2"),
                                                          "train.max_steps=2", 2),
    "resume with epochs that end before the checkpoint": (case_resume(
        lambda r, t: [r], "train.max_steps=null", "train.epochs=0.01"), "train.epochs", 2),
    "resume with a changed seed": (case_resume(lambda r, t: [r], "train.seed=1"), "train.seed", 2),
    "resume by path with a changed seed": (case_resume(lambda r, t: [r], "train.seed=7", resume=""),
                                           "train.seed", 2),
    "resume with a changed seed, allowed": (case_resume(lambda r, t: [], "train.seed=1", "train.allow_seed_change=true",
                                                        check=sampler_seed_is(1)), None, 0),
    # --- an older checkpoint of a run --------------------------------------------------------
    "older checkpoint with the run's own name, no rewind": (case_fork_explicit_same_name, "train.rewind", 2),
    "rewind asked for another run's checkpoint": (case_rewind_other_run, "train.rewind", 2),
    "rewind without a resume": (case_new(lambda w, t: [], "train.rewind=true"), "train.rewind", 2),
}


@pytest.mark.parametrize("name", list(CASES))
def test_hostile_run_ownership(world, tmp_path, monkeypatch, name):
    setup, culprit, code = CASES[name]
    argv, watched, absent, check, *cwd = setup(world, tmp_path)
    monkeypatch.chdir(cwd[0] if cwd else tmp_path)
    before = [digest(p) for p in watched]
    result = run_in_process(*argv)
    if code == 2:
        assert_one_line_error(result, culprit)
    assert result.returncode == code, result.stderr[-3000:]
    for path, value in zip(watched, before):
        assert digest(path) == value, f"{path} was changed"
    for path in absent:
        assert not path.exists(), f"{path} was written"
    if check is not None:
        check(tmp_path, result)


def test_the_table_has_every_row():
    assert len(CASES) >= 15


# ---------------------------------------------------------------------------------------------
# Two launches with one run name, ordered deterministically


def test_a_launch_that_completes_while_another_builds_its_dataset_is_refused(world, tmp_path, monkeypatch):
    """Launch A builds its dataset; launch B with the same name starts meanwhile. A owns the run
    from its first moment, so B is refused with one line and A's run is A's alone."""
    import training.engine.setup as setup
    from training.loop import train

    original, seen = setup.prepare_data, {}

    def build_and_meanwhile_launch_b(cfg, progress):
        if "b" not in seen:
            seen["b"] = run_in_process(*pretrain(world, tmp_path, "logging.run_name=x", "train.max_steps=3",
                                                 "optim.lr=1e-3"))
        return original(cfg, progress)

    monkeypatch.setattr(setup, "prepare_data", build_and_meanwhile_launch_b)
    a = train(tiny_config(tmp_path, "logging.run_name=x", "train.max_steps=2", "train.global_batch_size=32",
                          data=world["data"]))
    assert_one_line_error(seen["b"], "logging.run_name=x", "another process")
    run = tmp_path / "runs" / PROJECT / "x"
    assert a["step"] == 2 and json.loads((run / "config.json").read_text())["train"]["max_steps"] == 2
    assert metrics_steps(run)[-1] == 2 and (run / "checkpoints" / "latest").read_text() == "step_0000002"


def test_a_run_that_appears_between_planning_and_owning_is_not_written_into(world, tmp_path, monkeypatch):
    """Launch B finishes run x after launch A planned x as new and before A owns it: A refuses
    (one line) instead of overwriting B's config, pruning its checkpoints and moving `latest`."""
    import training.loop as loop
    import training.bookkeeping.run as run_module

    original, launched = run_module.plan_run, []

    def plan_then_b_finishes(cfg):
        plan = original(cfg)
        if not launched:  # A's planning; B's own goes straight through
            launched.append("b")
            b = run_in_process(*pretrain(world, tmp_path, "logging.run_name=x", "train.max_steps=3"))
            assert b.returncode == 0, b.stderr
        return plan

    for module in (loop, run_module):
        monkeypatch.setattr(module, "plan_run", plan_then_b_finishes, raising=False)
    run = tmp_path / "runs" / PROJECT / "x"
    result = run_in_process(*pretrain(world, tmp_path, "logging.run_name=x", "train.max_steps=2",
                                      "train.keep_checkpoints=1"))
    assert_one_line_error(result, "logging.run_name=x", "already holds a run")
    assert json.loads((run / "config.json").read_text())["train"]["max_steps"] == 3
    assert (run / "checkpoints" / "latest").read_text() == "step_0000003"


def test_a_resume_whose_latest_moved_before_it_owned_the_run_is_refused(world, tmp_path, monkeypatch):
    """Launch A plans to resume `base` from step 6; launch B resumes it to step 9 before A owns
    it: A refuses instead of rewinding B's work (pruning step 9, moving `latest` back)."""
    import training.loop as loop
    import training.bookkeeping.run as run_module

    run = copy_run(world, tmp_path)
    original, launched = run_module.plan_run, []

    def plan_then_b_continues(cfg):
        plan = original(cfg)
        if not launched:
            launched.append("b")
            b = run_in_process(*pretrain(world, tmp_path, "logging.run_name=base", "train.resume=true",
                                         "train.max_steps=9", "train.eval_interval=3"))
            assert b.returncode == 0, b.stderr
        return plan

    for module in (loop, run_module):
        monkeypatch.setattr(module, "plan_run", plan_then_b_continues, raising=False)
    result = run_in_process(*pretrain(world, tmp_path, "logging.run_name=base", "train.resume=true",
                                      "train.max_steps=12", "train.keep_checkpoints=1"))
    assert_one_line_error(result, "logging.run_name=base", "step_0000006 -> step_0000009")
    assert (run / "checkpoints" / "latest").read_text() == "step_0000009" and metrics_steps(run)[-1] == 9


def test_a_refused_launch_leaves_no_run_directory(world, tmp_path):
    """Owning comes first, so a launch refused later (a bad evaluator metric) removes the empty
    directory it made, and only that."""
    result = run_in_process(*pretrain(world, tmp_path, "logging.run_name=new", "train.max_steps=2",
                                      "train.best_metric=eval/nope"))
    assert result.returncode == 2, result.stderr
    assert not (tmp_path / "runs" / PROJECT / "new").exists()


# ---------------------------------------------------------------------------------------------
# An older checkpoint of a run: a fork by default, a rewind only when asked


def test_an_older_checkpoint_forks_a_new_run_and_leaves_the_run_alone(world, tmp_path):
    run = copy_run(world, tmp_path)
    before = dir_digest(run)
    result = run_in_process(*pretrain(world, tmp_path, f"train.resume={run / 'checkpoints' / 'step_0000003'}",
                                      "train.max_steps=5"))
    assert result.returncode == 0, result.stderr
    assert dir_digest(run) == before  # the named checkpoint, step 6, `latest` and the history: all kept
    fork = tmp_path / "runs" / PROJECT / "base-from-step_0000003"
    assert "fork" in result.stdout and str(fork) in result.stdout
    record = json.loads((fork / "run.json").read_text())
    assert record["parent"] == {"run": str(run), "checkpoint": "step_0000003", "step": 3}
    assert (fork / "checkpoints" / "latest").read_text() == "step_0000005"
    assert metrics_steps(fork)[0] > 3
    # A second fork of the same checkpoint gets a name of its own.
    again = run_in_process(*pretrain(world, tmp_path, f"train.resume={run / 'checkpoints' / 'step_0000003'}",
                                     "train.max_steps=4"))
    assert again.returncode == 0, again.stderr
    assert (tmp_path / "runs" / PROJECT / "base-from-step_0000003-2" / "checkpoints" / "latest").is_file()
    assert dir_digest(run) == before and dir_digest(fork) != before


def test_rewind_moves_later_checkpoints_aside_and_keeps_them(world, tmp_path):
    run = copy_run(world, tmp_path)
    later = dir_digest(run / "checkpoints" / "step_0000006")
    result = run_in_process(*pretrain(world, tmp_path, "logging.run_name=base", "train.rewind=true",
                                      f"train.resume={run / 'checkpoints' / 'step_0000003'}", "train.max_steps=5",
                                      "train.eval_interval=5"))
    assert result.returncode == 0, result.stderr
    assert "rewinding" in result.stdout
    kept = list((run / "checkpoints").glob("rewound-*/step_0000006"))
    assert len(kept) == 1 and dir_digest(kept[0]) == later
    assert (run / "checkpoints" / "latest").read_text() == "step_0000005"
    assert (run / "checkpoints" / "step_0000003").is_dir()  # the named checkpoint is not pruned (keep 2)
    assert metrics_steps(run)[-1] == 5 and max(metrics_steps(run)) == 5  # later lines went aside
    # A later continue to step 6 writes step_0000006, not a suffixed copy beside an orphan.
    more = run_in_process(*pretrain(world, tmp_path, "logging.run_name=base", "train.resume=true", "train.max_steps=6",
                                    "train.eval_interval=3"))
    assert more.returncode == 0, more.stderr
    names = sorted(p.name for p in (run / "checkpoints").iterdir())
    assert "step_0000006" in names and not [n for n in names if n.startswith("step_0000006-")]


# ---------------------------------------------------------------------------------------------
# Checkpoint files: temporary folders, `latest` missing, writes that replace


def test_only_temporary_folders_this_project_made_are_removed(tmp_path):
    from training.engine.checkpoint import TMP_MARKER, save_checkpoint

    root = tmp_path / "checkpoints"
    ours, theirs, linked = root / ".tmp-step_0000001-abc", root / ".tmp-mine", root / ".tmp-link"
    ours.mkdir(parents=True)
    (ours / TMP_MARKER).write_text("")
    theirs.mkdir()
    (theirs / "notes.txt").write_text("keep me")
    (tmp_path / "elsewhere").mkdir()
    (tmp_path / "elsewhere" / TMP_MARKER).write_text("")
    linked.symlink_to(tmp_path / "elsewhere")
    save_checkpoint(tmp_path, 2, {"model": {"w": torch.ones(1)}}, {}, {}, keep=2)
    assert not ours.exists() and (theirs / "notes.txt").read_text() == "keep me"
    assert linked.is_symlink() and (tmp_path / "elsewhere" / TMP_MARKER).is_file()


def test_without_latest_the_newest_complete_checkpoint_is_found(tmp_path):
    from training.engine.checkpoint import CheckpointError, resolve_checkpoint, save_checkpoint

    payload = {name: {"w": torch.ones(1)} for name in ("model", "ema", "optim", "state")}
    for step in (1, 2, 3):
        save_checkpoint(tmp_path, step, payload, {}, {}, keep=5)
    root = tmp_path / "checkpoints"
    (root / "latest").unlink()
    assert resolve_checkpoint(tmp_path) == root / "step_0000003"
    (root / "step_0000003" / "state.pt").unlink()  # incomplete
    (root / "step_0000002" / "meta.json").write_text("{")  # damaged
    assert resolve_checkpoint(tmp_path) == root / "step_0000001"
    (root / "step_0000001" / "model.pt").write_bytes(b"PK")
    with pytest.raises(CheckpointError, match="no complete checkpoint"):
        resolve_checkpoint(tmp_path)


def test_pointer_and_run_files_replace_hard_links_instead_of_writing_through(tmp_path):
    from training.engine.checkpoint import save_checkpoint
    from training.bookkeeping.logger import write_text
    from training.bookkeeping.runs import write_run_file

    save_checkpoint(tmp_path, 1, {"model": {"w": torch.ones(1)}}, {}, {}, keep=2)
    root = tmp_path / "checkpoints"
    os.link(root / "latest", tmp_path / "latest.bak")
    (root / ".latest.tmp").write_text("x")  # a leftover of an older version, hard-linked from a backup
    os.link(root / ".latest.tmp", tmp_path / "tmp.bak")
    write_run_file(tmp_path, "r", "p", None, "disabled")
    os.link(tmp_path / "run.json", tmp_path / "run.bak")
    (tmp_path / "config.json").write_text("old")
    os.link(tmp_path / "config.json", tmp_path / "config.bak")
    save_checkpoint(tmp_path, 2, {"model": {"w": torch.ones(1)}}, {}, {}, keep=2)
    write_run_file(tmp_path, "r", "p", None, "disabled")
    write_text(tmp_path / "config.json", "new")
    assert (root / "latest").read_text() == "step_0000002" and (tmp_path / "latest.bak").read_text() == "step_0000001"
    assert (tmp_path / "tmp.bak").read_text() == "x"
    assert json.loads((tmp_path / "run.bak").read_text())["starts"] == 1
    assert json.loads((tmp_path / "run.json").read_text())["starts"] == 2
    assert (tmp_path / "config.bak").read_text() == "old" and (tmp_path / "config.json").read_text() == "new"


def test_metrics_of_a_hard_linked_run_are_copied_before_appending(tmp_path):
    from training.bookkeeping.logger import RunLogger

    (tmp_path / "metrics.jsonl").write_text('{"step": 1, "time": 1.0}\n')
    os.link(tmp_path / "metrics.jsonl", tmp_path / "backup.jsonl")
    logger = RunLogger(tmp_path, "p", "r", {}, "disabled")
    logger.log({"x": 1.0}, 2)
    logger.close()
    assert (tmp_path / "backup.jsonl").read_text() == '{"step": 1, "time": 1.0}\n'
    assert metrics_steps(tmp_path) == [1, 2]
