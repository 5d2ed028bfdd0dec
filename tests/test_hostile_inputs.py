"""Hostile input, table-driven: every case runs a real command line and must end with exit
code 2, exactly one line on stderr that names the culprit, and every file that existed
before (datasets, runs, checkpoints) byte-for-byte unchanged."""

import hashlib
import resource
import shutil
import subprocess
import sys

import numpy as np
import pytest
import torch

from conftest import REPO, assert_one_line_error, build_lsa, run_module
from training.loop import train

PROJECT = "trm-lsa-cpu"
TINY = ["arch.hidden_size=32", "arch.num_heads=2", "arch.H_cycles=1", "arch.L_cycles=2", "arch.halt_max_steps=2",
        "train.global_batch_size=32", "logging.progress=false"]


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """A dataset, a 3x3 dataset, and a finished run with a checkpoint, built once."""
    root = tmp_path_factory.mktemp("hostile")
    data = build_lsa(root / "lsa4", num_train=60, num_test=20, num_aug=2)
    data3 = build_lsa(root / "lsa3", n=3, num_train=30, num_test=10, num_aug=1)
    from conftest import tiny_config

    train(tiny_config(root, "train.max_steps=6", "train.eval_interval=3", "logging.run_name=base",
                      "train.global_batch_size=32", data=data))
    return {"root": root, "data": data, "data3": data3, "run": root / "runs" / PROJECT / "base"}


def digest(*paths):
    h = hashlib.sha256()
    for path in paths:
        files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
        for f in files:
            h.update(str(f).encode())
            h.update(f.read_bytes())
    return h.hexdigest()


def copy_data(world, tmp_path, corrupt=None):
    dst = tmp_path / "data"
    shutil.copytree(world["data"], dst)
    if corrupt:
        corrupt(dst)
    return dst


def npy(path, fn):
    np.save(path, fn(np.load(path)))


def copy_run(world, tmp_path):
    dst = tmp_path / "runs" / PROJECT / "base"
    shutil.copytree(world["run"], dst)
    return dst


def pretrain(data, tmp_path, *extra):
    return ["pretrain.py", "--config-name", "cfg_lsa_cpu", f"data.path={data}", f"logging.runs_dir={tmp_path / 'runs'}",
            "logging.run_name=new", *TINY, *extra]


def lsa_builder(tmp_path, *extra):
    return ["-m", "dataset.build_lsa_dataset", "--output-dir", str(tmp_path / "out"), "--no-progress", *extra]


def ckpt_of(run_dir):
    return run_dir / "checkpoints" / (run_dir / "checkpoints" / "latest").read_text()


# Each case: (setup(world, tmp_path) -> (argv, watched paths), culprit that the error line must name)
def case_builder(*flags):
    return lambda w, t: (lsa_builder(t, *flags), [])


def case_nonempty_output(w, t):
    out = t / "out"
    out.mkdir()
    (out / "keep.txt").write_text("precious")
    return lsa_builder(t, "--n", "3"), [out]


def case_data(corrupt):
    def setup(w, t):
        data = copy_data(w, t, corrupt)
        return pretrain(data, t), [data]
    return setup


def case_partial_dataset(w, t):
    data = copy_data(w, t, lambda d: shutil.rmtree(d / "test"))
    return pretrain(data, t), [data]


def case_config(*extra):
    def setup(w, t):
        data = copy_data(w, t)
        return pretrain(data, t, *extra), [data]
    return setup


def case_resume_missing(w, t):
    data = copy_data(w, t)
    return pretrain(data, t, "train.resume=true", "logging.run_name=ghost"), [data]


def case_evaluate(make_args):
    def setup(w, t):
        run = copy_run(w, t)
        return ["scripts/evaluate.py", "--no-progress", *make_args(w, t, run)], [run]
    return setup


def truncate(path, keep=0.5):
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)])


class Exploit:
    def __reduce__(self):
        return (print, ("this must never run",))


def plant_exploit(run):
    ckpt = ckpt_of(run)
    state = torch.load(ckpt / "model.pt", weights_only=True)
    state["payload"] = Exploit()
    torch.save(state, ckpt / "model.pt")


def case_ckpt(mutate, *extra, resume=False):
    """A copy of the base run, mutated, then resumed (or used as load_checkpoint)."""
    def setup(w, t):
        run = copy_run(w, t)
        mutate(run)
        data = copy_data(w, t)
        watched = [run / "checkpoints", data]
        if resume:
            return pretrain(data, t, "logging.run_name=base", "train.resume=true", "train.max_steps=9", *extra), watched
        return pretrain(data, t, f"train.load_checkpoint={run}", "train.max_steps=2", *extra), watched
    return setup


