"""Linear Sum Assignment (LSA) dataset builder.

    python -m dataset.build_lsa_dataset --output-dir data/lsa-9x9-10k-aug10 --n 9 --max-cost 100 \
        --num-train 10000 --num-test 1000 --num-aug 10 --seed 0

Encoding: inputs are the n x n integer costs row-major, cost c -> token c (0 = PAD), so
vocab_size = max_cost + 2. Labels: 1 = cell not assigned, 2 = cell assigned (row i -> column j
sets label[i*n + j] = 2), from scipy's Hungarian solver; where several assignments are
optimal, the label is the lexicographically smallest of them (a function of the costs alone). A training group is an original
instance plus `num_aug` copies under a random row permutation, column permutation and (with
--transpose) a random transpose; all three map optimal assignments to optimal assignments.
The test split is not augmented. With --val-size N, val/ holds N more instances drawn like the
test ones from a seed stream of their own (dataset/common.py), none equal to a train or test
instance; train/ and test/ are the same files with or without it.
"""

from __future__ import annotations

if __name__ == "__main__":  # first of all: a signal while the imports below run is one line, not a traceback
    from core.early_signals import exit_on_signals

    exit_on_signals()

from pathlib import Path

import numpy as np
from pydantic import BaseModel, ConfigDict, Field
from scipy.optimize import linear_sum_assignment
from tqdm import tqdm

from core.cli import CLI, GivenPath, run_cli
from core.errors import DatasetError
from dataset.common import (
    MAX_AUGMENTATIONS, MAX_INSTANCES, MAX_TABLE_ROWS, DatasetMetadata, ProgressBar, SplitArrays, build_indices,
    build_record, check_memory, token_dtype, val_rng, val_size_field,
)
from dataset.writer import check_output_dir, write_dataset

BUILDER_VERSION = 2
LABEL_UNASSIGNED, LABEL_ASSIGNED = 1, 2
# Give up when this many candidates in a row are rejected (tied optimum or duplicate).
MAX_REJECTED_IN_A_ROW = 20_000


class LSABuildConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")  # a misspelt data.build_args key must not vanish

    output_dir: GivenPath = Field(description="where to write the dataset (train/, test/, identifiers.json)")
    n: int = Field(9, ge=2, le=64, description="matrix size n (n x n costs)")
    max_cost: int = Field(100, ge=1, le=MAX_TABLE_ROWS - 2, description="costs are drawn uniformly from 1..max_cost")
    num_train: int = Field(10000, ge=1, le=MAX_INSTANCES, description="original training instances (groups)")
    num_test: int = Field(1000, ge=1, le=MAX_INSTANCES, description="test instances (not augmented)")
    val_size: int = val_size_field()
    num_aug: int = Field(10, ge=0, le=MAX_AUGMENTATIONS, description="augmented copies per training instance")
    seed: int = Field(0, ge=0, description="random seed; same arguments give byte-identical files")
    unique_optimum: bool = Field(False, description="drop instances with more than one optimal assignment")
    unique_optimum_train: bool = Field(
        False, description="drop them from the training split only: clean labels to learn from, while the test "
        "split keeps the natural distribution (where any optimum scores as optimal)")
    transpose: bool = Field(True, description="also transpose augmented copies at random")
    overwrite: bool = Field(False, description="replace a non-empty output directory")
    progress: bool = Field(True, description="show a progress bar")


# ---------------------------------------------------------------------------------------------
# Solving


def solve(costs: np.ndarray) -> np.ndarray:
    """Optimal column for each row: (n, n) -> (n,)."""
    rows, cols = linear_sum_assignment(costs)
    assert np.array_equal(rows, np.arange(costs.shape[0]))
    return cols


def has_unique_optimum(costs: np.ndarray, cols: np.ndarray) -> bool:
    """Any other optimal assignment avoids at least one edge of `cols`; forbidding each edge in
    turn and re-solving finds it if it exists."""
    n = costs.shape[0]
    best = costs[np.arange(n), cols].sum()
    big = float(costs.sum()) + 1.0
    work = costs.astype(np.float64)
    for i in range(n):
        saved = work[i, cols[i]]
        work[i, cols[i]] = big
        r, c = linear_sum_assignment(work)
        work[i, cols[i]] = saved
        if work[r, c].sum() == best:
            return False
    return True


