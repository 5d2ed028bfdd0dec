"""Hostile input, round three: the one guard for everything that deletes or replaces a directory
(dataset/replace_guard.py), through `scripts/export.py --overwrite` and the builders'
`--overwrite`. Table rows follow tests/test_hostile_inputs.py: a real command line in this
process, exit 2, one stderr line naming the culprit, and every watched path byte-for-byte
unchanged. Then: export atomicity, the re-check right before the swap, and recovery from a
process that died between the two renames of a fallback swap."""

import json
import os
import shutil
import signal
from pathlib import Path

import pytest

from conftest import REPO, assert_one_line_error, build_lsa, dir_digest, lsa_world_with_export, run_in_process
from test_hostile_inputs import check_case, digest, fake_home, never_touch_real_places, unrelated_files, workdir

PROJECT = "trm-lsa-cpu"


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """A dataset, a finished run and an export of it, built once."""
    return lsa_world_with_export(tmp_path_factory.mktemp("guard"))


# ---------------------------------------------------------------------------------------------
# Building blocks


def copy_run(w, t):
    run = t / "runs" / PROJECT / "base"
    shutil.copytree(w["run"], run)
    return run


def copy_export(w, t, name="exp"):
    shutil.copytree(w["export"], t / name)
    return t / name


def copy_data(w, t, name="data"):
    shutil.copytree(w["data"], t / name)
    return t / name


def export_argv(checkpoint, out, *flags):
    return ["scripts/export.py", "--checkpoint", str(checkpoint), "--out", str(out), *flags]


def builder_argv(out, *flags):
    return ["-m", "dataset.build_lsa_dataset", "--output-dir", str(out), "--no-progress", "--n", "3",
            "--num-train", "10", "--num-test", "4", "--num-aug", "1", *flags]


def case(make_target, tool="export", overwrite=True, cwd=None, env=None, mount=False):
    """`make_target(w, t)` -> the path to give (a Path, or a str relative to `cwd`). Everything
    under the test's directory (the run copy, the target, the working directory) is watched, and
    so is a target elsewhere (other than the project and /, which the test guard protects).
    `mount`: the target counts as a mount point."""
    def setup(w, t):
        run = copy_run(w, t)
        target = make_target(w, t)
        where_cwd = cwd(t) if cwd else t
        flags = ["--overwrite"] if overwrite else []
        argv = export_argv(run, target, *flags) if tool == "export" else builder_argv(target, *flags)
        resolved = Path(os.path.realpath(where_cwd / target))
        elsewhere = t not in (resolved, *resolved.parents) and resolved not in (REPO, Path("/"))
        where = {"cwd": where_cwd, "env": env(t) if env else {}, "mounts": [resolved] if mount else []}
        return argv, [t] + ([resolved] if elsewhere else []), [], where
    return setup


def user_files_in_cwd(t):
    work = workdir(t)
    (work / "thesis.tex").write_text("precious")
    return work


def empty_dir(t, name="empty"):
    (t / name).mkdir(exist_ok=True)
    return t / name


def export_plus_notes(w, t):
    out = copy_export(w, t)
    (out / "notes.txt").write_text("mine")
    return out


def unmarked_export(w, t):
    out = copy_export(w, t)
    config = json.loads((out / "config.json").read_text())
    del config["written_by"]
    config["format"] = "someone-elses"
    (out / "config.json").write_text(json.dumps(config))
    return out


def symlink_to(make):
    def target(w, t):
        (t / "link").symlink_to(make(w, t))
        return t / "link"
    return target


def dangling_symlink(w, t):
    (t / "dangling").symlink_to(t / "nowhere")
    return t / "dangling"


def dataset_inside_run(w, t):
    data = t / "runs" / PROJECT / "base" / "data"
    shutil.copytree(w["data"], data)
    return data


def a_file(w, t):
    (t / "f").write_text("mine")
    return t / "f"


RUN = f"runs/{PROJECT}/base"

