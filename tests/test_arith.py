"""Arithmetic task: the builder (layout, sampling, augmentation, CLI errors) and the evaluator."""

import json

import numpy as np
import pytest
import torch

from conftest import REPO, assert_one_line_error, dir_digest, run_in_process, run_module
from dataset.build_arith_dataset import (
    ArithBuildConfig,
    ArithLayout,
    build_arith_dataset,
    compute_answers,
    decode_example,
    digits_to_int,
    encode_problems,
    total_pairs,
)
from core.errors import DatasetError
from dataset.common import DatasetMetadata, load_split
from dataset.loader import PuzzleDataset
from evaluators import build_evaluator
from evaluators.arith import score_arith


def build_arith(out, **overrides):
    args = dict(output_dir=out, op="add", base=10, min_digits=1, max_digits=3, num_train=60, num_test=20, num_aug=1,
                seed=0, progress=False)
    args.update(overrides)
    return build_arith_dataset(ArithBuildConfig(**args))


def decoded(path, split):
    """All examples of a split as (a, b, answer) ints, plus the layout and the split arrays."""
    meta, sets = load_split(path, split)
    layout = ArithLayout.from_metadata(meta)
    arrays = sets["all"]
    triples = [decode_example(x, y, layout) for x, y in zip(arrays.inputs, arrays.labels)]
    return triples, layout, arrays


def digit_count(value, base):
    count = 1
    while value >= base:
        value //= base
        count += 1
    return count


def true_answer(op, a, b):
    return a + b if op == "add" else a * b


@pytest.fixture(scope="module")
def add_small(tmp_path_factory):
    return build_arith(tmp_path_factory.mktemp("arith") / "add")


# ---------------------------------------------------------------------------------------------
# Builder


@pytest.mark.parametrize("op", ["add", "mul"])
@pytest.mark.parametrize("base, max_digits", [(2, 6), (10, 3), (16, 3), (36, 2)])
def test_labels_decode_to_the_true_answer(tmp_path, op, base, max_digits):
    out = build_arith(tmp_path / "d", op=op, base=base, max_digits=max_digits, num_train=40, num_test=10)
    for split in ("train", "test"):
        triples, layout, arrays = decoded(out, split)
        assert (layout.op, layout.base) == (op, base)
        for a, b, answer in triples:
            assert answer == true_answer(op, a, b)
        answer_cols = np.zeros(layout.seq_len, dtype=bool)
        answer_cols[layout.answer_slice] = True
        assert np.all(arrays.labels[:, ~answer_cols] == 0)  # ignore label everywhere else
        assert np.all(arrays.labels[:, answer_cols] >= 1)  # digits never use token 0


def test_answers_beyond_int64_match_python_integers():
    rng = np.random.default_rng(1)
    layout = ArithLayout.for_task("mul", 36, 20)
    a = rng.integers(0, 36, size=(50, 20)).astype(np.uint8)
    b = rng.integers(0, 36, size=(50, 20)).astype(np.uint8)
    for op, width in (("add", 21), ("mul", 40)):
        answers = compute_answers(a, b, op, 36, width)
        for i in range(50):
            assert digits_to_int(answers[i], 36) == true_answer(op, digits_to_int(a[i], 36), digits_to_int(b[i], 36))
    assert layout.answer_width == 40 and layout.seq_len == 20 + 1 + 20 + 1 + 40


def test_layout_example_base16():
    """0x3A + 0x7 = 0x41, least-significant digit first, in a 2-digit layout."""
    layout = ArithLayout.for_task("add", 16, 2)
    a, b = np.array([[0xA, 0x3]], np.uint8), np.array([[0x7, 0]], np.uint8)
    inputs, labels = encode_problems(a, b, compute_answers(a, b, "add", 16, layout.answer_width), layout)
    names = layout.token_names()
    assert [names[t] for t in inputs[0]] == ["a", "3", "+", "7", "<pad>", "=", "_", "_", "_"]
    assert [names[t] for t in labels[0]] == ["<pad>"] * 6 + ["1", "4", "0"]
    assert decode_example(inputs[0], labels[0], layout) == (0x3A, 0x7, 0x41)


