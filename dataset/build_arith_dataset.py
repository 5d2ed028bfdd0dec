"""Multi-digit arithmetic (addition, multiplication) dataset builder, any base 2..36.

    python -m dataset.build_arith_dataset --output-dir data/arith-add-b16-d8 --op add --base 16 \
        --min-digits 1 --max-digits 8 --num-train 100000 --num-test 2000 --num-aug 1 --seed 0

Sampling: each operand draws its digit count uniformly from [min_digits, max_digits], then a
uniform number with exactly that many digits (1 digit: 0..B-1; k >= 2: a nonzero leading
digit, B^(k-1)..B^k-1). Uniform digit counts rather than uniform numbers, because uniform
numbers are almost all max_digits long and would leave short problems untrained and untested.
A problem is the unordered pair {a, b} (a op b == b op a): no pair is drawn twice, and train and
test share none in either order. Training pairs are drawn first, then test pairs among the
ones left. Small digit-count classes run out (1x1-digit problems have only B(B+1)/2 pairs);
draws then continue among the classes that remain, so a class that runs out is
under-represented, never repeated. With --test-min-digits/--test-max-digits the test split
draws its digit counts from that range instead (length generalisation at the same seq_len:
e.g. train on 1..8 digits, test on 9..16, config/cfg_arith_lengen.yaml).

Layout, with W = operand width = the larger of --max-digits and --test-max-digits and
R = answer width (W + 1 for add, 2W for mul), so seq_len = 2W + 2 + R:

    position  [0, W)      W     [W+1, 2W+1)   2W+1   [2W+2, 2W+2+R)
    inputs    a digits    op    b digits      =      _ _ ... _       (answer slots)
    labels    0 (ignored) ........................   answer digits

Every number is written least-significant digit first in its field: digit i of a, b and the
answer sits at offset i of its field whatever the lengths, so digits of equal significance are
always the same distance apart (what relative position encodings see) and carries run towards
higher positions in every example. Tokens: 0 = PAD (also the ignore label), digit d -> d + 1
(digits never use 0), then '+', '*', '=' and '_' (an answer slot in the inputs); vocab_size =
B + 5 whatever the op. Operand positions above the leading digit hold PAD (the number as
written); the answer is zero-padded to R digits and every answer slot is labelled, so exact
match means the right number. `vocab.json` at the dataset root names every token id and
repeats the layout, which `dataset.json` records under "layout".

Augmentation (--num-aug 1): a training group is a op b plus b op a (same answer), without the
copy when a == b. The test split is not augmented.

Validation (--val-size N): val/ holds N more problems from the TRAINING digit range (it measures
what was trained: in-distribution accuracy; with a test range of its own, test/ is the
out-of-distribution measure), drawn like the test ones (one example each, not augmented) from
a seed stream of their own, after train and test and sharing no pair with either; train/ and
test/ are the same files with or without it. Builder version 1 drew val/ from the test range.

The cross-field checks (digit ranges in order, enough distinct pairs for each split) are made
when the arguments are validated (ArithBuildConfig), so `pretrain.py --check` and the CLI refuse
a bad request in one line before anything is drawn; the build itself checks only what depends
on the draws (pairs left in a range after the splits drawn before it).
"""

from __future__ import annotations

if __name__ == "__main__":  # first of all: a signal while the imports below run is one line, not a traceback
    from core.early_signals import exit_on_signals

    exit_on_signals()

import json
from functools import lru_cache
from pathlib import Path
from typing import Any, Literal, Optional

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, model_validator
from tqdm import tqdm

from core.cli import CLI, GivenPath, run_cli
from core.errors import DatasetError
from dataset.common import (
    MAX_AUGMENTATIONS, MAX_INSTANCES, DatasetMetadata, ProgressBar, SplitArrays, build_indices, build_record,
    check_memory, token_dtype, val_rng, val_size_field,
)
from dataset.writer import check_output_dir, write_dataset

