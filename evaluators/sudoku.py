"""Sudoku scoring: exact match with the stored solution and grid validity.

Tokens follow the dataset encoding: digit d -> token d+1, blank -> 1 (inputs only). A
predicted grid is valid when every cell holds a digit, every row, column and box holds 1..9
once, and every given of the puzzle is kept. For a puzzle with one solution (every generated
one) a valid grid is that solution, so `valid_grid_rate` is the solve rate without trusting
the stored label.

Exact accuracy is also reported by number of givens (buckets of `givens_bucket` counts,
option of the evaluator: `{name: sudoku, givens_bucket: 2}`) and, where the test split has a
per-puzzle ratings array (`all__ratings.npy`, written by dataset/build_sudoku_dataset.py), by
rating in doubling buckets (0, 1, 2-3, 4-7, ...), each with its puzzle count:
`givens_24/exact_accuracy`, `givens_24/count`, `rating_2-3/exact_accuracy`, ...
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

import numpy as np
import torch

from dataset.common import read_example_array
from dataset.sudoku_solver import UNITS
from evaluators.base import Evaluator, gather_arrays, save_predictions

BLANK_TOKEN, FIRST_DIGIT_TOKEN, LAST_DIGIT_TOKEN = 1, 2, 10
RATINGS_FIELD = "ratings"  # the test split's optional per-puzzle ratings array
UNIT_CELLS = np.array(UNITS, dtype=np.int64)  # (27, 9): 9 rows, 9 columns, 9 boxes
ALL_DIGIT_BITS = 0x3FE  # bits 1..9


def _as_grids(name: str, tokens: np.ndarray, num: Optional[int] = None) -> np.ndarray:
    tokens = np.asarray(tokens)
    if tokens.ndim != 2 or tokens.shape[1] != 81 or (num is not None and tokens.shape[0] != num):
        expected = f"({num if num is not None else 'N'}, 81)"
        raise ValueError(f"{name}: expected shape {expected}, got {tokens.shape}")
    if not np.issubdtype(tokens.dtype, np.integer):
        raise ValueError(f"{name}: expected integer tokens, got dtype {tokens.dtype}")
    return tokens.astype(np.int64)


def score_sudoku(
    inputs: np.ndarray, predicted_labels: np.ndarray, target_labels: Optional[np.ndarray] = None
) -> dict[str, Optional[float]]:
    """Score predicted grids.

    inputs, predicted_labels, target_labels: (N, 81) tokens. Returns:
      exact_accuracy       every cell equals the target (None without targets)
      valid_grid_rate      digits everywhere, rows/columns/boxes each 1..9, givens kept
      givens_kept_rate     every given of the puzzle is unchanged
      blank_cell_accuracy  fraction of blank cells predicted correctly (None without targets)
    """
    inputs = _as_grids("inputs", inputs)
    num = inputs.shape[0]
    if num == 0:
        raise ValueError("score_sudoku: no puzzles to score")
    if inputs.min() < BLANK_TOKEN or inputs.max() > LAST_DIGIT_TOKEN:
        raise ValueError(f"inputs: tokens must lie in 1..10 (1 = blank), got {inputs.min()}..{inputs.max()}")
    preds = _as_grids("predicted_labels", predicted_labels, num)

    given = inputs != BLANK_TOKEN  # (N, 81)
    givens_kept = np.all(~given | (preds == inputs), axis=1)
    is_digit = (preds >= FIRST_DIGIT_TOKEN) & (preds <= LAST_DIGIT_TOKEN)
    digit_bits = np.left_shift(1, np.where(is_digit, preds - 1, 0))  # digit d -> bit d, non-digits -> bit 0
    unit_bits = np.bitwise_or.reduce(digit_bits[:, UNIT_CELLS], axis=2)  # (N, 27)
    valid = np.all(is_digit, axis=1) & np.all(unit_bits == ALL_DIGIT_BITS, axis=1) & givens_kept

    exact = blank_accuracy = None
    if target_labels is not None:
        targets = _as_grids("target_labels", target_labels, num)
        if targets.min() < FIRST_DIGIT_TOKEN or targets.max() > LAST_DIGIT_TOKEN:
            raise ValueError(f"target_labels: tokens must lie in 2..10 (digits 1..9), got {targets.min()}..{targets.max()}")
        correct = preds == targets
        exact = float(np.mean(np.all(correct, axis=1)))
        blanks = ~given
        blank_accuracy = float(correct[blanks].mean()) if blanks.any() else None
    return {
        "exact_accuracy": exact,
        "valid_grid_rate": float(valid.mean()),
        "givens_kept_rate": float(givens_kept.mean()),
        "blank_cell_accuracy": blank_accuracy,
    }


def rating_bucket(rating: int) -> str:
    """Doubling buckets: 0, 1, 2-3, 4-7, 8-15, ... (ratings count dead ends, a heavy tail)."""
    if rating < 2:
        return str(rating)
    low = 1 << (int(rating).bit_length() - 1)
    return f"{low}-{2 * low - 1}"


def givens_bucket(givens: int, width: int) -> str:
    low = givens // width * width
    return str(low) if width == 1 else f"{low}-{low + width - 1}"


def score_by_bucket(
    inputs: np.ndarray, predicted_labels: np.ndarray, target_labels: np.ndarray,
    ratings: Optional[np.ndarray] = None, givens_width: int = 1,
) -> dict[str, float]:
    """Exact accuracy and puzzle count by number of givens and (with `ratings`) by rating.

    inputs, predicted_labels, target_labels: (N, 81) tokens; ratings (N,) integers >= 0.
    Givens fall in buckets of `givens_width` counts starting at multiples of it; ratings in
    `rating_bucket`'s doubling buckets. Returns {"givens_<b>/exact_accuracy": ..,
    "givens_<b>/count": .., "rating_<b>/exact_accuracy": .., "rating_<b>/count": ..}.
    """
    inputs = _as_grids("inputs", inputs)
    num = inputs.shape[0]
    exact = np.all(_as_grids("predicted_labels", predicted_labels, num) == _as_grids("target_labels", target_labels, num), axis=1)
    if givens_width < 1:
        raise ValueError(f"givens_bucket={givens_width}: must be at least 1")
    keys = {"givens": [givens_bucket(int(g), givens_width) for g in np.count_nonzero(inputs != BLANK_TOKEN, axis=1)]}
    if ratings is not None:
        ratings = np.asarray(ratings)
        if ratings.shape != (num,) or not np.issubdtype(ratings.dtype, np.integer) or (num and ratings.min() < 0):
            raise ValueError(f"ratings: expected ({num},) integers >= 0, got shape {ratings.shape} dtype {ratings.dtype}")
        keys["rating"] = [rating_bucket(int(r)) for r in ratings]
    result: dict[str, float] = {}
    for kind, labels in keys.items():
        labels = np.asarray(labels)
        order = sorted(set(labels.tolist()), key=lambda b: int(b.split("-")[0]))
        for bucket in order:
            rows = labels == bucket
            result[f"{kind}_{bucket}/exact_accuracy"] = float(exact[rows].mean())
            result[f"{kind}_{bucket}/count"] = float(rows.sum())
    return result


class SudokuEvaluator(Evaluator):
    """Scores the argmax predictions of every test puzzle (see `score_sudoku`)."""

    name = "sudoku"
    task = "sudoku"
    required_outputs = frozenset({"preds"})

    def __init__(self, metadata, givens_bucket: int = 1, **options: Any):
        super().__init__(metadata, **options)
        if not isinstance(givens_bucket, int) or givens_bucket < 1:
            raise ValueError(f"evaluators: sudoku givens_bucket={givens_bucket!r}: expected an integer >= 1")
        self.givens_bucket = givens_bucket
        if metadata.seq_len != 81 or metadata.vocab_size != 11:
            raise ValueError(
                f"sudoku evaluator: expects a 9x9 Sudoku dataset (seq_len 81, vocab_size 11), "
                f"got seq_len={metadata.seq_len}, vocab_size={metadata.vocab_size}")

    def metric_names(self) -> set[str]:
        return {"exact_accuracy", "valid_grid_rate", "givens_kept_rate", "blank_cell_accuracy"}

    def begin_eval(self) -> None:
        self._inputs, self._preds, self._labels = [], [], []

    def update_batch(self, batch: dict[str, torch.Tensor], outputs: dict[str, torch.Tensor]) -> None:
        self._inputs.append(batch["inputs"].cpu().numpy())  # (B, 81)
        self._labels.append(batch["labels"].cpu().numpy())  # (B, 81)
        self._preds.append(outputs["preds"].cpu().numpy())  # (B, 81)

    def result(self, save_path: Optional[Path], rank: int = 0, world_size: int = 1, group: Any = None) -> dict[str, float]:
        if not self._preds:
            raise ValueError("sudoku evaluator: result() called before any update_batch()")
        arrays = {k: np.concatenate(getattr(self, f"_{k}")) for k in ("inputs", "preds", "labels")}
        arrays = gather_arrays(arrays, world_size, group)
        metrics = score_sudoku(arrays["inputs"], arrays["preds"], arrays["labels"])
        # Rows are the test examples in order (ranks hold contiguous shards, gathered in order).
        ratings = read_example_array(self.metadata, RATINGS_FIELD, arrays["inputs"].shape[0])
        metrics.update(score_by_bucket(arrays["inputs"], arrays["preds"], arrays["labels"], ratings, self.givens_bucket))
        if save_path is not None and rank == 0:
            extra = {"ratings": ratings} if ratings is not None else {}
            save_predictions(save_path / "sudoku_predictions.npz", **arrays, **extra)
        return {k: v for k, v in metrics.items() if v is not None}
