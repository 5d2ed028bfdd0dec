"""The validation split (issue #25): builders write val/ with --val-size N (its own seed stream,
no instance equal to a train or test one, train/ and test/ unchanged), the loader checks it like
test/, and a run evaluates on it with data.eval_split=val."""

import json
import shutil

import numpy as np
import pytest

from conftest import assert_one_line_error, build_lsa, dir_digest, run_in_process, tiny_config
from core.errors import DatasetError
from dataset.common import load_split, recorded_build_args
from evaluators.tasks import TASKS


def build_task(name):
    """A builder of the registered task `name` at its tiny size (`Task.tiny_build_args`)."""
    from evaluators.tasks import get_task

    task = get_task(name)

    def build(out, **overrides):
        return task.build(task.config_class()(**{**task.tiny_build_args, "output_dir": out, "progress": False, **overrides}))

    return build


BUILDERS = {name: build_task(name) for name in TASKS}
build_arith, build_sudoku = BUILDERS["arith"], BUILDERS["sudoku"]


def originals(path, split):
    """The first example of each group (the original instance) as bytes of its input row."""
    arrays = load_split(path, split)[1]["all"]
    return [arrays.inputs[i].tobytes() for i in arrays.puzzle_indices[arrays.group_indices[:-1]]]


@pytest.mark.parametrize("task", sorted(BUILDERS))
def test_val_leaves_train_and_test_bit_identical(tmp_path, task):
    build = BUILDERS[task]
    plain, with_val, again = build(tmp_path / "plain"), build(tmp_path / "val", val_size=5), build(tmp_path / "again", val_size=5)
    assert not (plain / "val").exists()
    for split in ("train", "test"):
        assert dir_digest(plain / split) == dir_digest(with_val / split), split
    assert sorted(p.name for p in plain.iterdir()) == sorted(p.name for p in with_val.iterdir() if p.name != "val")
    assert dir_digest(with_val / "val") == dir_digest(again / "val")  # deterministic
    meta, sets = load_split(with_val, "val")
    assert meta.total_groups == 5 and sets["all"].num_examples == 5  # not augmented
    assert json.loads((with_val / "val" / "dataset.json").read_text())["build_args"]["val_size"] == 5
    assert "val_size" not in json.loads((with_val / "train" / "dataset.json").read_text())["build_args"]
    assert recorded_build_args(with_val)["val_size"] == 5 and recorded_build_args(plain)["val_size"] == 0
    val = originals(with_val, "val")
    assert len(set(val)) == 5 and not set(val) & set(originals(with_val, "test") + originals(with_val, "train"))
    if task == "sudoku":  # the test split's ratings array, for the evaluator's accuracy by rating
        assert np.load(with_val / "val" / "all__ratings.npy").shape == (5,)


def test_val_redraws_instances_equal_to_train_or_test_lsa(tmp_path):
    """2x2 costs in 1..2: 16 matrices, 15 of them used, so val's draws hit train and test ones."""
    out = build_lsa(tmp_path / "d", n=2, max_cost=2, num_train=5, num_test=5, num_aug=1, val_size=5)
    val, test, train = (set(originals(out, s)) for s in ("val", "test", "train"))
    assert len(val) == 5 and not val & (test | train)
    with pytest.raises(DatasetError, match="no new acceptable instance"):  # the 16th and 17th do not exist
        build_lsa(tmp_path / "e", n=2, max_cost=2, num_train=5, num_test=5, num_aug=1, val_size=7)


def test_val_redraws_pairs_equal_to_train_or_test_arith(tmp_path):
    """Base 2, 1-2 digits: 10 unordered pairs, all used; in either order none repeats."""
    from dataset.build_arith_dataset import ArithLayout, decode_example

    out = build_arith(tmp_path / "d", base=2, num_train=4, num_test=3, num_aug=0, val_size=3)

    def pairs(split):
        meta, sets = load_split(out, split)
        layout = ArithLayout.from_metadata(meta)
        decoded = (decode_example(i, l, layout) for i, l in zip(sets["all"].inputs, sets["all"].labels))
        return [(min(a, b), max(a, b)) for a, b, _ in decoded]

    val, others = pairs("val"), pairs("train") + pairs("test")
    assert len(set(val)) == 3 and not set(val) & set(others)
    with pytest.raises(ValueError, match="--val-size 4: with --num-train 4 and --num-test 3, only 10 distinct pairs"):
        build_arith(tmp_path / "e", base=2, num_train=4, num_test=3, num_aug=0, val_size=4)  # refused by the arguments' check
    assert not (tmp_path / "e").exists()