BUILDER_VERSION = 2  # 2: val/ drawn from the training digit range (1: from the test range)
MAX_DIGITS = 256
DIGIT_CHARS = "0123456789abcdefghijklmnopqrstuvwxyz"
PAD_TOKEN = 0
DIGIT_TOKEN_OFFSET = 1  # digit d -> token d + 1
OP_SYMBOLS = {"add": "+", "mul": "*"}
VOCAB_FILE = "vocab.json"


class ArithBuildConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")  # a misspelt data.build_args key fails instead of being ignored

    output_dir: GivenPath = Field(description="where to write the dataset (train/, test/, identifiers.json, vocab.json)")
    op: Literal["add", "mul"] = Field("add", description="the operation: add or mul")
    base: int = Field(10, ge=2, le=36, description="number base, 2..36 (digits 0-9 then a-z)")
    min_digits: int = Field(1, ge=1, le=MAX_DIGITS, description="fewest digits of an operand")
    max_digits: int = Field(4, ge=1, le=MAX_DIGITS, description="most digits of an operand")
    test_min_digits: Optional[int] = Field(None, ge=1, le=MAX_DIGITS, description="test operands' fewest digits "
                                           "(default: --min-digits)")
    test_max_digits: Optional[int] = Field(None, ge=1, le=MAX_DIGITS, description="test operands' most digits "
                                           "(default: --max-digits); seq_len fits the larger range")
    num_train: int = Field(10000, ge=1, le=MAX_INSTANCES, description="original training problems (groups)")
    num_test: int = Field(1000, ge=1, le=MAX_INSTANCES, description="test problems (not augmented)")
    val_size: int = val_size_field("drawn from the training digit range (in distribution),")
    num_aug: int = Field(1, ge=0, le=1, description="1: add the operand-swapped copy (b op a) to each group")
    seed: int = Field(0, ge=0, description="random seed; same arguments give byte-identical files")
    overwrite: bool = Field(False, description="replace a non-empty output directory")
    progress: bool = Field(True, description="show a progress bar")

    def test_range(self) -> tuple[int, int]:
        lo = self.min_digits if self.test_min_digits is None else self.test_min_digits
        hi = self.max_digits if self.test_max_digits is None else self.test_max_digits
        return lo, hi

    def train_range(self) -> tuple[int, int]:
        """The training digit range, which val/ follows too."""
        return self.min_digits, self.max_digits

    @model_validator(mode="after")
    def _check(self) -> "ArithBuildConfig":
        problem = argument_problem(self)
        if problem:
            raise ValueError(problem)
        return self


# ---------------------------------------------------------------------------------------------
# Layout and vocabulary