def case_full_disk(w, t):
    run = copy_run(w, t)
    data = copy_data(w, t)
    argv = pretrain(data, t, "logging.run_name=base", "train.resume=true", "train.max_steps=9", "train.eval_interval=3")
    return argv, [run / "checkpoints", data]


CASES = {
    # builders
    "builder n < 2": (case_builder("--n", "1"), "--n"),
    "builder max-cost < 1": (case_builder("--max-cost", "0"), "--max-cost"),
    "builder negative count": (case_builder("--num-train", "-5"), "--num-train"),
    "builder non-empty output": (case_nonempty_output, "--overwrite"),
    # loader
    "missing labels file": (case_data(lambda d: (d / "train" / "all__labels.npy").unlink()), "all__labels.npy"),
    "float inputs": (case_data(lambda d: npy(d / "train" / "all__inputs.npy", lambda a: a.astype(np.float32))), "all__inputs.npy"),
    "wrong label shape": (case_data(lambda d: npy(d / "test" / "all__labels.npy", lambda a: a[:, :10])), "all__labels.npy"),
    "token >= vocab": (case_data(lambda d: npy(d / "train" / "all__inputs.npy", lambda a: a + 20)), "vocab_size"),
    "train/test disagree": (case_data(lambda d: (d / "test" / "dataset.json").write_text(
        (d / "test" / "dataset.json").read_text().replace('"vocab_size": 11', '"vocab_size": 12'))), "disagree"),
    "truncated npy": (case_data(lambda d: truncate(d / "train" / "all__inputs.npy")), "cannot read"),
    "empty dataset": (case_data(lambda d: [npy(d / "test" / f"all__{f}.npy", fn) for f, fn in (
        ("inputs", lambda a: a[:0]), ("labels", lambda a: a[:0]), ("puzzle_identifiers", lambda a: a[:0]),
        ("puzzle_indices", lambda a: a[:1]), ("group_indices", lambda a: a[:1]))]), "empty"),
    "half a dataset": (case_partial_dataset, "no complete dataset"),
    # configs
    "unknown key": (case_config("+train.lrr=1"), "train.lrr"),
    "mistyped key": (case_config("optim.lrr=1"), "optim.lrr"),
    "mistyped value": (case_config("train.global_batch_size=abc"), "train.global_batch_size"),
    "unknown arch key": (case_config("+arch.hidden_sise=64"), "arch.hidden_sise"),
    "missing device": (case_config("train.device=cuda:7"), "train.device"),
    "unknown config name": (lambda w, t: (["pretrain.py", "--config-name", "cfg_nope"], []), "cfg_nope"),
    "resume without a run": (case_resume_missing, "train.resume"),
    # checkpoints
    "no such checkpoint": (case_evaluate(lambda w, t, run: ["--checkpoint", str(t / "nope")]), "nope"),
    "checkpoint for another n": (case_evaluate(lambda w, t, run: ["--checkpoint", str(run), "--data", str(w["data3"])]), "seq_len"),
    "truncated model.pt": (case_evaluate(lambda w, t, run: (truncate(ckpt_of(run) / "model.pt"), ["--checkpoint", str(run)])[1]), "model.pt"),
    "pickled code": (case_evaluate(lambda w, t, run: (plant_exploit(run), ["--checkpoint", str(run)])[1]), "refused"),
    "other architecture": (case_ckpt(lambda run: None, "arch.hidden_size=16"), "model.pt"),
    "resume with another model": (case_ckpt(lambda run: None, "arch.num_layers=3", resume=True), "arch.num_layers"),
    "truncated state.pt": (case_ckpt(lambda run: truncate(ckpt_of(run) / "state.pt"), resume=True), "state.pt"),
    "full disk during a save": (case_full_disk, "cannot write checkpoint"),
}


@pytest.mark.parametrize("name", list(CASES))
def test_bad_input_fails_cleanly(world, tmp_path, name):
    setup, culprit = CASES[name]
    argv, watched = setup(world, tmp_path)
    before = digest(*watched) if watched else None
    if name == "full disk during a save":  # files may not grow past 64 KiB: checkpoints cannot be written
        limit = lambda: resource.setrlimit(resource.RLIMIT_FSIZE, (64 * 1024, 64 * 1024))  # noqa: E731
        result = subprocess.run([sys.executable, *argv], cwd=REPO, capture_output=True, text=True, timeout=300,
                                preexec_fn=limit)
    else:
        result = run_module(*argv)
    assert_one_line_error(result, culprit)
    assert "this must never run" not in result.stdout
    if watched:
        assert digest(*watched) == before, "an existing file was changed"


def test_the_table_covers_every_kind_of_input():
    kinds = {name.split()[0] for name in CASES}
    assert len(CASES) >= 20 and {"builder", "missing", "unknown", "truncated"} <= kinds
