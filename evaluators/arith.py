"""Arithmetic scoring: exact answers, overall and by operand length, and per-digit accuracy.

Only the answer field is scored (the model also emits tokens elsewhere; they carry no
meaning). The answer is zero-padded to its full width, so "every answer slot right" is the
same as "the right number". Exact accuracy is also broken down by the larger operand's digit
count, the axis along which length generalisation fails; per-position accuracy (position 0 =
least-significant digit) shows how far carries are followed.
"""

from __future__ import annotations

import re
from functools import partial
from pathlib import Path
from types import SimpleNamespace
from typing import TYPE_CHECKING, Any, Optional

import numpy as np
import torch

from core.errors import InputError, one_line
from dataset.build_arith_dataset import (
    DIGIT_CHARS, DIGIT_TOKEN_OFFSET, OP_SYMBOLS, ArithBuildConfig, ArithLayout, digits_to_int, encode_problems,
    operand_digit_counts, swap_operands,
)
from evaluators.base import Evaluator, gather_arrays, save_predictions
from evaluators.instances import content_lines
from evaluators.render import RIGHT, WRONG, new_figure, wrong_cell
from evaluators.tasks import Solver, Symmetry, Task

if TYPE_CHECKING:
    from matplotlib.figure import Figure


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


# ---------------------------------------------------------------------------------------------
# The task: its facts, pictures and text of an example, a user's instances (scripts/solve.py)


def check_facts(facts: dict[str, Any], where: Any, prefix: str = "") -> None:
    """The builder's own layout, in a base the digits can write."""
    try:
        layout = ArithLayout.from_metadata(SimpleNamespace(**facts))
    except ValueError as exc:  # pydantic's ValidationError included
        raise InputError(f"{where}: {prefix}{one_line(exc).removeprefix('dataset.json: ')}") from exc
    if not 2 <= layout.base <= len(DIGIT_CHARS):
        raise InputError(f"{where}: {prefix}layout.base={layout.base}: expected 2..{len(DIGIT_CHARS)}")


def facts_from_build_args(args: dict[str, Any]) -> dict[str, Any]:
    built = ArithBuildConfig.model_validate({**args, "output_dir": "."})
    width = max(built.max_digits, built.test_range()[1])
    return {"layout": ArithLayout.for_task(built.op, built.base, width).model_dump()}


# The problem in columns, most significant digit left, as on paper


def arith_numbers(facts: dict[str, Any], inputs: np.ndarray, labels: Optional[np.ndarray],
                  preds: Optional[np.ndarray]) -> dict[str, Any]:
    """The example's operands, answer and the model's answer as digit strings (most significant first)."""
    layout = ArithLayout.model_validate(facts["layout"])

    def digits(tokens: np.ndarray, strip: bool) -> str:
        chars = [DIGIT_CHARS[t - DIGIT_TOKEN_OFFSET] if 0 <= t - DIGIT_TOKEN_OFFSET < layout.base else
                 ("" if strip else "?") for t in np.asarray(tokens).astype(np.int64)]
        text = "".join(reversed(chars))  # stored least significant first
        return (text.lstrip("0") or "0") if strip else text

    out = {"layout": layout, "symbol": OP_SYMBOLS[layout.op], "a": digits(inputs[layout.a_slice], True),
           "b": digits(inputs[layout.b_slice], True)}
    if labels is not None:
        out["answer"] = digits(labels[layout.answer_slice], False)
    if preds is not None:
        out["prediction"] = digits(preds[layout.answer_slice], False)
    return out