def test_val_of_an_import_skips_puzzles_equal_to_train_or_test(tmp_path):
    from test_sudoku_csv import write_csv

    from dataset.sudoku_solver import generate_puzzle

    made = []
    for k in range(8):
        puzzle, solution, _ = generate_puzzle(np.random.default_rng(100 + k), 26, 30)
        made.append(("".join(str(d) if d else "." for d in puzzle), "".join(map(str, solution)), 1))
    train_rows, test_only = made[:4], made[4:]
    # The test file repeats a training puzzle and each of its own: val may take none of them twice.
    test_rows = [train_rows[0]] * 3 + [r for r in test_only for _ in range(2)]
    train_csv, test_csv = write_csv(tmp_path / "train.csv", train_rows), write_csv(tmp_path / "test.csv", test_rows)
    common = dict(source_csv=train_csv, source_test_csv=test_csv, num_test=2, min_clues=None, max_clues=None)
    out = build_sudoku(tmp_path / "d", val_size=2, **common)
    val, test, train = (set(originals(out, s)) for s in ("val", "test", "train"))
    assert len(val) == 2 and not val & (test | train)
    plain = build_sudoku(tmp_path / "p", **common)
    for split in ("train", "test"):
        assert dir_digest(plain / split) == dir_digest(out / split)
    with pytest.raises(DatasetError, match="--val-size 4: only"):
        build_sudoku(tmp_path / "e", val_size=4, **common)


def test_writer_refuses_a_val_split_that_disagrees_with_val_size(tmp_path):
    from dataset.writer import write_dataset

    out = build_lsa(tmp_path / "d", val_size=3)
    splits = {s: load_split(out, s) for s in ("train", "test", "val")}
    splits = {s: (meta, sets["all"]) for s, (meta, sets) in splits.items()}
    args = recorded_build_args(out)
    with pytest.raises(ValueError, match="val_size=3 but the val split holds 0"):
        write_dataset(tmp_path / "a", False, {k: v for k, v in splits.items() if k != "val"}, build_args=args)
    with pytest.raises(ValueError, match="val_size=2 but the val split holds 3"):
        write_dataset(tmp_path / "b", False, splits, build_args={**args, "val_size": 2})


def test_overwrite_replaces_a_dataset_with_val(tmp_path):
    out = build_lsa(tmp_path / "d", val_size=3)
    build_lsa(out, overwrite=True)  # the guard knows val/ as the builders' own
    assert not (out / "val").exists()


@pytest.fixture()
def with_val(tmp_path):
    return build_lsa(tmp_path / "v", val_size=6)


@pytest.mark.parametrize("damage, culprit", [
    ("tokens", "val/all__inputs.npy"),
    ("vocab_size", "and val/dataset.json disagree on 'vocab_size'"),
    ("no_meta", "val/dataset.json"),
    ("not_a_dir", "val/dataset.json"),
])
def test_loader_checks_val_like_test(with_val, damage, culprit):
    from dataset.loader import PuzzleDataset

    val = with_val / "val"
    if damage == "tokens":
        inputs = np.load(val / "all__inputs.npy")
        inputs[0, 0] = 200
        np.save(val / "all__inputs.npy", inputs)
    elif damage == "vocab_size":
        record = json.loads((val / "dataset.json").read_text())
        record["vocab_size"] = 200
        (val / "dataset.json").write_text(json.dumps(record))
    elif damage == "no_meta":
        (val / "dataset.json").unlink()
    else:
        shutil.rmtree(val)
        val.write_text("not a split\n")
    with pytest.raises(DatasetError, match=culprit.replace(".", r"\.")) as info:
        PuzzleDataset.load(with_val)
    assert "\n" not in str(info.value)


def test_loader_reads_val_and_split_names_a_missing_one(tmp_path, with_val):
    from dataset.loader import PuzzleDataset

    data = PuzzleDataset.load(with_val)
    meta, arrays = data.split("val")
    assert arrays.num_examples == 6 and meta.total_groups == 6 and data.split("test")[1] is data.test
    plain = PuzzleDataset.load(build_lsa(tmp_path / "plain"))
    assert plain.val is None
    with pytest.raises(DatasetError, match=r"plain/val: not found.*--val-size N.*data\.build_args\.val_size=N"):
        plain.split("val")


# ---------------------------------------------------------------------------------------------
# Configs and the loop


def check(*overrides):
    return run_in_process("pretrain.py", "--config-name", "cfg_lsa_cpu", "--check", *overrides)