def test_vocab_json_names_every_token(add_small):
    vocab = json.loads((add_small / "vocab.json").read_text())
    meta, sets = load_split(add_small, "train")
    assert len(vocab["tokens"]) == meta.vocab_size == 10 + 5
    assert vocab["tokens"][:3] == ["<pad>", "0", "1"] and vocab["tokens"][-4:] == ["+", "*", "=", "_"]
    assert vocab["layout"] == meta.layout and vocab["digit_order"] == "lsd_first"
    for split in ("train", "test"):
        _, sets = load_split(add_small, split)
        used = np.union1d(np.unique(sets["all"].inputs), np.unique(sets["all"].labels))
        assert used.max() < len(vocab["tokens"])
    layout = ArithLayout.model_validate(vocab["layout"])
    assert vocab["tokens"][layout.add_token] == "+" and vocab["tokens"][layout.slot_token] == "_"


@pytest.mark.parametrize("op, base, digits", [("mul", 10, 3), ("add", 10, 3), ("mul", 2, 5), ("add", 36, 2)])
def test_seq_len_fits_the_largest_problem(tmp_path, op, base, digits):
    out = build_arith(tmp_path / "d", op=op, base=base, min_digits=digits, max_digits=digits, num_train=10, num_test=5)
    train_meta, _ = load_split(out, "train")
    test_meta, _ = load_split(out, "test")
    layout = ArithLayout.from_metadata(train_meta)
    answer_width = digits + 1 if op == "add" else 2 * digits
    assert train_meta.seq_len == test_meta.seq_len == 2 * digits + 2 + answer_width == layout.seq_len
    largest = np.full((1, digits), base - 1, dtype=np.uint8)  # 99..9 (in base B)
    inputs, labels = encode_problems(largest, largest, compute_answers(largest, largest, op, base, answer_width), layout)
    top = base**digits - 1
    assert decode_example(inputs[0], labels[0], layout) == (top, top, true_answer(op, top, top))


def test_digit_counts_stay_in_range(tmp_path):
    out = build_arith(tmp_path / "d", op="mul", base=7, min_digits=2, max_digits=4, num_train=200, num_test=50)
    seen = set()
    for split in ("train", "test"):
        triples, _, _ = decoded(out, split)
        for a, b, _ in triples:
            seen |= {digit_count(a, 7), digit_count(b, 7)}
    assert seen == {2, 3, 4}


def test_augmented_copy_is_the_swapped_problem(add_small):
    triples, _, arrays = decoded(add_small, "train")
    group_indices = arrays.group_indices
    assert arrays.num_groups == 60
    for g in range(arrays.num_groups):
        members = [triples[p] for p in range(group_indices[g], group_indices[g + 1])]
        a, b, answer = members[0]
        if a == b:
            assert len(members) == 1
        else:
            assert members == [(a, b, answer), (b, a, answer)]


def test_no_augmentation(tmp_path):
    out = build_arith(tmp_path / "d", num_aug=0)
    _, sets = load_split(out, "train")
    assert sets["all"].num_examples == sets["all"].num_groups == 60


def unordered_pairs(triples):
    return {(min(a, b), max(a, b)) for a, b, _ in triples}


def test_problems_are_distinct_and_train_test_disjoint(tmp_path):
    # 1..2-digit base-3 numbers: 9 of them, 45 unordered pairs; ask for all of them.
    assert total_pairs(3, 1, 2) == 45
    out = build_arith(tmp_path / "d", base=3, min_digits=1, max_digits=2, num_train=35, num_test=10)
    train, _, _ = decoded(out, "train")
    test, _, _ = decoded(out, "test")
    train_originals = unordered_pairs(train)
    assert len(train_originals) == 35 and len(unordered_pairs(test)) == len(test) == 10
    assert not train_originals & unordered_pairs(test)
    assert len(train_originals | unordered_pairs(test)) == 45


