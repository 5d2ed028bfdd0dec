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

import re
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any, Optional

import numpy as np
import torch

from dataset.common import read_example_array
from dataset.sudoku_solver import UNITS
from core.errors import InputError
from evaluators.base import Evaluator, gather_arrays, save_predictions
from evaluators.instances import content_lines
from evaluators.render import GIVEN, RIGHT, WRONG, new_figure, wrong_cell
from evaluators.tasks import Solver, Symmetry, Task

if TYPE_CHECKING:
    from matplotlib.figure import Figure

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
    valid, givens_kept = _valid_grids(inputs, preds)

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


def _valid_grids(inputs: np.ndarray, preds: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(N, 81) int64 tokens -> (valid, givens_kept) (N,) bool: every cell a digit, every row,
    column and box 1..9 once, every given kept; and the last of these alone."""
    given = inputs != BLANK_TOKEN
    givens_kept = np.all(~given | (preds == inputs), axis=1)
    is_digit = (preds >= FIRST_DIGIT_TOKEN) & (preds <= LAST_DIGIT_TOKEN)
    digit_bits = np.left_shift(1, np.where(is_digit, preds - 1, 0))  # digit d -> bit d, non-digits -> bit 0
    unit_bits = np.bitwise_or.reduce(digit_bits[:, UNIT_CELLS], axis=2)  # (N, 27)
    return np.all(is_digit, axis=1) & np.all(unit_bits == ALL_DIGIT_BITS, axis=1) & givens_kept, givens_kept


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
        # Rows are the split's first examples in order (ranks hold contiguous shards, gathered in
        # order; all of them, or the first train.eval_max_examples / --max-examples).
        ratings = read_example_array(self.metadata, RATINGS_FIELD, arrays["inputs"].shape[0], first=True)
        metrics.update(score_by_bucket(arrays["inputs"], arrays["preds"], arrays["labels"], ratings, self.givens_bucket))
        if save_path is not None and rank == 0:
            extra = {"ratings": ratings} if ratings is not None else {}
            save_predictions(save_path / "sudoku_predictions.npz", **arrays, **extra)
        return {k: v for k, v in metrics.items() if v is not None}


# ---------------------------------------------------------------------------------------------
# The task: its facts, pictures and text of an example, a user's instances (scripts/solve.py)


def check_facts(facts: dict[str, Any], where: Any, prefix: str = "") -> None:
    """81 cells of tokens 0..10."""
    seq_len, vocab_size = facts["seq_len"], facts["vocab_size"]
    if seq_len != 81 or vocab_size < 11:
        raise InputError(f"{where}: a Sudoku has 81 cells of tokens 0..10, got {prefix}seq_len={seq_len}, "
                         f"{prefix}vocab_size={vocab_size}")


def facts_from_build_args(args: dict[str, Any]) -> dict[str, Any]:
    return {}  # every Sudoku dataset has the same encoding


def recognises(facts: dict[str, Any]) -> bool:
    """The reference's Sudoku format (no task name recorded)."""
    return facts.get("seq_len") == 81 and facts.get("vocab_size") == 11


# Givens in black on grey, the solution (or the model's digits: blue when right, vermillion on a hatched
# cell when wrong) in the blanks


def render_sudoku(facts: dict[str, Any], inputs: np.ndarray, labels: Optional[np.ndarray] = None,
                  preds: Optional[np.ndarray] = None, title: str = "") -> "Figure":
    puzzle = np.asarray(inputs).astype(np.int64) - 1  # 0 = blank
    solution = None if labels is None else np.asarray(labels).astype(np.int64) - 1
    guess = None if preds is None else np.asarray(preds).astype(np.int64) - 1
    fig = new_figure(4.4, 4.8)
    ax = fig.add_subplot()
    for cell in range(81):
        r, c = divmod(cell, 9)
        if puzzle[cell] > 0:
            ax.add_patch(_filled(c, r, "#e6e6e6"))
            ax.text(c, r, str(puzzle[cell]), ha="center", va="center", fontsize=13, weight="bold", color=GIVEN)
        elif guess is not None:
            right = solution is not None and guess[cell] == solution[cell]
            shown = str(guess[cell]) if 1 <= guess[cell] <= 9 else "?"
            if not right:
                ax.add_patch(wrong_cell(c, r))
            ax.text(c, r, shown, ha="center", va="center", fontsize=12, color=RIGHT if right else WRONG,
                    weight="normal" if right else "bold")
        elif solution is not None:
            ax.text(c, r, str(solution[cell]), ha="center", va="center", fontsize=12, color="#4575b4")
    for k in range(10):
        width = 2.2 if k % 3 == 0 else 0.6
        ax.plot([-0.5, 8.5], [k - 0.5, k - 0.5], color="black", linewidth=width)
        ax.plot([k - 0.5, k - 0.5], [-0.5, 8.5], color="black", linewidth=width)
    ax.set_xlim(-0.6, 8.6)
    ax.set_ylim(8.6, -0.6)
    ax.set_aspect("equal")
    ax.axis("off")
    givens = int((puzzle > 0).sum())
    if guess is not None and solution is not None:
        blanks = puzzle == 0
        text = f"{givens} givens; model right on {int((guess == solution)[blanks].sum())}/{int(blanks.sum())} blanks (wrong ones hatched)"
    else:
        text = f"{givens} givens (bold); solution in blue"
    ax.set_title(f"{title}\n{text}" if title else text, fontsize=10)
    return fig


def _filled(x: float, y: float, color: str):
    from matplotlib.patches import Rectangle

    return Rectangle((x - 0.5, y - 0.5), 1, 1, facecolor=color, edgecolor="none")


def describe_sudoku(facts: dict[str, Any], inputs: np.ndarray, labels: np.ndarray, preds: np.ndarray) -> dict[str, Any]:
    """One example as text columns (input, target, prediction, correct); int64 tokens."""
    def grid(tokens: np.ndarray, blank: str) -> str:
        return "".join(str(t - 1) if 2 <= t <= 10 else blank for t in tokens)

    return {"input": grid(inputs, "."), "target": grid(labels, "?"), "prediction": grid(preds, "?"),
            "correct": bool(np.array_equal(preds, labels))}


# A user's puzzles


def parse_sudoku(raw: bytes, where: str, facts: dict[str, Any]) -> np.ndarray:
    """Puzzles as digits (N, 81), 0 = blank; malformed or self-contradicting grids are errors."""
    grids = []
    for number, line in content_lines(raw.decode(errors="replace")):
        if len(line) != 81:
            raise InputError(f"{where}: line {number}: expected 81 characters (digits 1-9, '.' or '0' for a blank), "
                             f"got {len(line)}: {line[:30]!r}")
        bad = re.search(r"[^0-9.]", line)
        if bad:
            raise InputError(f"{where}: line {number}: cell {bad.start() + 1}: {bad.group()!r} is not a digit 1-9, "
                             "'.' or '0' (a blank)")
        grid = np.array([0 if ch == "." else int(ch) for ch in line])
        for unit_index, unit in enumerate(UNITS):
            digits = grid[list(unit)]
            digits = digits[digits > 0]
            if len(digits) != len(set(digits.tolist())):
                kind = ("row", "column", "box")[unit_index // 9]
                raise InputError(f"{where}: line {number}: the givens repeat a digit in {kind} {unit_index % 9 + 1}")
        grids.append(grid)
    if not grids:
        raise InputError(f"{where}: no puzzle found")
    return np.stack(grids)


def solve_sudoku(model: Solver, grids: np.ndarray) -> list[dict[str, Any]]:
    tokens = grids + 1  # digit d -> d + 1, blank -> 1
    out = model.solve(tokens)
    answers = []
    for i in range(grids.shape[0]):
        valid = score_sudoku(tokens[i:i + 1], out["preds"][i:i + 1])["valid_grid_rate"] == 1.0
        digits = "".join(str(int(t) - 1) if 2 <= t <= 10 else "?" for t in out["preds"][i])
        answers.append({"answer": digits, "valid": bool(valid), "steps": int(out["steps"][i])})
    return answers


def show_sudoku(grid: np.ndarray, answer: dict[str, Any], facts: dict[str, Any]) -> str:
    lines = []
    for r in range(9):
        if r in (3, 6):
            lines.append("------+-------+------")
        cells = answer["answer"][r * 9:(r + 1) * 9]
        lines.append(" | ".join(" ".join(cells[c:c + 3]) for c in (0, 3, 6)))
    verdict = "a valid solution" if answer["valid"] else "NOT a valid solution (rows, columns, boxes or givens)"
    return f"{verdict}, {answer['steps']} ACT steps\n" + "\n".join(lines)


# Test-time compute (training/voting.py): the symmetries the builder augments with, and the
# label-free check


def _transform(tokens: np.ndarray, sources: np.ndarray, values: np.ndarray) -> np.ndarray:
    from dataset.build_sudoku_dataset import apply_symmetry

    return apply_symmetry(np.asarray(tokens).astype(np.int64), sources[None], values[None])


def sudoku_symmetries(facts: dict[str, Any], rng: np.random.Generator, count: int) -> list[Symmetry]:
    """`count` random Sudoku symmetries (digit relabelling, band/stack permutations, row and column
    permutations inside them, a transpose with probability 1/2), drawn as the builder draws its
    augmentations (`draw_symmetries`) and applied by the same function (`apply_symmetry`), on
    tokens. A grid's solution under a symmetry is the symmetric image of its solution, so an
    answer mapped back is comparable with the others."""
    from dataset.build_sudoku_dataset import draw_symmetries, inverse_symmetry, source_cells, token_map

    if count <= 0:
        return []
    row_order, col_order, transpose, digit_map = draw_symmetries(rng, 1, count)
    sources = source_cells(row_order, col_order, transpose)[0].astype(np.intp)  # (count, 81)
    values = token_map(digit_map[0], int(facts.get("vocab_size", 11)))  # (count, vocab)
    out = []
    for a in range(count):
        back_sources, back_values = inverse_symmetry(sources[a], values[a])
        name = (f"rows {''.join(map(str, row_order[0, a]))} cols {''.join(map(str, col_order[0, a]))}"
                f"{' transposed' if transpose[0, a] else ''} digits {''.join(map(str, digit_map[0, a, 1:]))}")
        out.append(Symmetry(name, partial(_transform, sources=sources[a], values=values[a]),
                            partial(_transform, sources=back_sources, values=back_values)))
    return out


def check_sudoku(facts: dict[str, Any], inputs: np.ndarray, preds: np.ndarray) -> np.ndarray:
    """0 where the answer is a valid grid keeping the puzzle's givens, +inf elsewhere (no label)."""
    valid, _ = _valid_grids(_as_grids("inputs", inputs), _as_grids("preds", preds, np.asarray(inputs).shape[0]))
    return np.where(valid, 0.0, np.inf)


TASK = Task(
    name="sudoku", builder="dataset.build_sudoku_dataset", builder_config="SudokuBuildConfig",
    build_function="build_sudoku_dataset", evaluator=SudokuEvaluator, headline_metric="eval/sudoku/exact_accuracy",
    fact_fields=(), check_facts=check_facts, facts_from_build_args=facts_from_build_args,
    render=render_sudoku, describe=describe_sudoku, parse=parse_sudoku, solve=solve_sudoku, show=show_sudoku,
    input_help="one puzzle per line, 81 characters: digits 1-9, '.' or '0' for a blank",
    recognises=recognises, symmetries=sudoku_symmetries, check_answer=check_sudoku,
    tiny_build_args=dict(num_train=4, num_test=3, num_aug=1, min_clues=28, max_clues=30, workers=1, seed=0),
)