def canonical_optimum(costs: np.ndarray, best: float) -> np.ndarray:
    """The lexicographically smallest optimal assignment: row 0 takes the smallest column that
    some optimal assignment uses, then row 1 given that, and so on.

    Used for instances with tied optima, so that the label is a function of the costs alone
    (also after permuting them): otherwise the solver's pick among optima depends on the
    original row order, which augmentation hides, and a model learns to hedge between optima.
    """
    n = costs.shape[0]
    cols = np.empty(n, dtype=np.int64)
    free = list(range(n))
    fixed_cost = 0
    for i in range(n):
        rest_rows = np.arange(i + 1, n)
        for j in free:
            rest_cols = [c for c in free if c != j]
            total = fixed_cost + costs[i, j]
            if rest_cols:
                sub_costs = costs[np.ix_(rest_rows, rest_cols)]
                r, c = linear_sum_assignment(sub_costs)
                total += sub_costs[r, c].sum()
            if total == best:
                cols[i] = j
                fixed_cost += costs[i, j]
                free.remove(j)
                break
        else:  # cannot happen for a true optimum `best`
            raise AssertionError("canonical_optimum: no optimal completion found")
    return cols


def label_columns(costs: np.ndarray) -> tuple[np.ndarray, bool]:
    """The labelled optimal assignment of one instance and whether its optimum is unique."""
    cols = solve(costs)
    if has_unique_optimum(costs, cols):
        return cols, True
    return canonical_optimum(costs, costs[np.arange(costs.shape[0]), cols].sum()), False


def assignment_labels(cols: np.ndarray) -> np.ndarray:
    """(..., n) optimal columns -> (..., n*n) label tokens."""
    n = cols.shape[-1]
    labels = np.full(cols.shape[:-1] + (n, n), LABEL_UNASSIGNED, dtype=np.uint8)
    np.put_along_axis(labels, cols[..., None], LABEL_ASSIGNED, axis=-1)
    return labels.reshape(cols.shape[:-1] + (n * n,))


def generate_instances(
    rng: np.random.Generator,
    count: int,
    cfg: LSABuildConfig,
    seen: set[bytes],
    bar: tqdm,
    unique_only: bool,
) -> tuple[np.ndarray, np.ndarray, int]:
    """Draw `count` distinct instances (not in `seen`; with `unique_only`, none with tied
    optima). Returns costs (count, n, n), optimal columns (count, n) and how many accepted
    instances have tied optima."""
    n = cfg.n
    costs_out = np.empty((count, n, n), dtype=np.int64)
    cols_out = np.empty((count, n), dtype=np.int64)
    filled = ties = rejected_in_a_row = 0
    while filled < count:
        chunk = rng.integers(1, cfg.max_cost + 1, size=(max(256, count - filled), n, n))
        for costs in chunk:
            key = costs.tobytes()
            cols, unique = label_columns(costs)
            if key in seen or (unique_only and not unique):
                rejected_in_a_row += 1
                if rejected_in_a_row >= MAX_REJECTED_IN_A_ROW:
                    raise DatasetError(
                        f"--n {n} --max-cost {cfg.max_cost}: no new acceptable instance in {MAX_REJECTED_IN_A_ROW} draws "
                        "(too few distinct matrices, or none with a unique optimum); raise --max-cost or lower the counts"
                    )
                continue
            rejected_in_a_row = 0
            ties += not unique
            seen.add(key)
            costs_out[filled], cols_out[filled] = costs, cols
            filled += 1
            bar.update(1)
            if filled == count:
                break
    return costs_out, cols_out, ties


# ---------------------------------------------------------------------------------------------
# Augmentation