def test_test_digit_range_for_length_generalisation(tmp_path):
    out = build_arith(tmp_path / "d", op="add", min_digits=1, max_digits=3, test_min_digits=4, test_max_digits=5,
                      num_train=100, num_test=40)
    train, layout, _ = decoded(out, "train")
    test, test_layout, _ = decoded(out, "test")
    assert layout == test_layout and layout.operand_width == 5 and layout.seq_len == 5 + 1 + 5 + 1 + 6
    assert {max(digit_count(a, 10), digit_count(b, 10)) for a, b, _ in train} <= {1, 2, 3}
    assert {digit_count(x, 10) for a, b, _ in test for x in (a, b)} == {4, 5}
    test_meta, _ = load_split(out, "test")
    assert (test_meta.test_min_digits, test_meta.test_max_digits, test_meta.split_digit_range) == (4, 5, [4, 5])




def test_same_arguments_give_identical_bytes(tmp_path):
    a = build_arith(tmp_path / "a", op="mul", seed=3)
    b = build_arith(tmp_path / "b", op="mul", seed=3)
    c = build_arith(tmp_path / "c", op="mul", seed=4)
    assert dir_digest(a) == dir_digest(b) != dir_digest(c)


def test_loads_with_the_training_loader(add_small):
    data = PuzzleDataset.load(add_small)
    assert data.meta.seq_len == 3 + 1 + 3 + 1 + 4 and data.train.inputs.dtype == np.uint8
    assert data.train.num_groups == 60 and data.test.num_examples == 20
    assert data.test_meta.task == "arith" and data.test_meta.vocab_file == "vocab.json"


def test_decode_rejects_malformed_rows():
    layout = ArithLayout.for_task("add", 10, 2)
    a, b = np.array([[5, 1]], np.uint8), np.array([[3, 0]], np.uint8)
    inputs, labels = encode_problems(a, b, compute_answers(a, b, "add", 10, 3), layout)
    assert decode_example(inputs[0], labels[0], layout) == (15, 3, 18)
    gap = inputs[0].copy()
    gap[0] = 0  # padding below a digit
    bad_answer = labels[0].copy()
    bad_answer[layout.answer_start] = layout.eq_token
    for row, lab in ((gap, labels[0]), (inputs[0], bad_answer)):
        with pytest.raises(ValueError, match="decode_number"):
            decode_example(row, lab, layout)


def test_impossible_request_is_an_error_before_writing(tmp_path):
    import pydantic

    # Too few pairs in the ranges at all: refused when the arguments are validated (pretrain.py --check sees it).
    with pytest.raises(pydantic.ValidationError, match="--num-test 3: with --num-train 4, only 6"):
        build_arith(tmp_path / "x", base=3, min_digits=1, max_digits=1, num_train=4, num_test=3)
    assert not (tmp_path / "x").exists()
    # Enough pairs in total, but training (drawn first) used up too many of the test range's.
    with pytest.raises(DatasetError, match="--num-test 10: only 8 .* left after the training split"):
        build_arith(tmp_path / "y", base=3, min_digits=1, max_digits=2, test_min_digits=2, num_train=35, num_test=10)
    assert not (tmp_path / "y").exists()


@pytest.mark.parametrize(
    "args, culprit",
    [
        (["--base", "1"], "--base"),
        (["--base", "37"], "--base"),
        (["--min-digits", "5", "--max-digits", "3"], "--min-digits"),
        (["--min-digits", "0"], "--min-digits"),
        (["--test-min-digits", "4", "--test-max-digits", "2"], "--test-min-digits"),
        (["--num-train", "0"], "--num-train"),
        (["--num-test", "0"], "--num-test"),
        (["--num-aug", "2"], "--num-aug"),
        (["--op", "sub"], "--op"),
        (["--base", "2", "--max-digits", "1", "--num-train", "4"], "--num-train"),  # {0, 1}: 3 pairs
    ],
)
@pytest.mark.slow
def test_bad_arguments_fail_with_one_line(tmp_path, args, culprit):
    out = tmp_path / "out"
    result = run_in_process("-m", "dataset.build_arith_dataset", "--output-dir", str(out), "--no-progress",
                            "--num-test", "1", *args)
    assert_one_line_error(result, culprit)
    assert not out.exists()