CASES = {
    # --- export --out ... --overwrite: the reported defects and their neighbours --------------
    "export --out . (the cwd, holding user files)": (case(lambda w, t: ".", cwd=user_files_in_cwd),
                                                    "the current directory"),
    "export --out sub/.. (the cwd, spelt another way)": (case(lambda w, t: "sub/..", cwd=user_files_in_cwd),
                                                        "the current directory"),
    "export --out a folder of user files": (case(unrelated_files), "not an export this project wrote"),
    "export --out the run itself": (case(lambda w, t: t / RUN), "it is a run directory"),
    "export --out the run with a trailing slash": (case(lambda w, t: f"{t / RUN}/"), "it is a run directory"),
    "export --out runs/p/run/.. (holds the run)": (case(lambda w, t: f"{RUN}/.."), "holds the run"),
    "export --out the runs folder": (case(lambda w, t: t / "runs"), "holds the run"),
    "export --out the run's checkpoint": (case(lambda w, t: t / RUN / "checkpoints" / "step_0000006"),
                                          "inside the run"),
    "export --out the run's checkpoints folder": (case(lambda w, t: t / RUN / "checkpoints"), "inside the run"),
    "export --out the home directory": (case(lambda w, t: fake_home(t), env=lambda t: {"HOME": str(fake_home(t))}),
                                        "the home directory"),
    "export --out the project's directory": (case(lambda w, t: REPO), "this project's directory"),
    "export --out /": (case(lambda w, t: Path("/")), "the root directory"),
    "export --out an ancestor of the cwd": (case(lambda w, t: workdir(t), cwd=lambda t: workdir(t) / "sub"),
                                            "an ancestor of the current directory"),
    "export --out a symlink to an export": (case(symlink_to(copy_export)), "symbolic link"),
    "export --out a dangling symlink": (case(dangling_symlink), "symbolic link"),
    "export --out a mount point": (case(copy_export, mount=True), "mount point"),
    "export --out a dataset": (case(copy_data), "not an export this project wrote"),
    "export --out an export plus a user file": (case(export_plus_notes), "notes.txt"),
    "export --out an unmarked export-like folder": (case(unmarked_export), "does not say it was written"),
    "export --out a file": (case(a_file), "not a directory"),
    "export --out missing/.. (spells the cwd)": (case(lambda w, t: "missing/..", cwd=lambda t: empty_dir(t)),
                                                 "does not exist, yet it spells"),
    "export --out an export, without --overwrite": (case(copy_export, overwrite=False), "--overwrite"),
    "export --out . without --overwrite (an empty cwd)": (case(lambda w, t: ".", overwrite=False,
                                                               cwd=lambda t: empty_dir(t)), "the current directory"),
    # --- builders --output-dir ... --overwrite: the same guard --------------------------------
    "builder --output-dir the run": (case(lambda w, t: t / RUN, "builder"), "it is a run directory"),
    "builder --output-dir a dataset inside a run": (case(dataset_inside_run, "builder"), "inside the run"),
    "builder --output-dir runs/p (holds the run)": (case(lambda w, t: t / "runs" / PROJECT, "builder"),
                                                    "holds the run"),
    "builder --output-dir a mount point": (case(copy_data, "builder", mount=True), "mount point"),
    "builder --output-dir an export": (case(copy_export, "builder"), "not a dataset this project built"),
    "builder --output-dir sub/.. (the cwd)": (case(lambda w, t: "sub/..", "builder", cwd=user_files_in_cwd),
                                              "the current directory"),
    "builder --output-dir . without --overwrite (an empty cwd)": (
        case(lambda w, t: ".", "builder", overwrite=False, cwd=lambda t: empty_dir(t)), "the current directory"),
    "builder --output-dir a dangling symlink": (case(dangling_symlink, "builder"), "symbolic link"),
}


@pytest.mark.parametrize("name", list(CASES))
def test_replacing_what_is_not_ours_is_refused(world, tmp_path, monkeypatch, name):
    setup, culprit = CASES[name]
    argv, watched, absent, where = setup(world, tmp_path)
    before = [digest(p) for p in watched]
    monkeypatch.chdir(where["cwd"])
    for key, value in where["env"].items():
        monkeypatch.setenv(key, value)
    if where["mounts"]:
        real_ismount = os.path.ismount
        monkeypatch.setattr(os.path, "ismount", lambda p: Path(p) in where["mounts"] or real_ismount(p))
    never_touch_real_places(monkeypatch)
    result = run_in_process(*argv)
    check_case(result, (argv, watched, absent), culprit, before)
    flag = "--out" if "--out" in argv else "--output-dir"
    assert f"{flag} {Path(argv[argv.index(flag) + 1])}:" in result.stderr  # the line names the path as given
    leftovers = [p for p in tmp_path.rglob(".*.tmp-*")]
    assert not leftovers, leftovers


def test_the_table_covers_both_tools():
    assert len(CASES) >= 20 and {name.split()[0] for name in CASES} == {"export", "builder"}


# ---------------------------------------------------------------------------------------------
# What --overwrite does replace, atomically