class ArithLayout(BaseModel):
    """Where each field sits in a sequence and which token means what; stored in dataset.json
    ("layout") and vocab.json so the evaluator and any script decode the same way."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    op: Literal["add", "mul"]
    base: int
    operand_width: int
    answer_width: int
    a_start: int
    op_position: int
    b_start: int
    eq_position: int
    answer_start: int
    seq_len: int
    vocab_size: int
    digit_order: Literal["lsd_first"] = "lsd_first"
    pad_token: int = PAD_TOKEN
    digit_token_offset: int = DIGIT_TOKEN_OFFSET
    add_token: int
    mul_token: int
    eq_token: int
    slot_token: int

    @classmethod
    def for_task(cls, op: str, base: int, operand_width: int) -> "ArithLayout":
        answer_width = operand_width + 1 if op == "add" else 2 * operand_width
        first_symbol = DIGIT_TOKEN_OFFSET + base
        return cls(
            op=op, base=base, operand_width=operand_width, answer_width=answer_width,
            a_start=0, op_position=operand_width, b_start=operand_width + 1, eq_position=2 * operand_width + 1,
            answer_start=2 * operand_width + 2, seq_len=2 * operand_width + 2 + answer_width,
            vocab_size=first_symbol + 4, add_token=first_symbol, mul_token=first_symbol + 1,
            eq_token=first_symbol + 2, slot_token=first_symbol + 3,
        )

    @classmethod
    def from_metadata(cls, metadata: DatasetMetadata) -> "ArithLayout":
        """The layout recorded by this builder; raises ValueError if it is missing or altered."""
        raw = getattr(metadata, "layout", None)
        if getattr(metadata, "task", None) != "arith" or not isinstance(raw, dict):
            raise ValueError("dataset.json: not an arithmetic dataset (needs task='arith' and a 'layout' field)")
        layout = cls.model_validate(raw)
        if layout != cls.for_task(layout.op, layout.base, layout.operand_width):
            raise ValueError(f"dataset.json: layout {raw} is not the one this builder writes")
        if (layout.seq_len, layout.vocab_size) != (metadata.seq_len, metadata.vocab_size):
            raise ValueError(f"dataset.json: layout seq_len/vocab_size ({layout.seq_len}, {layout.vocab_size}) "
                             f"disagree with the metadata ({metadata.seq_len}, {metadata.vocab_size})")
        return layout

    @property
    def op_token(self) -> int:
        return self.add_token if self.op == "add" else self.mul_token

    @property
    def a_slice(self) -> slice:
        return slice(self.a_start, self.a_start + self.operand_width)

    @property
    def b_slice(self) -> slice:
        return slice(self.b_start, self.b_start + self.operand_width)

    @property
    def answer_slice(self) -> slice:
        return slice(self.answer_start, self.answer_start + self.answer_width)

    def token_names(self) -> list[str]:
        """Name of every token id, indexed by id."""
        return ["<pad>", *DIGIT_CHARS[: self.base], OP_SYMBOLS["add"], OP_SYMBOLS["mul"], "=", "_"]


def vocab_document(layout: ArithLayout) -> dict[str, Any]:
    """The content of vocab.json: token names by id, plus the layout needed to decode."""
    return {
        "tokens": layout.token_names(),
        "pad_id": PAD_TOKEN,
        "ignore_label_id": PAD_TOKEN,
        "digit_order": layout.digit_order,
        "layout": layout.model_dump(),
    }


# ---------------------------------------------------------------------------------------------
# Numbers as digit arrays (least-significant digit first)


def numbers_with_digits(base: int, digits: int) -> int:
    """How many numbers have exactly `digits` digits (0 counts as a 1-digit number)."""
    return base if digits == 1 else (base - 1) * base ** (digits - 1)


@lru_cache(maxsize=None)
def pair_class_size(base: int, digits_a: int, digits_b: int) -> int:
    """Distinct unordered pairs {a, b} with these digit counts."""
    if digits_a == digits_b:
        count = numbers_with_digits(base, digits_a)
        return count * (count + 1) // 2
    return numbers_with_digits(base, digits_a) * numbers_with_digits(base, digits_b)


def random_numbers(rng: np.random.Generator, lengths: np.ndarray, base: int, width: int) -> np.ndarray:
    """Uniform numbers with exactly lengths[i] digits: (N,) -> (N, width) uint8 digits, LSD first."""
    num = lengths.shape[0]
    digits = rng.integers(0, base, size=(num, width), dtype=np.uint8)
    leading = rng.integers(1, base, size=num, dtype=np.uint8)
    multi = np.flatnonzero(lengths >= 2)
    digits[multi, lengths[multi] - 1] = leading[multi]
    digits[np.arange(width)[None, :] >= lengths[:, None]] = 0
    return digits


def digit_lengths(digits: np.ndarray) -> np.ndarray:
    """Digit count of each number, (N, W) LSD-first digits -> (N,); zero has one digit."""
    nonzero = digits != 0
    highest = digits.shape[1] - 1 - np.argmax(nonzero[:, ::-1], axis=1)
    return np.where(nonzero.any(axis=1), highest + 1, 1)


def propagate_carries(column_sums: np.ndarray, base: int) -> np.ndarray:
    """Column sums (N, R) int64 -> digits (N, R) uint8; the last column must not carry out."""
    digits = np.empty(column_sums.shape, dtype=np.uint8)
    carry = np.zeros(column_sums.shape[0], dtype=np.int64)
    for pos in range(column_sums.shape[1]):
        total = column_sums[:, pos] + carry
        digits[:, pos] = total % base
        carry = total // base
    if np.any(carry):
        raise AssertionError("propagate_carries: the answer field is too narrow")
    return digits


def compute_answers(a: np.ndarray, b: np.ndarray, op: str, base: int, answer_width: int) -> np.ndarray:
    """a op b on digit arrays: (N, W) x (N, W) -> (N, R) uint8, LSD first (no big integers)."""
    num, width = a.shape
    a64, b64 = a.astype(np.int64), b.astype(np.int64)
    columns = np.zeros((num, answer_width), dtype=np.int64)
    if op == "add":
        columns[:, :width] = a64 + b64
    else:  # schoolbook: digit i of a times digit j of b lands in column i + j
        for i in range(width):
            columns[:, i : i + width] += a64[:, i : i + 1] * b64
    return propagate_carries(columns, base)


def digits_to_int(digits: np.ndarray, base: int) -> int:
    """LSD-first digits -> Python int (arbitrary size)."""
    return sum(int(d) * base**i for i, d in enumerate(digits))


# ---------------------------------------------------------------------------------------------
# Drawing distinct problems


class PairPool:
    """The unordered pairs drawn so far (shared by both splits), counted per digit-count class,
    so a class that has run out is no longer drawn from."""

    def __init__(self, base: int):
        self.base = base
        self.seen: set[tuple[bytes, bytes]] = set()
        self.used: dict[tuple[int, int], int] = {}

    @staticmethod
    def class_of(digits_a: int, digits_b: int) -> tuple[int, int]:
        return (min(digits_a, digits_b), max(digits_a, digits_b))

    def left_in_class(self, digits_a: int, digits_b: int) -> int:
        key = self.class_of(digits_a, digits_b)
        return pair_class_size(self.base, *key) - self.used.get(key, 0)

    def left_in_range(self, lo: int, hi: int) -> int:
        return sum(self.left_in_class(x, y) for x in range(lo, hi + 1) for y in range(x, hi + 1))

    def add(self, key: tuple[bytes, bytes], digits_a: int, digits_b: int) -> bool:
        """Record a pair; False if it was already drawn."""
        if key in self.seen:
            return False
        self.seen.add(key)
        cls = self.class_of(digits_a, digits_b)
        self.used[cls] = self.used.get(cls, 0) + 1
        return True


def total_pairs(base: int, lo: int, hi: int) -> int:
    return sum(pair_class_size(base, x, y) for x in range(lo, hi + 1) for y in range(x, hi + 1))


def draw_problems(
    rng: np.random.Generator, count: int, digit_range: tuple[int, int], width: int, pool: PairPool, bar: tqdm
) -> tuple[np.ndarray, np.ndarray]:
    """`count` new distinct pairs with digit counts in `digit_range` -> a, b (count, width) uint8.

    Digit counts are drawn per operand, uniformly among the (ordered) count pairs whose class
    has pairs left; a pair already in `pool` is drawn again. The caller checks that enough
    pairs are left, so this always terminates."""
    lo, hi = digit_range
    a_out = np.zeros((count, width), dtype=np.uint8)
    b_out = np.zeros((count, width), dtype=np.uint8)
    filled = 0
    while filled < count:
        open_classes = np.array(
            [(x, y) for x in range(lo, hi + 1) for y in range(lo, hi + 1) if pool.left_in_class(x, y) > 0]
        )  # (C, 2)
        chunk = max(1024, count - filled)
        lengths = open_classes[rng.integers(0, open_classes.shape[0], size=chunk)]  # (chunk, 2)
        a = random_numbers(rng, lengths[:, 0], pool.base, width)
        b = random_numbers(rng, lengths[:, 1], pool.base, width)
        for i in range(chunk):
            a_key, b_key = a[i].tobytes(), b[i].tobytes()
            if not pool.add((min(a_key, b_key), max(a_key, b_key)), int(lengths[i, 0]), int(lengths[i, 1])):
                continue
            a_out[filled], b_out[filled] = a[i], b[i]
            filled += 1
            bar.update(1)
            if filled == count:
                break
    return a_out, b_out


# ---------------------------------------------------------------------------------------------
# Encoding and decoding


def encode_problems(
    a: np.ndarray, b: np.ndarray, answers: np.ndarray, layout: ArithLayout
) -> tuple[np.ndarray, np.ndarray]:
    """Digits a, b (N, W) and answers (N, R) -> inputs, labels (N, seq_len) int64 tokens."""
    num = a.shape[0]
    inputs = np.full((num, layout.seq_len), PAD_TOKEN, dtype=np.int64)
    labels = np.full((num, layout.seq_len), PAD_TOKEN, dtype=np.int64)
    offsets = np.arange(layout.operand_width)[None, :]  # (1, W)
    for field, digits in ((layout.a_slice, a), (layout.b_slice, b)):
        written = offsets < digit_lengths(digits)[:, None]  # (N, W): positions up to the leading digit
        inputs[:, field] = np.where(written, digits.astype(np.int64) + DIGIT_TOKEN_OFFSET, PAD_TOKEN)
    inputs[:, layout.op_position] = layout.op_token
    inputs[:, layout.eq_position] = layout.eq_token
    inputs[:, layout.answer_slice] = layout.slot_token
    labels[:, layout.answer_slice] = answers.astype(np.int64) + DIGIT_TOKEN_OFFSET
    return inputs, labels


def operand_digit_counts(inputs: np.ndarray, layout: ArithLayout) -> tuple[np.ndarray, np.ndarray]:
    """Digits written in each operand field: inputs (N, seq_len) -> two (N,) arrays."""
    def count(field: slice) -> np.ndarray:
        tokens = inputs[:, field]
        return ((tokens >= DIGIT_TOKEN_OFFSET) & (tokens < DIGIT_TOKEN_OFFSET + layout.base)).sum(axis=1)

    return count(layout.a_slice), count(layout.b_slice)


def decode_number(tokens: np.ndarray, layout: ArithLayout, padded: bool) -> int:
    """LSD-first digit tokens -> int. `padded`: an operand field (digits, then only PAD, no
    leading zero); otherwise every token must be a digit (the zero-padded answer field)."""
    tokens = np.asarray(tokens).astype(np.int64)
    count = tokens.shape[0]
    if padded:
        pads = np.flatnonzero(tokens == PAD_TOKEN)
        count = int(pads[0]) if pads.size else count
        if count == 0 or np.any(tokens[count:] != PAD_TOKEN):
            raise ValueError(f"decode_number: {tokens.tolist()} is not digits followed by padding")
    digits = tokens[:count] - DIGIT_TOKEN_OFFSET
    if np.any((digits < 0) | (digits >= layout.base)):
        raise ValueError(f"decode_number: {tokens.tolist()} holds a non-digit token")
    if padded and count > 1 and digits[-1] == 0:
        raise ValueError(f"decode_number: {tokens.tolist()} has a leading zero")
    return digits_to_int(digits, layout.base)


def decode_example(inputs_row: np.ndarray, labels_row: np.ndarray, layout: ArithLayout) -> tuple[int, int, int]:
    """One (seq_len,) example -> (a, b, answer) as Python ints; raises ValueError if malformed."""
    inputs_row, labels_row = np.asarray(inputs_row), np.asarray(labels_row)
    if inputs_row.shape != (layout.seq_len,) or labels_row.shape != (layout.seq_len,):
        raise ValueError(f"decode_example: expected rows of length {layout.seq_len}, "
                         f"got {inputs_row.shape} and {labels_row.shape}")
    if inputs_row[layout.op_position] != layout.op_token or inputs_row[layout.eq_position] != layout.eq_token:
        raise ValueError("decode_example: operator or '=' token missing from its position")
    a = decode_number(inputs_row[layout.a_slice], layout, padded=True)
    b = decode_number(inputs_row[layout.b_slice], layout, padded=True)
    answer = decode_number(labels_row[layout.answer_slice], layout, padded=False)
    return a, b, answer


# ---------------------------------------------------------------------------------------------
# Building


def argument_problem(cfg: ArithBuildConfig) -> Optional[str]:
    """The first cross-field problem of the arguments (one line naming the flags and values), or
    None: digit ranges in order, and enough distinct pairs {a, b} for each split and for the
    splits together (train and val draw from the training range, test from the test range, and
    no two splits share a pair). What is left of a range after the earlier splits' draws is
    checked by the build (it depends on the draws)."""
    if cfg.min_digits > cfg.max_digits:
        return f"--min-digits {cfg.min_digits} is larger than --max-digits {cfg.max_digits}"
    test_lo, test_hi = cfg.test_range()
    if test_lo > test_hi:
        defaulted = [f"{flag} defaults to {src} {value}" for flag, given, src, value in (
            ("--test-min-digits", cfg.test_min_digits, "--min-digits", cfg.min_digits),
            ("--test-max-digits", cfg.test_max_digits, "--max-digits", cfg.max_digits)) if given is None]
        note = f" ({'; '.join(defaulted)}: give both test flags)" if defaulted else ""
        return f"--test-min-digits {test_lo} is larger than --test-max-digits {test_hi}{note}"
    where = f"in base {cfg.base}"
    train_pairs = total_pairs(cfg.base, cfg.min_digits, cfg.max_digits)
    if cfg.num_train > train_pairs:
        return (f"--num-train {cfg.num_train}: only {train_pairs} distinct pairs {{a, b}} of "
                f"{cfg.min_digits}..{cfg.max_digits}-digit numbers exist {where}")
    test_pairs = total_pairs(cfg.base, test_lo, test_hi)
    if cfg.num_test > test_pairs:
        return (f"--num-test {cfg.num_test}: only {test_pairs} distinct pairs {{a, b}} of "
                f"{test_lo}..{test_hi}-digit numbers exist {where}")
    if cfg.num_train + cfg.val_size > train_pairs:
        return (f"--val-size {cfg.val_size}: val/ draws from the training range ({cfg.min_digits}..{cfg.max_digits} "
                f"digits), where only {train_pairs} distinct pairs exist {where} and --num-train takes {cfg.num_train}")
    lo, hi = min(cfg.min_digits, test_lo), max(cfg.max_digits, test_hi)
    union_pairs = sum(pair_class_size(cfg.base, x, y) for x in range(lo, hi + 1) for y in range(x, hi + 1)
                      if (cfg.min_digits <= x and y <= cfg.max_digits) or (test_lo <= x and y <= test_hi))
    if cfg.num_train + cfg.num_test > union_pairs:
        return (f"--num-test {cfg.num_test}: with --num-train {cfg.num_train}, only {union_pairs} distinct "
                f"pairs exist {where} (train and test share none)")
    if cfg.num_train + cfg.num_test + cfg.val_size > union_pairs:
        return (f"--val-size {cfg.val_size}: with --num-train {cfg.num_train} and --num-test {cfg.num_test}, only "
                f"{union_pairs} distinct pairs exist {where} (no two splits share one)")
    return None


def check_arguments(cfg: ArithBuildConfig) -> tuple[int, int]:
    """The cross-field checks (argument_problem) as a DatasetError, for a config made without
    validation (model_construct); returns the test digit range."""
    problem = argument_problem(cfg)
    if problem:
        raise DatasetError(problem)
    return cfg.test_range()


def _metadata(cfg: ArithBuildConfig, layout: ArithLayout, split: SplitArrays, digit_range: tuple[int, int],
              larger_digits: np.ndarray) -> DatasetMetadata:
    test_lo, test_hi = cfg.test_range()
    counts = np.bincount(larger_digits)
    return DatasetMetadata(
        pad_id=PAD_TOKEN,
        ignore_label_id=PAD_TOKEN,
        blank_identifier_id=0,
        vocab_size=layout.vocab_size,
        seq_len=layout.seq_len,
        num_puzzle_identifiers=1,
        total_groups=split.num_groups,
        mean_puzzle_examples=1.0,
        total_puzzles=split.num_puzzles,
        sets=["all"],
        task="arith",
        op=cfg.op,
        base=cfg.base,
        min_digits=cfg.min_digits,
        max_digits=cfg.max_digits,
        test_min_digits=test_lo,
        test_max_digits=test_hi,
        split_digit_range=list(digit_range),
        digit_order=layout.digit_order,
        digit_sampling="per operand: digit count uniform in the range, then a uniform number with that many digits",
        problems_by_larger_digit_count={str(k): int(c) for k, c in enumerate(counts) if c},
        layout=layout.model_dump(),
        vocab_file=VOCAB_FILE,
        seed=cfg.seed,
        num_aug=cfg.num_aug,
        builder_version=BUILDER_VERSION,
    )


def swap_operands(inputs: np.ndarray, layout: ArithLayout) -> np.ndarray:
    """inputs (N, seq_len) of a op b -> b op a (the same answer: both ops commute). The operand
    fields have the same width and are written alike, so the swap exchanges them whole; it is
    its own inverse. The builder's augmentation and test-time voting (evaluators/arith.py) both
    use it."""
    out = np.array(inputs, copy=True)
    out[..., layout.a_slice], out[..., layout.b_slice] = inputs[..., layout.b_slice], inputs[..., layout.a_slice]
    return out


def _train_groups(inputs: np.ndarray, labels: np.ndarray, distinct: np.ndarray, num_aug: int, layout: ArithLayout):
    """Each original followed by its swapped copy (when num_aug=1 and a != b): encoded rows
    (N, seq_len) and whether a != b (N,) -> inputs, labels of all examples and the group sizes (N,)."""
    sizes = 1 + (num_aug * distinct).astype(np.int64)  # (N,)
    original = np.repeat(np.arange(inputs.shape[0]), sizes)  # (E,)
    is_copy = np.arange(original.shape[0]) - np.repeat(np.cumsum(sizes) - sizes, sizes) == 1  # (E,)
    rows = inputs[original]
    return np.where(is_copy[:, None], swap_operands(rows, layout), rows), labels[original], sizes


def _split_arrays(inputs: np.ndarray, labels: np.ndarray, group_sizes: np.ndarray, dtype: np.dtype) -> SplitArrays:
    puzzle_indices, group_indices = build_indices(group_sizes)
    return SplitArrays(
        inputs=inputs.astype(dtype),
        labels=labels.astype(dtype),
        puzzle_identifiers=np.zeros(inputs.shape[0], dtype=np.int32),
        puzzle_indices=puzzle_indices,
        group_indices=group_indices,
    )


def build_arith_dataset(cfg: ArithBuildConfig) -> Path:
    """Draw, solve, encode and write the dataset; returns the output directory."""
    checked = check_output_dir(cfg.output_dir, cfg.overwrite)  # fail before spending time
    test_range = check_arguments(cfg)
    layout = ArithLayout.for_task(cfg.op, cfg.base, max(cfg.max_digits, test_range[1]))
    width = layout.operand_width
    # int64 operands, answers and encoded rows before the final cast: ~32 bytes a cell.
    rows = cfg.num_train * (1 + cfg.num_aug) + cfg.num_test + cfg.val_size
    check_memory("--num-train/--num-test" + ("/--val-size" if cfg.val_size else ""), rows * layout.seq_len * 32)
    train_seq, test_seq = np.random.SeedSequence(cfg.seed).spawn(2)
    pool = PairPool(cfg.base)
    total = cfg.num_train + cfg.num_test + cfg.val_size
    with ProgressBar(total=total, desc="arith problems", unit="prob", disable=not cfg.progress) as bar:
        train_a, train_b = draw_problems(np.random.default_rng(train_seq), cfg.num_train,
                                         (cfg.min_digits, cfg.max_digits), width, pool, bar)
        left = pool.left_in_range(*test_range)
        if cfg.num_test > left:
            raise DatasetError(f"--num-test {cfg.num_test}: only {left} distinct pairs of {test_range[0]}.."
                               f"{test_range[1]}-digit numbers are left after the training split (lower the counts)")
        test_a, test_b = draw_problems(np.random.default_rng(test_seq), cfg.num_test, test_range, width, pool, bar)
        if cfg.val_size:  # the training range, from its own stream, among the pairs neither split holds
            left = pool.left_in_range(*cfg.train_range())
            if cfg.val_size > left:
                raise DatasetError(f"--val-size {cfg.val_size}: only {left} distinct pairs of {cfg.min_digits}.."
                                   f"{cfg.max_digits}-digit numbers (the training range, which val/ follows) are "
                                   "left after the training and test splits (lower the counts)")
            val_a, val_b = draw_problems(val_rng(cfg.seed), cfg.val_size, cfg.train_range(), width, pool, bar)

    dtype = token_dtype(layout.vocab_size)
    train_answers = compute_answers(train_a, train_b, cfg.op, cfg.base, layout.answer_width)
    train_inputs, train_labels = encode_problems(train_a, train_b, train_answers, layout)
    group_inputs, group_labels, sizes = _train_groups(train_inputs, train_labels, np.any(train_a != train_b, axis=1),
                                                      cfg.num_aug, layout)
    train = _split_arrays(group_inputs, group_labels, sizes, dtype)
    test_answers = compute_answers(test_a, test_b, cfg.op, cfg.base, layout.answer_width)
    test = _split_arrays(*encode_problems(test_a, test_b, test_answers, layout), np.ones(cfg.num_test, np.int64), dtype)

    def larger(a: np.ndarray, b: np.ndarray) -> np.ndarray:
        return np.maximum(digit_lengths(a), digit_lengths(b))

    train_meta = _metadata(cfg, layout, train, cfg.train_range(), larger(train_a, train_b))
    test_meta = _metadata(cfg, layout, test, test_range, larger(test_a, test_b))
    splits = {"train": (train_meta, train), "test": (test_meta, test)}
    if cfg.val_size:
        val_answers = compute_answers(val_a, val_b, cfg.op, cfg.base, layout.answer_width)
        val = _split_arrays(*encode_problems(val_a, val_b, val_answers, layout), np.ones(cfg.val_size, np.int64), dtype)
        splits["val"] = (_metadata(cfg, layout, val, cfg.train_range(), larger(val_a, val_b)), val)

    return write_dataset(cfg.output_dir, cfg.overwrite, splits,
                         {VOCAB_FILE: json.dumps(vocab_document(layout), indent=2) + "\n"},
                         build_args=build_record(cfg), checked=checked)


cli = CLI(name="build_arith_dataset", description=__doc__.split("\n\n")[0])


@cli.command(singleton=True)
def main(cfg: ArithBuildConfig) -> None:
    out = build_arith_dataset(cfg)
    test_lo, test_hi = cfg.test_range()
    print(f"wrote {out} ({cfg.op}, base {cfg.base}, {cfg.min_digits}..{cfg.max_digits} digits "
          f"[test {test_lo}..{test_hi}]: {cfg.num_train} train groups, {cfg.num_test} test"
          f"{f', {cfg.val_size} val [{cfg.min_digits}..{cfg.max_digits}]' if cfg.val_size else ''})")


if __name__ == "__main__":
    run_cli(cli)