@pytest.mark.slow
def test_cli_builds(tmp_path):
    out = tmp_path / "cli"
    result = run_module("-m", "dataset.build_arith_dataset", "--output-dir", str(out), "--op", "mul", "--base", "16",
                        "--min-digits", "1", "--max-digits", "2", "--num-train", "30", "--num-test", "5", "--seed", "1",
                        "--no-progress")
    assert result.returncode == 0, result.stderr
    assert dir_digest(out) == dir_digest(build_arith(tmp_path / "api", op="mul", base=16, max_digits=2, num_train=30,
                                               num_test=5, seed=1))


# ---------------------------------------------------------------------------------------------
# Evaluator


def decimal_digits(value, width):
    """LSD-first decimal digits of `value` in a field of `width`."""
    return [(value // 10**i) % 10 for i in range(width)]


def hand_made_problems():
    """Four base-10 add problems in a 3-digit layout: 7+5, 12+9, 305+8, 999+999."""
    layout = ArithLayout.for_task("add", 10, 3)
    pairs = [(7, 5), (12, 9), (305, 8), (999, 999)]
    a = np.array([decimal_digits(x, 3) for x, _ in pairs], np.uint8)
    b = np.array([decimal_digits(y, 3) for _, y in pairs], np.uint8)
    inputs, labels = encode_problems(a, b, compute_answers(a, b, "add", 10, layout.answer_width), layout)
    return layout, inputs, labels


def test_score_all_right():
    layout, inputs, labels = hand_made_problems()
    preds = labels.copy()
    preds[:, : layout.answer_start] = 3  # outside the answer field: not scored
    m = score_arith(inputs, preds, labels, layout)
    assert m["exact_accuracy"] == m["digit_accuracy"] == m["well_formed_rate"] == 1.0
    assert {k: v for k, v in m.items() if "digits_" in k} == {
        "exact_accuracy_digits_1": 1.0, "exact_accuracy_digits_2": 1.0, "exact_accuracy_digits_3": 1.0}
    assert [m[f"digit_accuracy_pos_{i}"] for i in range(4)] == [1.0] * 4


def test_score_one_digit_wrong_and_breakdown():
    layout, inputs, labels = hand_made_problems()
    preds = labels.copy()
    preds[2, layout.answer_start + 1] += 1  # 305 + 8 = 313 predicted as 323
    m = score_arith(inputs, preds, labels, layout)
    assert m["exact_accuracy"] == 0.75
    assert m["digit_accuracy"] == pytest.approx(15 / 16)
    assert m["digit_accuracy_pos_1"] == 0.75 and m["digit_accuracy_pos_0"] == 1.0
    assert m["exact_accuracy_digits_3"] == 0.5  # 305+8 wrong, 999+999 right
    assert m["exact_accuracy_digits_1"] == m["exact_accuracy_digits_2"] == 1.0
    preds[0, layout.answer_start] = layout.slot_token  # not a digit at all
    m = score_arith(inputs, preds, labels, layout)
    assert m["well_formed_rate"] == 0.75 and m["exact_accuracy_digits_1"] == 0.0


def test_score_rejects_bad_input():
    layout, inputs, labels = hand_made_problems()
    with pytest.raises(ValueError, match="predicted_labels"):
        score_arith(inputs, labels[:, :5], labels, layout)
    with pytest.raises(ValueError, match="layout"):
        score_arith(np.zeros_like(inputs), labels, labels, layout)
    ignored = labels.copy()
    ignored[:, layout.answer_start] = -100
    with pytest.raises(ValueError, match="target_labels"):
        score_arith(inputs, labels, ignored, layout)


def test_evaluator_protocol_end_to_end(add_small):
    test_meta, sets = load_split(add_small, "test")
    arrays = sets["all"]
    ev = build_evaluator({"name": "arith"}, test_meta)
    assert ev.name == "arith" and ev.required_outputs == {"preds"}
    layout = ArithLayout.from_metadata(test_meta)
    labels = arrays.labels.astype(np.int64)
    labels[labels == 0] = -100  # what the loader hands the evaluator
    preds = arrays.labels.astype(np.int64)
    preds[0, layout.answer_start] = preds[0, layout.answer_start] % 10 + 1  # a different digit
    ev.begin_eval()
    for lo, hi in ((0, 12), (12, 20)):
        ev.update_batch({"inputs": torch.from_numpy(arrays.inputs[lo:hi].astype(np.int32)),
                         "labels": torch.from_numpy(labels[lo:hi])}, {"preds": torch.from_numpy(preds[lo:hi])})
    result = ev.result(None)
    assert result["exact_accuracy"] == pytest.approx(19 / 20)
    assert all(isinstance(v, float) for v in result.values())


def test_evaluator_refuses_other_datasets():
    meta = DatasetMetadata(pad_id=0, ignore_label_id=0, blank_identifier_id=0, vocab_size=11, seq_len=16,
                           num_puzzle_identifiers=1, total_groups=1, mean_puzzle_examples=1.0, total_puzzles=1,
                           sets=["all"], task="lsa")
    with pytest.raises(ValueError, match="scores arith datasets"):
        build_evaluator({"name": "arith"}, meta)
    with pytest.raises(ValueError, match="bogus: Extra inputs are not permitted"):
        build_evaluator({"name": "arith", "bogus": 1}, meta)


# ---------------------------------------------------------------------------------------------
# Configs and the training loop


def compose_config(name, overrides=()):
    from hydra import compose, initialize_config_dir
    from omegaconf import OmegaConf

    from training.config import validate_config

    with initialize_config_dir(config_dir=str(REPO / "config"), version_base=None):
        return validate_config(OmegaConf.to_container(compose(name, overrides=list(overrides)), resolve=True))


@pytest.mark.parametrize("name, op, base, max_digits", [("cfg_arith", "add", 16, 8), ("cfg_arith_mul", "mul", 10, 4),
                                                        ("cfg_arith_cpu", "add", 10, 4)])
def test_shipped_configs_validate_and_their_build_args_too(tmp_path, name, op, base, max_digits):
    from dataset.build_arith_dataset import check_arguments

    cfg = compose_config(name)
    assert cfg.data.builder == "arith" and cfg.evaluators == [{"name": "arith"}]
    build = ArithBuildConfig.model_validate({**cfg.data.build_args, "output_dir": tmp_path / "unused"})
    assert (build.op, build.base, build.max_digits) == (op, base, max_digits)
    check_arguments(build)  # the requested counts exist


def test_misspelt_build_arg_is_refused(tmp_path):
    from dataset import build_dataset

    with pytest.raises(DatasetError, match="max_digit"):
        build_dataset("arith", {"max_digit": 3}, tmp_path / "d", progress=False)
    assert not (tmp_path / "d").exists()


@pytest.mark.slow
def test_training_loop_runs_the_arith_evaluator(tmp_path):
    """A few steps of the CPU preset, built on first use; the evaluator's numbers must agree
    with the loss head's (both score exactly the answer field)."""
    from training.loop import train

    result = train(compose_config("cfg_arith_cpu", [
        f"data.path={tmp_path / 'data'}", f"logging.runs_dir={tmp_path / 'runs'}", "logging.wandb_mode=disabled",
        "logging.progress=false", "data.build_args.num_train=200", "data.build_args.num_test=50",
        "arch.hidden_size=32", "arch.num_heads=2", "arch.H_cycles=1", "arch.L_cycles=1", "arch.halt_max_steps=2",
        "train.global_batch_size=32", "train.max_steps=6", "train.eval_interval=6", "train.save_checkpoints=false",
    ]))
    assert result["step"] == 6 and result["eval/examples"] == 50
    assert result["eval/arith/exact_accuracy"] == pytest.approx(result["eval/exact_accuracy"])
    assert result["eval/arith/digit_accuracy"] == pytest.approx(result["eval/accuracy"], abs=1e-6)
    assert "eval/arith/digit_accuracy_pos_4" in result and "eval/arith/exact_accuracy_digits_4" in result
    assert (tmp_path / "runs" / "trm-arith-cpu").is_dir()