def test_export_overwrite_replaces_an_export_this_project_wrote(world, tmp_path):
    out = copy_export(world, tmp_path)
    assert json.loads((out / "config.json").read_text())["written_by"] == "tinyrecursion"
    old = (out / "model.safetensors").read_bytes()
    result = run_in_process(*export_argv(world["run"], out, "--overwrite", "--no-ema"))
    assert result.returncode == 0, result.stderr
    assert json.loads((out / "config.json").read_text())["weights"] == "model"
    assert (out / "model.safetensors").read_bytes() != old
    # An export made before the marker (its format name says whose it is) is replaced too.
    config = json.loads((out / "config.json").read_text())
    del config["written_by"]
    (out / "config.json").write_text(json.dumps(config))
    result = run_in_process(*export_argv(world["run"], out, "--overwrite"))
    assert result.returncode == 0, result.stderr
    assert json.loads((out / "config.json").read_text())["weights"] == "ema"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["exp"]  # no temporary directory left


@pytest.mark.parametrize("how", ["SIGTERM", "full disk"])
def test_an_interrupted_export_keeps_the_old_one_whole(world, tmp_path, monkeypatch, how):
    import safetensors.torch

    out = copy_export(world, tmp_path)
    before = dir_digest(out)
    real_save = safetensors.torch.save_file

    def save_then_fail(state, path, metadata=None):
        real_save(state, path, metadata=metadata)
        Path(path).write_bytes(Path(path).read_bytes()[:100])  # half a file
        if how == "SIGTERM":
            os.kill(os.getpid(), signal.SIGTERM)
        else:
            raise OSError(28, "No space left on device", path)

    monkeypatch.setattr(safetensors.torch, "save_file", save_then_fail)
    result = run_in_process(*export_argv(world["run"], out, "--overwrite"))
    if how == "SIGTERM":
        assert result.returncode == 128 + signal.SIGTERM and "interrupted by SIGTERM" in result.stderr
    else:
        assert_one_line_error(result, "--out", "No space left")
    assert dir_digest(out) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["exp"]


# ---------------------------------------------------------------------------------------------
# The re-check right before the swap


def during(monkeypatch, module, name, act):
    """Run `act()` when `module.name` is first called (while the new directory is written,
    after every earlier check, before the swap)."""
    original, done = getattr(module, name), []

    def wrapper(*args, **kwargs):
        if not done:
            done.append(act())
        return original(*args, **kwargs)

    monkeypatch.setattr(module, name, wrapper)


def add_notes(target):
    return lambda: (target / "notes.txt").write_text("written while the build ran")


def swap_for_another_dataset(world, target, aside):
    return lambda: (os.rename(target, aside), shutil.copytree(world["data"], target))


def swap_for_a_symlink(target, aside):
    return lambda: (os.rename(target, aside), target.symlink_to(aside))