def draw_permutations(rng: np.random.Generator, shape: tuple[int, ...], n: int, transpose: bool):
    """Random row and column permutations (shape + (n,)) and transposes (shape, bool; all False
    without `transpose`), drawn in this order (the builder's stream: keep it)."""
    row_perm = rng.permuted(np.broadcast_to(np.arange(n), shape + (n,)), axis=-1)
    col_perm = rng.permuted(np.broadcast_to(np.arange(n), shape + (n,)), axis=-1)
    flip = rng.random(shape) < 0.5 if transpose else np.zeros(shape, dtype=bool)
    return row_perm, col_perm, flip


def permute_costs(costs: np.ndarray, row_perm: np.ndarray, col_perm: np.ndarray, flip: np.ndarray) -> np.ndarray:
    """costs (N, n, n), row_perm/col_perm (N, A, n), flip (N, A) -> (N, A, n, n): row p of a copy
    is row P[p] of the original, column q is column Q[q], then transposed where `flip`. Any
    per-cell array transforms the same way (an index grid gives the cell each copy reads: the
    test-time symmetries of evaluators/lsa.py map answers back through it)."""
    idx = np.arange(costs.shape[0])[:, None, None, None]
    moved = costs[idx, row_perm[..., :, None], col_perm[..., None, :]]  # (N, A, n, n)
    return np.where(flip[..., None, None], np.swapaxes(moved, -1, -2), moved)


def permute_assignment(cols: np.ndarray, row_perm: np.ndarray, col_perm: np.ndarray, flip: np.ndarray) -> np.ndarray:
    """An assignment (N, n) (column of each row) under the `permute_costs` of the same arguments
    -> (N, A, n): original edge (i, cols[i]) lands at (P^-1[i], Q^-1[cols[i]]), transposed where
    `flip` (the new column of row j is then the inverse permutation)."""
    shape = row_perm.shape
    # New column of new row p: Q^-1[cols[P[p]]].
    col_inv = np.argsort(col_perm, axis=-1)
    moved = np.take_along_axis(col_inv, np.take_along_axis(np.broadcast_to(cols[:, None, :], shape), row_perm, -1), -1)
    return np.where(flip[..., None], np.argsort(moved, axis=-1), moved)


def augment(rng: np.random.Generator, costs: np.ndarray, cols: np.ndarray, num_aug: int, transpose: bool):
    """For each instance, `num_aug` copies under random row/column permutations (and transposes).

    costs (N, n, n), cols (N, n) -> costs (N, num_aug, n, n), cols (N, num_aug, n).
    """
    num, n = cols.shape
    row_perm, col_perm, flip = draw_permutations(rng, (num, num_aug), n, transpose)
    return permute_costs(costs, row_perm, col_perm, flip), permute_assignment(cols, row_perm, col_perm, flip)


# ---------------------------------------------------------------------------------------------
# Building


def _metadata(cfg: LSABuildConfig, groups: int, puzzles: int, extra: dict) -> DatasetMetadata:
    return DatasetMetadata(
        pad_id=0,
        ignore_label_id=0,
        blank_identifier_id=0,
        vocab_size=cfg.max_cost + 2,
        seq_len=cfg.n * cfg.n,
        num_puzzle_identifiers=1,
        total_groups=groups,
        mean_puzzle_examples=1.0,
        total_puzzles=puzzles,
        sets=["all"],
        task="lsa",
        n=cfg.n,
        max_cost=cfg.max_cost,
        seed=cfg.seed,
        num_aug=cfg.num_aug,
        unique_optimum=cfg.unique_optimum,
        unique_optimum_train=cfg.unique_optimum_train,
        transpose=cfg.transpose,
        builder_version=BUILDER_VERSION,
        **extra,
    )


def _split_arrays(costs: np.ndarray, cols: np.ndarray, puzzles_per_group: int, dtype: np.dtype) -> SplitArrays:
    n = cols.shape[-1]
    inputs = costs.reshape(-1, n * n).astype(dtype)
    labels = assignment_labels(cols.reshape(-1, n)).astype(dtype)
    groups = inputs.shape[0] // puzzles_per_group
    puzzle_indices, group_indices = build_indices([puzzles_per_group] * groups)
    return SplitArrays(
        inputs=inputs,
        labels=labels,
        puzzle_identifiers=np.zeros(inputs.shape[0], dtype=np.int32),
        puzzle_indices=puzzle_indices,
        group_indices=group_indices,
    )


