"""Hostile input, table-driven: every case runs a real command line (in this process, through
the same entry functions `__main__` uses; the few that need a signal, a file-size limit or a
fresh process run in a subprocess) and must end with its exit code (2 unless it says
otherwise), exactly one line on stderr that names the culprit, and every file that existed
before (datasets, runs, checkpoints, unrelated files) byte-for-byte unchanged, with nothing
new written where the case says nothing may be.

HOSTILE_SUBPROCESS=1 runs every case in a subprocess: that is how the table was checked
against the code before the safety work (where most of these cases failed)."""

import json
import os
import shutil
import signal

import numpy as np
import pytest
import torch

from conftest import (
    CPU_PROJECT, REPO, TINY_CLI, assert_one_line_error, build_lsa, dir_digest, lsa_world, pretrain_argv, run_in_process,
    run_module,
)

PROJECT = CPU_PROJECT
SUBPROCESS = os.environ.get("HOSTILE_SUBPROCESS") == "1"


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """A dataset, a 3x3 dataset, and a finished run with a checkpoint, built once."""
    root = tmp_path_factory.mktemp("hostile")
    world = lsa_world(root)
    data3 = build_lsa(root / "lsa3", n=3, num_train=30, num_test=10, num_aug=1)
    from dataset.build_arith_dataset import ArithBuildConfig, build_arith_dataset

    arith = build_arith_dataset(ArithBuildConfig(output_dir=root / "arith", base=10, max_digits=2, num_train=60,
                                                 num_test=20, seed=0, progress=False))
    return {**world, "data3": data3, "arith": arith}


# ---------------------------------------------------------------------------------------------
# Building blocks


def digest(path):
    return dir_digest(path) if path.is_dir() else (path.read_bytes() if path.exists() else None)


def copy_data(world, tmp_path, corrupt=None):
    dst = tmp_path / "data"
    shutil.copytree(world["data"], dst)
    if corrupt:
        corrupt(dst)
    return dst


def npy(path, fn):
    np.save(path, fn(np.load(path)))


def edit_json(path, fn, replace=False):
    """fn mutates the loaded value in place (or, with replace, returns the new one)."""
    value = json.loads(path.read_text())
    result = fn(value)
    path.write_text(json.dumps(result if replace else value))


def edit_pt(path, fn):
    value = torch.load(path, weights_only=True)
    fn(value)
    torch.save(value, path)


def copy_run(world, tmp_path, name="base"):
    dst = tmp_path / "runs" / PROJECT / name
    shutil.copytree(world["run"], dst)
    return dst


def pretrain(data, tmp_path, *extra):
    return pretrain_argv(data, tmp_path / "runs", "logging.run_name=new", *extra)


def lsa_builder(tmp_path, *extra, out=None):
    return ["-m", "dataset.build_lsa_dataset", "--output-dir", str(out or tmp_path / "out"), "--no-progress",
            "--n", "3", "--num-train", "10", "--num-test", "4", *extra]


def ckpt_of(run_dir):
    return run_dir / "checkpoints" / (run_dir / "checkpoints" / "latest").read_text()


def truncate(path, keep=0.5):
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)])


class Exploit:
    def __reduce__(self):
        return (print, ("this must never run",))


def plant_exploit(path):
    state = torch.load(path, weights_only=True)
    state["payload"] = Exploit()
    torch.save(state, path)


# Each case is setup(world, tmp_path) -> (argv, watched paths, paths that must not exist after).
def case_builder(*flags, builder="lsa"):
    def setup(w, t):
        if builder == "lsa":
            return lsa_builder(t, *flags), [], [t / "out"]
        return ["-m", f"dataset.build_{builder}_dataset", "--output-dir", str(t / "out"), "--no-progress", *flags], [], []
    return setup


def fake_home(t):
    """A home directory for the test (HOME is set to it): a regression must not reach the real one."""
    (t / "home" / "me").mkdir(parents=True, exist_ok=True)
    (t / "home" / "me" / ".bashrc").write_text("mine")
    return t / "home" / "me"


def workdir(t):
    (t / "work" / "sub").mkdir(parents=True, exist_ok=True)
    (t / "work" / "notes.txt").write_text("mine")
    return t / "work"