def test_check_refuses_eval_on_a_missing_val(tmp_path):
    data = build_lsa(tmp_path / "plain", num_train=300, num_test=100, num_aug=4)
    base = [f"data.path={data}", f"logging.runs_dir={tmp_path / 'runs'}", "data.build_args={n: 4, max_cost: 9, "
            "num_train: 300, num_test: 100, num_aug: 4, seed: 0}", "train.global_batch_size=32"]
    assert check(*base).returncode == 0
    assert_one_line_error(check(*base, "data.eval_split=val"), "data.eval_split=val", f"{data}/val", "--val-size N")
    # Asking for a val split the dataset there was not built with: refused, a new path named.
    assert_one_line_error(check(*base, "data.eval_split=val", "+data.build_args.val_size=20"),
                          f"data.path={data}", "val_size=0 (the config: 20)", f"data.path={data}-val20")
    assert not (data / "val").exists()
    # A dataset still to be built: val/ must be asked for before the build starts.
    assert_one_line_error(check(f"data.path={tmp_path / 'new'}", f"logging.runs_dir={tmp_path / 'runs'}",
                                "data.eval_split=val"), "data.eval_split=val", "data.build_args.val_size")
    ok = check(f"data.path={tmp_path / 'new'}", f"logging.runs_dir={tmp_path / 'runs'}", "data.eval_split=val",
               "+data.build_args.val_size=10")
    assert ok.returncode == 0, ok.stderr
    assert not (tmp_path / "new").exists()  # --check builds nothing


def test_a_dataset_with_val_serves_a_config_without_it(tmp_path):
    """A config with val_size 0 may use a dataset built with val/ (train/ and test/ are the same
    files); one that asks for another val_size may not."""
    from training.engine.setup import build_differences, check_val_request

    data = build_lsa(tmp_path / "d", val_size=8)
    args = "data.build_args={n: 4, max_cost: 9, num_train: 40, num_test: 10, num_aug: 3, seed: 0}"
    cfg = tiny_config(tmp_path, args, data=data)
    assert build_differences(cfg) == []
    check_val_request(cfg)
    cfg = tiny_config(tmp_path, args, "+data.build_args.val_size=9", data=data)
    assert build_differences(cfg) == ["val_size=8 (the config: 9)"]
    with pytest.raises(DatasetError, match="val_size=8 .the config: 9."):
        check_val_request(cfg)


@pytest.fixture(scope="module")
def val_run(tmp_path_factory):
    from training.loop import train

    tmp = tmp_path_factory.mktemp("valrun")
    cfg = tiny_config(tmp, "+data.build_args.val_size=40", "data.eval_split=val", "train.max_steps=6",
                      "train.eval_interval=3", "train.log_every=3", "logging.run_name=v", "train.best_metric=eval/exact_accuracy")
    return tmp, train(cfg)


def test_a_run_evaluates_on_val(val_run):
    tmp, result = val_run
    data, run_dir = tmp / "data", tmp / "runs" / "trm-lsa-cpu" / "v"
    assert (data / "val" / "dataset.json").is_file()  # built on first use with val/
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    evals = [r for r in records if "eval/accuracy" in r]
    assert len(evals) == 2 and all(r["eval_split"] == "val" for r in evals)
    assert all(r["eval/examples"] == 40 for r in evals)  # val's 40, not test's 100
    assert json.loads((run_dir / "run.json").read_text())["eval_split"] == "val"
    meta = json.loads((run_dir / "checkpoints" / "step_0000006" / "meta.json").read_text())
    assert meta["eval_split"] == "val" and meta["metrics"]["eval/examples"] == 40
    assert (run_dir / "checkpoints" / "best").is_file()


def test_evaluate_script_split(val_run, tmp_path):
    tmp, result = val_run
    run_dir = tmp / "runs" / "trm-lsa-cpu" / "v"
    out = run_in_process("scripts/evaluate.py", "--checkpoint", str(run_dir), "--no-progress", "--split", "val")
    assert out.returncode == 0, out.stderr
    val = json.loads(out.stdout.strip().splitlines()[-1])
    assert val["split"] == "val" and val["eval/examples"] == 40
    for key in ("eval/accuracy", "eval/exact_accuracy", "eval/lsa/optimal_cost_rate"):
        assert val[key] == pytest.approx(result[key], abs=1e-6), key
    out = run_in_process("scripts/evaluate.py", "--checkpoint", str(run_dir), "--no-progress")
    test = json.loads(out.stdout.strip().splitlines()[-1])
    assert test["split"] == "test" and test["eval/examples"] == 100
    plain = build_lsa(tmp_path / "plain", num_train=300, num_test=100, num_aug=4)
    missing = run_in_process("scripts/evaluate.py", "--checkpoint", str(run_dir), "--data", str(plain), "--split", "val")
    assert_one_line_error(missing, f"{plain}/val", "--val-size")


def test_every_registered_builder_takes_val_size():
    """A new task's builder gets --val-size (docs/EXTENDING.md, "Adding a task") and declares a
    tiny build, so the checks above cover it."""
    from evaluators.tasks import get_task

    for name in TASKS:
        task = get_task(name)
        field = task.config_class().model_fields.get("val_size")
        assert field is not None and field.default == 0, name
        assert task.tiny_build_args, f"{name}: declare Task.tiny_build_args"