@pytest.mark.parametrize("change,culprit", [
    ("notes", "notes.txt"), ("another dataset", "changed while this dataset was written"),
    ("symlink", "changed while this dataset was written"), ("appeared", "changed while this dataset was written"),
])
def test_builder_overwrite_rechecks_the_target_before_the_swap(world, tmp_path, monkeypatch, change, culprit):
    import dataset.writer as writer

    target, aside = tmp_path / "data", tmp_path / "aside"
    if change != "appeared":
        copy_data(world, tmp_path)
    act = {"notes": lambda: add_notes(target),
           "another dataset": lambda: swap_for_another_dataset(world, target, aside),
           "symlink": lambda: swap_for_a_symlink(target, aside),
           "appeared": lambda: lambda: unrelated_files(world, tmp_path).rename(target)}[change]()
    during(monkeypatch, writer, "write_identifiers", act)
    result = run_in_process(*builder_argv(target, *([] if change == "appeared" else ["--overwrite"])))
    assert_one_line_error(result, "--output-dir", culprit)
    after = {p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*")}
    if change == "notes":
        assert (target / "notes.txt").read_text() == "written while the build ran"
        assert dir_digest(target) != dir_digest(world["data"]) and "data/train/dataset.json" in after
    elif change == "symlink":
        assert target.is_symlink() and dir_digest(aside) == dir_digest(world["data"])
    elif change == "appeared":
        assert (target / "thesis.tex").read_text() == "precious"
    else:
        assert dir_digest(target) == dir_digest(aside) == dir_digest(world["data"])
    assert not [p for p in after if ".tmp-" in p]


def test_export_overwrite_rechecks_the_target_before_the_swap(world, tmp_path, monkeypatch):
    import safetensors.torch

    out = copy_export(world, tmp_path)
    during(monkeypatch, safetensors.torch, "save_file", add_notes(out))
    result = run_in_process(*export_argv(world["run"], out, "--overwrite"))
    assert_one_line_error(result, "--out", "notes.txt")
    assert (out / "notes.txt").is_file() and (out / "model.safetensors").read_bytes() == \
        (world["export"] / "model.safetensors").read_bytes()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["exp"]


# ---------------------------------------------------------------------------------------------
# A process that dies between the two renames of the fallback swap


class Killed(BaseException):
    """Stands for kill -9: nothing after it runs but `finally` blocks (harsher than the real one)."""


def die_between_the_renames(monkeypatch):
    import dataset.replace_guard as guard

    monkeypatch.setattr(guard, "_exchange", lambda a, b: False)
    real_replace = os.replace

    def replace(src, dst):
        real_replace(src, dst)
        if str(dst).endswith(guard.PARKED):  # the old directory has just been parked
            raise Killed()

    monkeypatch.setattr(guard.os, "replace", replace)


def test_the_next_build_restores_a_dataset_parked_by_a_killed_swap(world, tmp_path, monkeypatch):
    target = copy_data(world, tmp_path)
    before = dir_digest(target)
    die_between_the_renames(monkeypatch)
    with pytest.raises(Killed):
        build_lsa(target, n=3, num_train=10, num_test=4, num_aug=1, overwrite=True)
    monkeypatch.undo()
    assert not target.exists() and len(list(tmp_path.glob(".data.tmp-*.old"))) == 1  # what a kill leaves
    # The next build (without --overwrite) finds it, puts it back, and then refuses to replace it.
    result = run_in_process(*builder_argv(target))
    assert result.returncode == 2 and "restored from .data.tmp-" in result.stderr and "--overwrite" in result.stderr
    assert dir_digest(target) == before and sorted(p.name for p in tmp_path.iterdir()) == ["data"]


def test_a_parked_leftover_is_removed_only_when_it_is_ours(world, tmp_path):
    from dataset.replace_guard import DATASET, check_target

    target = copy_data(world, tmp_path)
    ours = copy_data(world, tmp_path, ".data.tmp-abc.old")
    theirs = unrelated_files(world, tmp_path).rename(tmp_path / ".data.tmp-xyz.old")
    check_target(target, DATASET, overwrite=True)
    assert not ours.exists() and (theirs / "thesis.tex").read_text() == "precious"
    assert dir_digest(target) == dir_digest(world["data"])
    # With the target missing, a parked directory that is not ours is not moved there either.
    shutil.rmtree(target)
    check_target(target, DATASET, overwrite=False)
    assert not target.exists() and (theirs / "thesis.tex").read_text() == "precious"


def test_a_kill_that_left_both_directories_is_undone(world, tmp_path):
    """kill -9 between the renames leaves the old directory parked and the new one complete
    beside it: the old goes back, the new one goes; two parked candidates are not guessed at."""
    from core.errors import DatasetError
    from dataset.replace_guard import DATASET, check_target

    old = copy_data(world, tmp_path, ".data.tmp-abc.old")
    (old / "identifiers.json").write_text('["<old>"]\n')
    new = copy_data(world, tmp_path, ".data.tmp-abc")
    check_target(tmp_path / "data", DATASET, overwrite=True)
    assert (tmp_path / "data" / "identifiers.json").read_text() == '["<old>"]\n' and not new.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data"]
    shutil.rmtree(tmp_path / "data")
    copy_data(world, tmp_path, ".data.tmp-a.old"), copy_data(world, tmp_path, ".data.tmp-b.old")
    with pytest.raises(DatasetError, match="move the one to keep back"):
        check_target(tmp_path / "data", DATASET, overwrite=True)
    assert sorted(p.name for p in tmp_path.iterdir()) == [".data.tmp-a.old", ".data.tmp-b.old"]


def test_an_export_parked_by_a_killed_swap_is_restored(world, tmp_path, monkeypatch, capsys):
    out = copy_export(world, tmp_path)
    before = dir_digest(out)
    die_between_the_renames(monkeypatch)
    from training.inference import export_model

    with pytest.raises(Killed):
        export_model(world["run"], out, overwrite=True)
    monkeypatch.undo()
    assert not out.exists()
    from dataset.replace_guard import EXPORT, check_target

    check_target(out, EXPORT, overwrite=True)
    assert "restored from .exp.tmp-" in capsys.readouterr().err
    assert dir_digest(out) == before and sorted(p.name for p in tmp_path.iterdir()) == ["exp"]
    result = run_in_process(*export_argv(world["run"], out, "--overwrite"))  # and the next export goes through
    assert result.returncode == 0, result.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["exp"]