def case_overwrite(make_target, builder="lsa", cwd=None, env=None):
    """--overwrite aimed at something that is not a dataset this project built (`cwd`/`env`:
    where and with which HOME the command runs)."""
    def setup(w, t):
        target = make_target(w, t)
        argv = (lsa_builder(t, "--overwrite", out=target) if builder == "lsa" else
                ["-m", f"dataset.build_{builder}_dataset", "--output-dir", str(target), "--overwrite", "--no-progress"])
        where = {"cwd": cwd(t) if cwd else REPO, "env": env(t) if env else {}}
        watched = [] if target.resolve() in (REPO, type(t)("/")) else [(where["cwd"] / target).resolve()]
        return argv, watched, [], where
    return setup


def unrelated_files(w, t):
    target = t / "mine"
    target.mkdir()
    (target / "thesis.tex").write_text("precious")
    return target


def parent_of_datasets(w, t):
    shutil.copytree(w["data"], t / "parent" / "a")
    shutil.copytree(w["data"], t / "parent" / "b")
    return t / "parent"


def dataset_plus_notes(w, t):
    data = copy_data(w, t)
    (data / "train" / "NOTES.md").write_text("my notes")
    return data


def reference_dataset(w, t):
    """A dataset from the reference's own builders: no marker, no task field."""
    data = copy_data(w, t)
    for split in ("train", "test"):
        edit_json(data / split / "dataset.json", lambda d: {k: v for k, v in d.items() if k in (
            "pad_id", "ignore_label_id", "blank_identifier_id", "vocab_size", "seq_len", "num_puzzle_identifiers",
            "total_groups", "mean_puzzle_examples", "total_puzzles", "sets")}, replace=True)
    return data


def symlink_to_dataset(w, t):
    data = copy_data(w, t)
    (t / "link").symlink_to(data)
    return t / "link"


def case_data(corrupt, *extra):
    def setup(w, t):
        data = copy_data(w, t, corrupt)
        return pretrain(data, t, *extra), [data], [t / "runs" / PROJECT / "new"]
    return setup


def meta_edit(split, fn):
    return lambda d: edit_json(d / split / "dataset.json", fn)


def case_config(*extra):
    def setup(w, t):
        data = copy_data(w, t)
        return pretrain(data, t, *extra), [data], [t / "runs" / PROJECT / "new"]
    return setup


def case_no_data(*extra):
    """A run whose dataset is missing, so that it would be built (into a directory that must
    stay absent when the build is refused)."""
    def setup(w, t):
        return pretrain(t / "nodata" / "x", t, *extra), [], [t / "nodata", t / "runs" / PROJECT / "new"]
    return setup


def case_resume(mutate, *extra):
    """A copy of the base run, mutated, then resumed in place."""
    def setup(w, t):
        run = copy_run(w, t)
        mutate(run)
        data = copy_data(w, t)
        argv = pretrain(data, t, "logging.run_name=base", "train.resume=true", "train.max_steps=9", *extra)
        return argv, [run, data], []
    return setup


def case_warm_start(mutate, *extra):
    def setup(w, t):
        run = copy_run(w, t)
        mutate(run)
        data = copy_data(w, t)
        return pretrain(data, t, f"train.load_checkpoint={run}", "train.max_steps=2", *extra), [run, data], \
            [t / "runs" / PROJECT / "new"]
    return setup


def case_evaluate(make_args):
    def setup(w, t):
        run = copy_run(w, t)
        return ["scripts/evaluate.py", "--no-progress", *make_args(w, t, run)], [run], []
    return setup


def in_ckpt(name, fn):
    return lambda run: fn(ckpt_of(run) / name)


def state_edit(fn):
    return in_ckpt("state.pt", lambda p: edit_pt(p, fn))


def pointer(run, text):
    (run / "checkpoints" / "latest").write_text(text)


def outside_pointer(run):
    other = run.parent / "other" / "checkpoints"
    shutil.copytree(ckpt_of(run), other / "step_0000006")
    pointer(run, "../../other/checkpoints/step_0000006")


def symlinked_step(run):
    outside = run.parent.parent / "elsewhere"
    shutil.copytree(ckpt_of(run), outside)
    (run / "checkpoints" / "step_0000099").symlink_to(outside)
    pointer(run, "step_0000099")


def outside(t, name="precious.txt"):
    """A file outside the run that must stay as it is."""
    (t / "outside").mkdir(exist_ok=True)
    (t / "outside" / name).write_text("mine")
    return t / "outside" / name


