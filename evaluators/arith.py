"""Arithmetic scoring: exact answers, overall and by operand length, and per-digit accuracy.

Only the answer field is scored (the model also emits tokens elsewhere; they carry no
meaning). The answer is zero-padded to its full width, so "every answer slot right" is the
same as "the right number". Exact accuracy is also broken down by the larger operand's digit
count, the axis along which length generalisation fails; per-position accuracy (position 0 =
least-significant digit) shows how far carries are followed.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

import numpy as np
import torch

from dataset.build_arith_dataset import DIGIT_TOKEN_OFFSET, ArithLayout, operand_digit_counts
from evaluators.base import Evaluator, gather_arrays, save_predictions


def _as_rows(name: str, array: np.ndarray, num: int, layout: ArithLayout) -> np.ndarray:
    array = np.asarray(array)
    if array.shape != (num, layout.seq_len):
        raise ValueError(f"{name}: expected shape ({num}, {layout.seq_len}), got {array.shape}")
    return array.astype(np.int64)


def _is_digit(tokens: np.ndarray, layout: ArithLayout) -> np.ndarray:
    return (tokens >= DIGIT_TOKEN_OFFSET) & (tokens < DIGIT_TOKEN_OFFSET + layout.base)


def score_arith(
    inputs: np.ndarray, predicted_labels: np.ndarray, target_labels: np.ndarray, layout: ArithLayout
) -> dict[str, float]:
    """Score predicted answer tokens against the targets.

    inputs, predicted_labels, target_labels: (N, seq_len) tokens (targets may hold any value,
    e.g. the loader's -100, outside the answer field). Returns:
      exact_accuracy               every answer digit right
      digit_accuracy               fraction of answer digits right (all R slots, leading zeros included)
      digit_accuracy_pos_<i>       the same at answer position i (0 = least significant)
      well_formed_rate             every answer slot holds a digit token
      exact_accuracy_digits_<k>    exact accuracy over problems whose larger operand has k digits
    """
    inputs = np.asarray(inputs)
    if inputs.ndim != 2 or inputs.shape[0] == 0:
        raise ValueError(f"score_arith: expected a non-empty (N, seq_len) inputs array, got shape {inputs.shape}")
    num = inputs.shape[0]
    inputs = _as_rows("inputs", inputs, num, layout)
    preds = _as_rows("predicted_labels", predicted_labels, num, layout)[:, layout.answer_slice]  # (N, R)
    targets = _as_rows("target_labels", target_labels, num, layout)[:, layout.answer_slice]  # (N, R)

    if np.any(inputs[:, layout.op_position] != layout.op_token) or np.any(inputs[:, layout.eq_position] != layout.eq_token):
        raise ValueError("score_arith: inputs do not follow the layout (operator or '=' not where it says)")
    if not np.all(_is_digit(targets, layout)):
        raise ValueError("score_arith: target_labels hold non-digit tokens in the answer field")

    digit_right = preds == targets  # (N, R)
    exact = digit_right.all(axis=1)  # (N,)
    metrics = {
        "exact_accuracy": float(exact.mean()),
        "digit_accuracy": float(digit_right.mean()),
        "well_formed_rate": float(_is_digit(preds, layout).all(axis=1).mean()),
    }
    for pos, accuracy in enumerate(digit_right.mean(axis=0)):
        metrics[f"digit_accuracy_pos_{pos}"] = float(accuracy)
    digits_a, digits_b = operand_digit_counts(inputs, layout)
    larger = np.maximum(digits_a, digits_b)  # (N,)
    for count in np.unique(larger):
        metrics[f"exact_accuracy_digits_{int(count)}"] = float(exact[larger == count].mean())
    return metrics


class ArithEvaluator(Evaluator):
    """Scores argmax predictions on the answer field; the layout comes from dataset.json."""

    name = "arith"
    task = "arith"
    required_outputs = frozenset({"preds"})

    def __init__(self, metadata, **options: Any):
        super().__init__(metadata, **options)
        self.layout = ArithLayout.from_metadata(metadata)

    def metric_names(self) -> set[str]:
        layout = self.layout
        return ({"exact_accuracy", "digit_accuracy", "well_formed_rate"}
                | {f"digit_accuracy_pos_{i}" for i in range(layout.answer_width)}
                | {f"exact_accuracy_digits_{k}" for k in range(1, layout.operand_width + 1)})

    def begin_eval(self) -> None:
        self._inputs: list[np.ndarray] = []
        self._preds: list[np.ndarray] = []
        self._labels: list[np.ndarray] = []

    def update_batch(self, batch: dict[str, torch.Tensor], outputs: dict[str, torch.Tensor]) -> None:
        self._inputs.append(batch["inputs"].cpu().numpy())  # (B, L)
        self._labels.append(batch["labels"].cpu().numpy())  # (B, L), -100 outside the answer
        self._preds.append(outputs["preds"].cpu().numpy())  # (B, L)

    def result(self, save_path: Optional[Path], rank: int = 0, world_size: int = 1, group: Any = None) -> dict[str, float]:
        if not self._inputs:
            raise ValueError("arith evaluator: result() called without any batch")
        arrays = {k: np.concatenate(getattr(self, f"_{k}")) for k in ("inputs", "preds", "labels")}
        arrays = gather_arrays(arrays, world_size, group)
        metrics = score_arith(arrays["inputs"], arrays["preds"], arrays["labels"], self.layout)
        if save_path is not None and rank == 0:
            save_predictions(save_path / "arith_predictions.npz", **arrays)
        return {k: v for k, v in metrics.items() if v is not None}