def render_arith(facts: dict[str, Any], inputs: np.ndarray, labels: Optional[np.ndarray] = None,
                 preds: Optional[np.ndarray] = None, title: str = "") -> "Figure":
    info = arith_numbers(facts, inputs, labels, preds)
    layout = info["layout"]
    columns = layout.answer_width
    rows = [("", info["a"]), (info["symbol"], info["b"])]
    if "answer" in info:
        rows.append(("=", info["answer"]))
    if "prediction" in info:
        rows.append(("model", info["prediction"]))
    fig = new_figure(0.4 * columns + 2.6, 0.42 * len(rows) + 1.3)
    ax = fig.add_subplot()
    for y, (label, number) in enumerate(rows):
        ax.text(-0.9, y, label, ha="right", va="center", fontsize=13, family="monospace")
        for i, ch in enumerate(reversed(number)):  # significance i sits in column columns - 1 - i
            color = "black"
            if label == "model" and "answer" in info:
                target = info["answer"][::-1][i] if i < len(info["answer"]) else "0"
                color = RIGHT if ch == target else WRONG
                if ch != target:
                    ax.add_patch(wrong_cell(columns - 1 - i, y, 0.8, 0.9))
            ax.text(columns - 1 - i, y, ch, ha="center", va="center", fontsize=14, family="monospace", color=color)
    if len(rows) > 2:
        ax.plot([-0.5, columns - 0.5], [1.5, 1.5], color="black", linewidth=1.2)
    ax.set_xlim(-2.5, columns)
    ax.set_ylim(len(rows) - 0.5, -0.6)
    ax.set_xticks([])
    ax.set_yticks([])
    for side in ax.spines.values():
        side.set_visible(False)
    names = layout.token_names()
    sequence = "".join({"<pad>": "."}.get(names[t], names[t]) for t in np.asarray(inputs).astype(np.int64))
    ax.set_xlabel(f"stored least-significant digit first: {sequence}", fontsize=8, family="monospace")
    text = f"base {layout.base}; the answer zero-padded to {columns} digits"
    if "prediction" in info and "answer" in info:
        text += "; model " + ("right" if info["prediction"] == info["answer"] else "wrong (wrong digits hatched)")
    ax.set_title(f"{title}\n{text}" if title else text, fontsize=9)
    return fig


def describe_arith(facts: dict[str, Any], inputs: np.ndarray, labels: np.ndarray, preds: np.ndarray) -> dict[str, Any]:
    """One example as text columns (input, target, prediction, correct); int64 tokens."""
    info = arith_numbers(facts, inputs, labels, preds)
    return {"input": f"{info['a']} {info['symbol']} {info['b']}", "target": info["answer"],
            "prediction": info["prediction"], "correct": info["prediction"] == info["answer"]}


# A user's expressions


def parse_arith(raw: bytes, where: str, facts: dict[str, Any]) -> list[tuple[str, int, int]]:
    """(expression, a, b) per line, checked against the layout's base, operation and width."""
    layout = ArithLayout.model_validate(facts["layout"])
    symbol, digits = OP_SYMBOLS[layout.op], DIGIT_CHARS[: layout.base]
    problems = []
    for number, line in content_lines(raw.decode(errors="replace")):
        match = re.fullmatch(r"\s*(\w+)\s*([+*])\s*(\w+)\s*=?\s*", line.lower())
        if match is None:
            raise InputError(f"{where}: line {number}: expected 'a {symbol} b', got {line!r}")
        a_text, op, b_text = match.groups()
        if op != symbol:
            raise InputError(f"{where}: line {number}: operation {op!r}, but the checkpoint was trained on {symbol!r}")
        for text in (a_text, b_text):
            if any(ch not in digits for ch in text):
                raise InputError(f"{where}: line {number}: {text!r} is not a base-{layout.base} number (digits {digits})")
            if len(text.lstrip("0") or "0") > layout.operand_width:
                raise InputError(f"{where}: line {number}: {text} has {len(text.lstrip('0'))} digits; the checkpoint "
                                 f"reads at most {layout.operand_width}")
        problems.append((line, int(a_text, layout.base), int(b_text, layout.base)))
    if not problems:
        raise InputError(f"{where}: no expression found")
    return problems


def to_base(value: int, base: int) -> str:
    text = ""
    while True:
        value, digit = divmod(value, base)
        text = DIGIT_CHARS[digit] + text
        if value == 0:
            return text