def case_run_entry(make):
    """The base run with one of its entries replaced by `make(run, t)`, then resumed; the
    paths `make` returns (outside the run) must stay unchanged."""
    def setup(w, t):
        run = copy_run(w, t)
        kept = make(run, t)
        data = copy_data(w, t)
        argv = pretrain(data, t, "logging.run_name=base", "train.resume=true", "train.max_steps=9", "train.eval_interval=3")
        return argv, [run / "checkpoints" if not (run / "checkpoints").is_symlink() else kept, data, kept], []
    return setup


def symlink_entry(name):
    def make(run, t):
        target = outside(t)
        (run / name).unlink()
        (run / name).symlink_to(target)
        return target
    return make


def symlink_checkpoints(run, t):
    shutil.move(str(run / "checkpoints"), t / "outside-ckpts")
    (run / "checkpoints").symlink_to(t / "outside-ckpts")
    return t / "outside-ckpts"


def replace_entry(name, kind):
    def make(run, t):
        path = run / name
        shutil.rmtree(path) if path.is_dir() else path.unlink()
        {"fifo": os.mkfifo, "dir": os.mkdir, "file": lambda p: open(p, "w").close()}[kind](path)
        return outside(t)
    return make


def case_arith(corrupt, *extra):
    def setup(w, t):
        data = t / "arith"
        shutil.copytree(w["arith"], data)
        corrupt(data)
        return ["pretrain.py", "--config-name", "cfg_arith_cpu", f"data.path={data}", f"logging.runs_dir={t / 'runs'}",
                "logging.run_name=new", *TINY_CLI, *extra], [data], [t / "runs" / "trm-arith-cpu" / "new"]
    return setup


def nested(depth):
    return "[" * depth + "]" * depth


def sudoku_csv(t, rows, bom=False):
    path = t / "puzzles.csv"
    text = "source,question,answer,rating\n" + "".join(f"x,{q},{a},{r}\n" for q, a, r in rows)
    path.write_text(("\ufeff" if bom else "") + text)
    return path


SOLVED = "534678912672195348198342567859761423426853791713924856961537284287419635345286179"


def case_sudoku_csv(rows, *flags):
    def setup(w, t):
        csv = sudoku_csv(t, rows)
        argv = ["-m", "dataset.build_sudoku_dataset", "--output-dir", str(t / "out"), "--source-csv", str(csv),
                "--num-test", "1", "--num-aug", "1", "--no-progress", *flags]
        return argv, [csv], [t / "out"]
    return setup


def case_signal_in(target, sig=signal.SIGTERM, *extra, builder_cli=False):
    """Send `sig` to this process when `target` (module, attribute) is first called."""
    def setup(w, t):
        data = t / "data"
        argv = (lsa_builder(t, out=data) if builder_cli else
                pretrain(data, t, "data.build_args={n: 3, max_cost: 9, num_train: 60, num_test: 10, num_aug: 2, seed: 0}",
                         *extra))
        return argv, [], [data]
    return setup