def build_lsa_dataset(cfg: LSABuildConfig) -> Path:
    """Generate, solve, augment and write the dataset; returns the output directory."""
    checked = check_output_dir(cfg.output_dir, cfg.overwrite)  # fail before spending time
    # Augmentation holds int64 costs, their permuted copies and the labels: ~24 bytes a cell.
    rows = cfg.num_train * (1 + cfg.num_aug) + cfg.num_test + cfg.val_size
    check_memory("--num-train/--num-aug/--n" + ("/--val-size" if cfg.val_size else ""), rows * cfg.n**2 * 24)
    if cfg.max_cost + 2 > MAX_TABLE_ROWS:
        raise DatasetError(f"--max-cost {cfg.max_cost}: the vocabulary (max_cost + 2) may hold at most {MAX_TABLE_ROWS} "
                           "tokens")
    train_seq, test_seq, aug_seq = np.random.SeedSequence(cfg.seed).spawn(3)
    seen: set[bytes] = set()
    total = cfg.num_train + cfg.num_test + cfg.val_size
    with ProgressBar(total=total, desc="LSA instances", unit="inst", disable=not cfg.progress) as bar:
        train_costs, train_cols, train_ties = generate_instances(
            np.random.default_rng(train_seq), cfg.num_train, cfg, seen, bar, cfg.unique_optimum or cfg.unique_optimum_train)
        test_costs, test_cols, test_ties = generate_instances(
            np.random.default_rng(test_seq), cfg.num_test, cfg, seen, bar, cfg.unique_optimum)
        # Last, from its own stream, `seen` holding train and test: neither changes, none repeats.
        val = (generate_instances(val_rng(cfg.seed), cfg.val_size, cfg, seen, bar, cfg.unique_optimum)
               if cfg.val_size else None)

    aug_costs, aug_cols = augment(np.random.default_rng(aug_seq), train_costs, train_cols, cfg.num_aug, cfg.transpose)
    # A copy of a tied instance gets the canonical optimum of its own (permuted) costs.
    tied = np.flatnonzero([not has_unique_optimum(c, k) for c, k in zip(train_costs, train_cols)])
    for i in tied:
        for a in range(cfg.num_aug):
            aug_cols[i, a], _ = label_columns(aug_costs[i, a])
    # Group layout: the original first, then its augmentations.
    group_costs = np.concatenate([train_costs[:, None], aug_costs], axis=1)  # (N, 1+A, n, n)
    group_cols = np.concatenate([train_cols[:, None], aug_cols], axis=1)  # (N, 1+A, n)

    dtype = token_dtype(cfg.max_cost + 2)
    per_group = 1 + cfg.num_aug
    train = _split_arrays(group_costs, group_cols, per_group, dtype)
    test = _split_arrays(test_costs, test_cols, 1, dtype)
    train_meta = _metadata(cfg, cfg.num_train, cfg.num_train * per_group, {"originals_with_tied_optima": train_ties})
    test_meta = _metadata(cfg, cfg.num_test, cfg.num_test, {"originals_with_tied_optima": test_ties})
    splits = {"train": (train_meta, train), "test": (test_meta, test)}
    if val is not None:
        splits["val"] = (_metadata(cfg, cfg.val_size, cfg.val_size, {"originals_with_tied_optima": val[2]}),
                         _split_arrays(val[0], val[1], 1, dtype))

    return write_dataset(cfg.output_dir, cfg.overwrite, splits, build_args=build_record(cfg), checked=checked)


cli = CLI(name="build_lsa_dataset", description=__doc__.split("\n\n")[0])


@cli.command(singleton=True)
def main(cfg: LSABuildConfig) -> None:
    out = build_lsa_dataset(cfg)
    val = f", {cfg.val_size} val" if cfg.val_size else ""
    print(f"wrote {out} ({cfg.num_train} x {1 + cfg.num_aug} train, {cfg.num_test} test{val}, {cfg.n}x{cfg.n})")


if __name__ == "__main__":
    run_cli(cli)