def solve_arith(model: Solver, problems: list[tuple[str, int, int]]) -> list[dict[str, Any]]:
    layout = ArithLayout.model_validate(model.facts["layout"])

    def digit_rows(values: list[int], width: int) -> np.ndarray:  # LSD first, as the layout stores them
        return np.array([[(v // layout.base**i) % layout.base for i in range(width)] for v in values], dtype=np.uint8)

    a = digit_rows([p[1] for p in problems], layout.operand_width)
    b = digit_rows([p[2] for p in problems], layout.operand_width)
    inputs, _ = encode_problems(a, b, np.zeros((len(problems), layout.answer_width), np.uint8), layout)
    out = model.solve(inputs)
    answers = []
    for (text, x, y), preds, steps in zip(problems, out["preds"], out["steps"]):
        digits = preds[layout.answer_slice].astype(np.int64) - DIGIT_TOKEN_OFFSET  # (R,)
        valid = bool(np.all((digits >= 0) & (digits < layout.base)))  # every answer slot holds a digit
        value = digits_to_int(digits, layout.base) if valid else None
        truth = x + y if layout.op == "add" else x * y
        answers.append({"expression": text, "answer": None if value is None else to_base(value, layout.base),
                        "valid": valid, "correct": value == truth, "expected": to_base(truth, layout.base),
                        "steps": int(steps)})
    return answers


def show_arith(problem: tuple[str, int, int], answer: dict[str, Any], facts: dict[str, Any]) -> str:
    layout = ArithLayout.model_validate(facts["layout"])
    base, symbol = layout.base, OP_SYMBOLS[layout.op]
    verdict = "right" if answer["correct"] else f"wrong: {answer['expected']}"
    shown = answer["answer"] if answer["valid"] else "(not a number)"
    return (f"{to_base(problem[1], base)} {symbol} {to_base(problem[2], base)} = {shown}   "
            f"[base {base}; {verdict}; {answer['steps']} ACT steps]")


# Test-time compute (training/voting.py): the operand swap the builder augments with. No
# label-free check is declared: checking an answer here is computing it, which would make the
# model's answer moot (the `check` vote policy counts votes instead).


def _swap(tokens: np.ndarray, layout: ArithLayout) -> np.ndarray:
    return swap_operands(np.asarray(tokens), layout)


def arith_symmetries(facts: dict[str, Any], rng: np.random.Generator, count: int) -> list[Symmetry]:
    """At most one: a op b -> b op a (both operations commute, the answer is the same; the swap
    is its own inverse, so it also maps the answer row back). `rng` is not needed."""
    if count <= 0:
        return []
    layout = ArithLayout.model_validate(facts["layout"])
    return [Symmetry("swap operands", partial(_swap, layout=layout), partial(_swap, layout=layout))]


def arith_answer_positions(facts: dict[str, Any]) -> np.ndarray:
    """The answer field: votes compare answers there (the other positions carry no meaning)."""
    layout = ArithLayout.model_validate(facts["layout"])
    mask = np.zeros(layout.seq_len, dtype=bool)
    mask[layout.answer_slice] = True
    return mask


def digits_in_name(name: str, max_digits: int, new: int) -> Optional[str]:
    """`d<min>-<max>` or `d<max>` in a folder name is the digit range: arith-mul-b10-d1-4 ->
    arith-mul-b10-d1-5 (scripts/scaling.py, `Task.size_in_name`)."""
    found = list(re.finditer(r"(?<![A-Za-z0-9])d(\d+)(?:-(\d+))?(?![0-9])", name))
    if not found:
        return None
    said = {int(m.group(2) or m.group(1)) for m in found}
    if said != {max_digits}:
        raise InputError(f"its name says up to {'/'.join(str(k) for k in sorted(said))} digits")
    for m in reversed(found):  # the last group of digits of each range is its maximum
        start = m.start(2) if m.group(2) else m.start(1)
        name = name[:start] + str(new) + name[m.end():]
    return name


TASK = Task(
    name="arith", builder="dataset.build_arith_dataset", builder_config="ArithBuildConfig",
    build_function="build_arith_dataset", evaluator=ArithEvaluator, headline_metric="eval/arith/exact_accuracy",
    fact_fields=("layout",), check_facts=check_facts, facts_from_build_args=facts_from_build_args,
    render=render_arith, describe=describe_arith, parse=parse_arith, solve=solve_arith, show=show_arith,
    input_help="one expression per line in the checkpoint's base and operation, e.g. \"1a3f+ff\"",
    symmetries=arith_symmetries, answer_positions=arith_answer_positions,
    tiny_build_args=dict(max_digits=2, num_train=200, num_test=50, seed=0),
    # The size is max_digits: "5x5 digits" is operands of min_digits..5 digits (cfg_arith_mul:
    # 1..5), the config's other arguments (min_digits, test digit range) kept as they are.
    size_arg="max_digits", size_label="max_digits (operands of up to d digits)", size_in_name=digits_in_name,
    scaling_metrics=(("eval/arith/exact_accuracy", "exact"), ("eval/arith/digit_accuracy", "digit"),
                     ("eval/arith/well_formed_rate", "well formed")),
)