CASES = {
    # --- data loss: --overwrite, builders -------------------------------------------------------
    "overwrite unrelated files": (case_overwrite(unrelated_files), "not a dataset this project built"),
    "overwrite the parent of two datasets": (case_overwrite(parent_of_datasets), "not a dataset this project built"),
    "overwrite the project itself": (case_overwrite(lambda w, t: REPO), "this project's directory"),
    "overwrite the root directory": (case_overwrite(lambda w, t: type(t)("/")), "the root directory"),
    "overwrite the home directory": (case_overwrite(lambda w, t: fake_home(t), env=lambda t: {"HOME": str(fake_home(t))}),
                                     "home directory"),
    "overwrite the current directory": (case_overwrite(lambda w, t: type(t)("."), cwd=lambda t: workdir(t)),
                                        "the current directory"),
    "overwrite an ancestor of the current directory": (case_overwrite(lambda w, t: workdir(t),
                                                                      cwd=lambda t: workdir(t) / "sub"), "an ancestor"),
    "overwrite a dataset with a foreign file": (case_overwrite(dataset_plus_notes), "NOTES.md"),
    "overwrite a reference-built dataset": (case_overwrite(reference_dataset), "does not say it was written"),
    "overwrite through a symlink": (case_overwrite(symlink_to_dataset), "symbolic link"),
    "overwrite unrelated files (sudoku)": (case_overwrite(unrelated_files, "sudoku"), "not a dataset this project built"),
    "overwrite unrelated files (arith)": (case_overwrite(unrelated_files, "arith"), "not a dataset this project built"),
    "builder non-empty output": (lambda w, t: (lsa_builder(t, out=unrelated_files(w, t)), [t / "mine"], []),
                                 "--overwrite"),
    "builder output is a file": (lambda w, t: ((t / "f").write_text("x"), lsa_builder(t, out=t / "f"))[1:] + ([t / "f"], []),
                                 "not a directory"),
    "builder n < 2": (case_builder("--n", "1"), "--n"),
    "builder max-cost < 1": (case_builder("--max-cost", "0"), "--max-cost"),
    "builder negative count": (case_builder("--num-train", "-5"), "--num-train"),
    "builder huge augmentation": (case_builder("--num-aug", "1000000000000"), "--num-aug"),
    "builder float augmentation": (case_builder("--num-aug", "1e12"), "--num-aug"),
    "builder unknown flag": (case_builder("--n-aug", "3"), "--n-aug"),
    "arith builder base 37": (case_builder("--base", "37", builder="arith"), "--base"),
    # --- code execution ----------------------------------------------------------------------------
    "inductor option naming a compiler": (case_config("+train.inductor.cpp.cxx=[null,/tmp/evil]"), "cpp.cxx"),
    "inductor option of the wrong type": (case_config("+train.inductor.max_fusion_size=true"), "max_fusion_size"),
    "checkpoint config names a compiler": (case_evaluate(lambda w, t, run: (edit_json(ckpt_of(run) / "config.json",
        lambda c: c["train"].__setitem__("inductor", {"cpp": {"cxx": [None, "/tmp/evil"]}})),
        ["--checkpoint", str(run), "--compile"])[1]), "cpp.cxx"),
    "evaluate --inductor names a compiler": (case_evaluate(lambda w, t, run: ["--checkpoint", str(run), "--compile",
                                                                              "--inductor", "cpp.cxx=/tmp/evil"]), "cpp.cxx"),
    "pickled code in model.pt": (case_evaluate(lambda w, t, run: (plant_exploit(ckpt_of(run) / "model.pt"),
                                                                  ["--checkpoint", str(run)])[1]), "refused"),
    "pickled code in state.pt": (case_resume(in_ckpt("state.pt", plant_exploit)), "refused"),
    "pickled code in optim.pt": (case_resume(in_ckpt("optim.pt", plant_exploit)), "refused"),
    "pickled array in a dataset": (case_data(lambda d: np.save(d / "train" / "all__inputs.npy",
                                                               np.array([Exploit()], dtype=object), allow_pickle=True)),
                                   "all__inputs.npy"),
    "unknown builder name": (case_no_data("data.builder=os.system"), "data.builder"),
    "unknown evaluator name": (case_config("evaluators=[{name: os.system}]"), "evaluators"),
    "unknown model name": (case_config("arch.name=subprocess"), "arch"),
    # --- writes outside the run --------------------------------------------------------------------
    "run name with ..": (case_config("logging.run_name=../../escaped"), "logging.run_name"),
    "config name that is a path": (case_config("--config-name", "../../../tmp/evil"), "--config-name"),
    "config data path empty": (case_config("data.path="), "data.path"),
    "run name with a slash": (case_config("logging.run_name=a/b"), "logging.run_name"),
    "project with ..": (case_config("logging.project=.."), "logging.project"),
    "latest pointing outside its run": (case_resume(outside_pointer), "not a checkpoint directory of this run"),
    "latest naming an absolute path": (case_resume(lambda run: pointer(run, str(ckpt_of(run)))), "latest"),
    "latest naming a symlink out": (case_resume(symlinked_step), "leads outside"),
    "best pointer leaving its run": (case_evaluate(lambda w, t, run: ((run / "checkpoints" / "best").write_text("../.."),
                                     ["--checkpoint", str(run / "checkpoints" / "best")])[1]), "best"),
    # --- hangs: checkpoint fields that could make a run spin -----------------------------------
    "negative sampler offset": (case_resume(state_edit(lambda s: s["sampler"].__setitem__("offset", -5))), "sampler"),
    "sampler offset past the epoch": (case_resume(state_edit(lambda s: s["sampler"].__setitem__("offset", 10**9))),
                                      "sampler.offset"),
    "negative sampler epoch": (case_resume(state_edit(lambda s: s["sampler"].__setitem__("epoch", -1))), "sampler"),
    "sampler seed of the wrong type": (case_resume(state_edit(lambda s: s["sampler"].__setitem__("seed", "0"))), "sampler"),
    # --- checkpoint fields checked before use -----------------------------------------------------
    "step of the wrong type": (case_resume(state_edit(lambda s: s.__setitem__("step", "12"))), "'step'"),
    "negative step": (case_resume(state_edit(lambda s: s.__setitem__("step", -3))), "'step'"),
    "missing RNG state": (case_resume(state_edit(lambda s: s.pop("rng"))), "'rng'"),
    "foreign torch RNG state": (case_resume(state_edit(lambda s: s["rng"].__setitem__("torch", torch.zeros(3)))),
                                "rng.torch"),
    "non-finite train_seconds": (case_resume(state_edit(lambda s: s.__setitem__("train_seconds", float("nan")))),
                                 "train_seconds"),
    "lr_scale zero": (case_resume(state_edit(lambda s: s.__setitem__("lr_scale", 0.0))), "lr_scale"),
    "carry of another shape": (case_resume(state_edit(lambda s: s["carry"].__setitem__(
        "z_latent", s["carry"]["z_latent"][:, :3]))), "carry.z_latent"),
    "carry tokens out of range": (case_resume(state_edit(lambda s: s["carry"]["inputs"].fill_(10**6))), "carry.inputs"),
    "carry steps out of range": (case_resume(state_edit(lambda s: s["carry"]["steps"].fill_(99))), "carry.steps"),
    "wandb id with a path": (case_resume(state_edit(lambda s: s.__setitem__("wandb_id", "../x"))), "wandb_id"),
    "optimizer moment of another shape": (case_resume(in_ckpt("optim.pt", lambda p: edit_pt(p, lambda o: o["adam"][
        "state"][0].__setitem__("exp_avg", torch.zeros(2))))), "adam.state[0].exp_avg"),
    "optimizer step negative": (case_resume(in_ckpt("optim.pt", lambda p: edit_pt(p, lambda o: o["adam"][
        "param_groups"][0].__setitem__("step", -1)))), "step"),
    "EMA holding NaN": (case_resume(in_ckpt("ema.pt", lambda p: edit_pt(p, lambda e: next(iter(e.values())).fill_(
        float("nan"))))), "NaN"),
    "EMA of another shape": (case_warm_start(in_ckpt("ema.pt", lambda p: edit_pt(p, lambda e: e.__setitem__(
        next(iter(e)), torch.zeros(1))))), "ema"),
    "weights of another dtype": (case_warm_start(in_ckpt("model.pt", lambda p: edit_pt(p, lambda m: m.__setitem__(
        "lm_head.weight", m["lm_head.weight"].double())))), "lm_head.weight"),
    "truncated state.pt": (case_resume(in_ckpt("state.pt", truncate)), "state.pt"),
    # random bytes are a corrupt file, not "pickled objects (possible code)": that is for a real pickle (above)
    "random bytes as state.pt": (case_resume(in_ckpt("state.pt", lambda p: p.write_bytes(
        np.random.default_rng(0).bytes(4096)))), "state.pt: cannot load (not a checkpoint file"),
    "zeros as model.pt": (case_resume(in_ckpt("model.pt", lambda p: p.write_bytes(bytes(1024)))),
                          "model.pt: cannot load (not a checkpoint file"),
    "pickled code in state.pt, named": (case_resume(in_ckpt("state.pt", plant_exploit)),
                                        "state.pt: cannot load (refused: it contains pickled objects"),
    "meta.json dataset not an object": (case_resume(in_ckpt("meta.json", lambda p: edit_json(p, lambda m: m.__setitem__(
        "dataset", 5)))), "meta.json"),
    "meta.json not JSON": (case_resume(in_ckpt("meta.json", lambda p: p.write_text("{nope"))), "meta.json"),
    "checkpoint config not an object": (case_evaluate(lambda w, t, run: ((ckpt_of(run) / "config.json").write_text("[1]"),
                                                                         ["--checkpoint", str(run)])[1]), "config.json"),
    "resume with another model": (case_resume(lambda run: None, "arch.num_layers=3"), "arch.num_layers"),
    "other architecture": (case_warm_start(lambda run: None, "arch.hidden_size=16"), "model.pt"),
    "no such checkpoint": (case_evaluate(lambda w, t, run: ["--checkpoint", str(t / "nope")]), "nope"),
    "checkpoint for another n": (case_evaluate(lambda w, t, run: ["--checkpoint", str(run), "--data", str(w["data3"])]),
                                 "seq_len"),
    "truncated model.pt": (case_evaluate(lambda w, t, run: (truncate(ckpt_of(run) / "model.pt"),
                                                            ["--checkpoint", str(run)])[1]), "model.pt"),
    "resume without a run": (case_config("train.resume=true", "logging.run_name=ghost"), "train.resume"),
    # --- found late before: now before the first step, no run directory -------------------------
    "unknown evaluator option": (case_config("evaluators=[{name: lsa, foo: 1}]"), "evaluators[0].foo"),
    "evaluator of another task": (case_config("evaluators=[{name: sudoku}]"), "evaluators[0]"),
    "LSA evaluator on a Sudoku dataset": (case_data(lambda d: [meta_edit(s, lambda m: m.__setitem__("task", "sudoku"))(d)
                                                               for s in ("train", "test")]), "scores lsa datasets"),
    "pad_id outside the vocabulary": (case_data(lambda d: [meta_edit(s, lambda m: m.__setitem__("pad_id", 99))(d)
                                                           for s in ("train", "test")]), "pad_id"),
    "blank id outside the identifiers": (case_data(meta_edit("train", lambda m: m.__setitem__("blank_identifier_id", 3))),
                                         "blank_identifier_id"),
    "learning rate inf": (case_config("optim.lr=inf"), "optim.lr"),
    "learning rate nan": (case_config("optim.lr=nan"), "optim.lr"),
    "epochs inf": (case_config("train.epochs=inf", "train.max_steps=null"), "train.epochs"),
    "rope theta inf": (case_config("+arch.rope_theta=inf"), "arch.rope_theta"),
    "best metric typo": (case_config("train.best_metric=eval/lsa/optimal_cost_rat"), "optimal_cost_rate"),
    "best metric not an eval metric": (case_config("train.best_metric=train/lm_loss"), "train.best_metric"),
    "batch larger than the training set": (case_config("train.global_batch_size=100000"), "train.global_batch_size"),
    "negative time budget": (case_config("train.max_train_seconds=-1"), "train.max_train_seconds"),
    "misspelt build argument": (case_no_data("+data.build_args.nn=3"), "nn"),
    "unknown key": (case_config("+train.lrr=1"), "train.lrr"),
    "mistyped key": (case_config("optim.lrr=1"), "optim.lrr"),
    "mistyped value": (case_config("train.global_batch_size=abc"), "train.global_batch_size"),
    "missing device": (case_config("train.device=cuda:7"), "train.device"),
    "unknown config name": (lambda w, t: (["pretrain.py", "--config-name", "cfg_nope"], [], []), "cfg_nope"),
    # --- datasets: one line where a traceback was -------------------------------------------------
    "NaN mean_puzzle_examples": (case_data(meta_edit("train", lambda m: m.__setitem__("mean_puzzle_examples",
                                                                                      float("nan")))), "mean_puzzle_examples"),
    "huge vocab_size claim": (case_data(lambda d: [meta_edit(s, lambda m: m.__setitem__("vocab_size", 10**12))(d)
                                                   for s in ("train", "test")]), "vocab_size"),
    "set name with a path": (case_data(meta_edit("train", lambda m: m.__setitem__("sets", ["../all"]))), "sets"),
    "dataset.json not an object": (case_data(lambda d: (d / "train" / "dataset.json").write_text("[]")), "dataset.json"),
    "missing labels file": (case_data(lambda d: (d / "train" / "all__labels.npy").unlink()), "all__labels.npy"),
    "float inputs": (case_data(lambda d: npy(d / "train" / "all__inputs.npy", lambda a: a.astype(np.float32))),
                     "all__inputs.npy"),
    "wrong label shape": (case_data(lambda d: npy(d / "test" / "all__labels.npy", lambda a: a[:, :10])), "all__labels.npy"),
    "token >= vocab": (case_data(lambda d: npy(d / "train" / "all__inputs.npy", lambda a: a + 20)), "vocab_size"),
    "train/test disagree": (case_data(meta_edit("test", lambda m: m.__setitem__("seq_len", 15))), "all__inputs.npy"),
    "truncated npy": (case_data(lambda d: truncate(d / "train" / "all__inputs.npy")), "cannot read"),
    "half a dataset": (case_data(lambda d: shutil.rmtree(d / "test")), "no complete dataset"),
    # --- Sudoku CSV import --------------------------------------------------------------------------
    "CSV puzzle with several solutions": (case_sudoku_csv([(SOLVED[:40] + "." * 41, SOLVED, 0), ("." * 81, SOLVED, 0)]),
                                          "more than one solution"),
    "CSV empty grid": (case_sudoku_csv([(SOLVED, SOLVED, 0), ("." * 81, SOLVED, 0)]), "line 3"),
    "CSV over-long field": (case_sudoku_csv([(SOLVED, SOLVED, 0), ("1" * 200_000, SOLVED, 0)]), "line 3"),
    "CSV given contradicting the answer": (case_sudoku_csv([("6" + SOLVED[1:], SOLVED, 0)]), "contradicts"),
    "CSV rating too large": (case_sudoku_csv([(SOLVED, SOLVED, "9" * 23)]), "rating"),
    # --- found by a hostile tester after the first pass ---------------------------------------------
    "config name without a value": (lambda w, t: (["pretrain.py", "--config-name"], [], []), "--config-name"),
    "run config.json a symlink out": (case_run_entry(symlink_entry("config.json")), "symbolic link"),
    "run metrics.jsonl a symlink out": (case_run_entry(symlink_entry("metrics.jsonl")), "symbolic link"),
    "run checkpoints a symlink out": (case_run_entry(symlink_checkpoints), "symbolic link"),
    "run metrics.jsonl a FIFO": (case_run_entry(replace_entry("metrics.jsonl", "fifo")), "not a regular file"),
    "run metrics.jsonl a directory": (case_run_entry(replace_entry("metrics.jsonl", "dir")), "not a regular file"),
    "run eval a file": (case_run_entry(replace_entry("eval", "file")), "not a directory"),
    "dataset lock a FIFO": (lambda w, t: (os.mkfifo(t / ".nodata.lock"),
                                          pretrain(t / "nodata", t, "data.build_args={n: 3, max_cost: 9, num_train: 40, "
                                                   "num_test: 8, num_aug: 1, seed: 0}"))[1:] + ([], [t / "nodata"]),
                            ".nodata.lock"),
    "model far too large": (case_config("arch.hidden_size=1000000000", "arch.num_heads=1"), "arch.hidden_size"),
    "npy header claiming a huge shape": (case_data(lambda d: (d / "train" / "all__inputs.npy").write_bytes(
        b"\x93NUMPY\x01\x00v\x00{'descr': '|u1', 'fortran_order': False, 'shape': (1000000000000, 16), }" + b" " * 43
        + b"\n")), "all__inputs.npy"),
    "seed negative": (case_config("train.seed=-1"), "train.seed"),
    "seed beyond numpy": (case_config("train.seed=99999999999999999999"), "train.seed"),
    "device meta": (case_config("train.device=meta"), "train.device"),
    "expansion without width": (case_config("arch.expansion=1e-9"), "expansion"),
    "learning rate 1e308": (case_config("optim.lr=1e308"), "optim.lr"),
    "optimizer moment a list": (case_resume(in_ckpt("optim.pt", lambda p: edit_pt(p, lambda o: o["adam"]["state"][0]
                                                                                  .__setitem__("exp_avg", [0.0])))), "exp_avg"),
    "optimizer moment missing": (case_resume(in_ckpt("optim.pt", lambda p: edit_pt(p, lambda o: o["adam"]["state"][0]
                                                                                   .pop("exp_avg_sq")))), "adam.state[0]"),
    "optimizer weight decay 1e300": (case_resume(in_ckpt("optim.pt", lambda p: edit_pt(p, lambda o: o["adam"][
        "param_groups"][0].__setitem__("weight_decay", 1e300)))), "weight_decay"),
    "weights of a sparse layout": (case_evaluate(lambda w, t, run: (edit_pt(ckpt_of(run) / "model.pt", lambda m: m.__setitem__(
        "lm_head.weight", m["lm_head.weight"].to_sparse())), ["--checkpoint", str(run), "--no-ema"])[1]), "layout"),
    "deeply nested dataset.json": (case_data(lambda d: (d / "train" / "dataset.json").write_text(nested(100_000))),
                                   "dataset.json"),
    "5000-digit number in meta.json": (case_resume(in_ckpt("meta.json", lambda p: p.write_text(
        '{"step": ' + "9" * 5000 + "}"))), "meta.json"),
    "over-long runs_dir name": (case_config(f"logging.runs_dir=/tmp/{'x' * 300}"), "x" * 40),
    "Sudoku generation below 17 givens": (case_builder("--min-clues", "0", "--max-clues", "10", builder="sudoku"),
                                          "--max-clues"),
    "arith test operator moved": (case_arith(lambda d: npy(d / "test" / "all__inputs.npy", lambda a: a[:, ::-1])),
                                  "evaluators[0]"),
    "arith layout op div": (case_arith(lambda d: [meta_edit(s, lambda m: m["layout"].__setitem__("op", "div"))(d)
                                                  for s in ("train", "test")]), "evaluators[0]"),
    "evaluate on a dataset of another task": (case_evaluate(lambda w, t, run: (
        shutil.copytree(w["data"], t / "other"), [meta_edit(s, lambda m: m.__setitem__("task", "sudoku"))(t / "other")
                                                  for s in ("train", "test")],
        ["--checkpoint", str(run), "--data", str(t / "other")])[2]), "scores lsa datasets"),
    "evaluate into a non-empty directory": (case_evaluate(lambda w, t, run: (
        (t / "preds").mkdir(), (t / "preds" / "keep.npz").write_text("mine"),
        ["--checkpoint", str(run), "--save-predictions", str(t / "preds")])[2]), "--save-predictions"),
    "arch null": (case_config("arch=null"), "arch"),
}

# Cases run in a subprocess (a file-size limit or a signal reaches the whole process).
SUBPROCESS_CASES: dict = {}


def check_case(result, setup_out, culprit, before, code=2):
    argv, watched, absent = setup_out
    assert_one_line_error(result, culprit) if code == 2 else None
    assert result.returncode == code, result.stderr[-2000:]
    assert "this must never run" not in result.stdout + result.stderr
    for path, value in zip(watched, before):
        assert digest(path) == value, f"{path} was changed"
    for path in absent:
        assert not path.exists(), f"{path} was written"


def never_touch_real_places(monkeypatch):
    """A safety net for this test itself: should a regression try to move or delete the project,
    the real home directory or /, fail instead of doing it."""
    real = {REPO, REPO.parent, type(REPO).home().resolve(), type(REPO)("/")}
    for module, name in ((os, "replace"), (os, "rename"), (shutil, "rmtree"), (shutil, "move")):
        original = getattr(module, name)

        def guarded(src, *args, _original=original, _name=name, **kwargs):
            if type(REPO)(src).resolve() in real:
                raise AssertionError(f"test guard: {_name}({src}) was about to run")
            return _original(src, *args, **kwargs)

        monkeypatch.setattr(module, name, guarded)


@pytest.mark.parametrize("name", list(CASES))
def test_bad_input_fails_cleanly(world, tmp_path, monkeypatch, name):
    setup, culprit = CASES[name]
    argv, watched, absent, *where = setup(world, tmp_path)
    where = where[0] if where else {"cwd": REPO, "env": {}}
    before = [digest(p) for p in watched]
    if SUBPROCESS:
        result = run_module(*argv, cwd=where["cwd"], env=where["env"])
    else:
        monkeypatch.chdir(where["cwd"])
        for key, value in where["env"].items():
            monkeypatch.setenv(key, value)
        never_touch_real_places(monkeypatch)
        result = run_in_process(*argv)
    check_case(result, (argv, watched, absent), culprit, before)
    places = [tmp_path]
    if "--output-dir" in argv:  # an --overwrite that was refused must not even start in its parent
        target = (where["cwd"] / argv[argv.index("--output-dir") + 1]).resolve()
        places.append(target.parent)
    leftovers = [p for place in places for pattern in (".*.tmp-*", ".*.old-*") for p in place.glob(pattern)]
    leftovers += [p for p in tmp_path.rglob(".*.tmp-*")]
    assert not leftovers, leftovers


def test_the_table_covers_every_kind_of_input():
    kinds = {name.split()[0] for name in CASES}
    assert len(CASES) >= 60 and {"overwrite", "builder", "pickled", "latest", "carry", "CSV", "run"} <= kinds
