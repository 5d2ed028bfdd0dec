"""The Maze task: scoring (exact path, valid path, optimal length against scipy's shortest
paths), the maze as text and as a picture, scripts/solve.py's reading, answering and showing of
mazes drawn as text, and the registry's `TASK`.

Tokens (dataset/maze_solver.py): 1 wall, 2 open, 3 start, 4 goal, 5 path; a grid is n*n of
them, row-major. A predicted grid is scored by:

  maze_kept          every wall, start and goal of the input unchanged, every open cell open
                     or path (a path cell only where the input is open)
  valid path         maze kept, and the path cells with start and goal form one simple path:
                     start and goal each have exactly one 4-neighbour in that set, every path
                     cell exactly two, and the set is connected. (A route that runs beside
                     itself has a cell with three marked neighbours: a set of cells cannot say
                     which way it went, so it is not valid. A shortest path never does so.)
  optimal path       valid, and its length (path cells + 1 moves) equals the shortest length
                     from start to goal, computed with scipy.sparse.csgraph on the input
  exact              every cell equals the label (for a maze with one shortest path, the
                     builder's, this is the same as optimal)
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, Optional

import numpy as np
import torch

from core.errors import InputError
from dataset.maze_solver import (GOAL, MAX_SIZE, OPEN, PATH, START, VOCAB_SIZE, WALL, as_grids, check_inputs, dihedral,
                                 inverse_dihedral, path_problems, shortest_lengths, token_char)
from evaluators.base import Evaluator, gather_arrays, save_predictions
from evaluators.instances import is_integer
from evaluators.render import RIGHT, RIGHT_MARKER, WRONG, WRONG_MARKER, new_figure
from evaluators.tasks import Symmetry, Task, square_size_in_name

if TYPE_CHECKING:
    from matplotlib.figure import Figure

    from training.inference import ReadyModel



def score_mazes(inputs: np.ndarray, predicted_labels: np.ndarray,
                target_labels: Optional[np.ndarray] = None) -> dict[str, Optional[float]]:
    """Score predicted grids (see the module docstring). inputs, predicted_labels,
    target_labels: (N, n*n) or (N, n, n) tokens. Returns exact_accuracy (None without targets),
    valid_path_rate, optimal_path_rate, maze_kept_rate."""
    grids = check_inputs(inputs)
    num = grids.shape[0]
    preds = as_grids("predicted_labels", predicted_labels, num)
    if preds.shape != grids.shape:
        raise ValueError(f"predicted_labels: shape {preds.shape}, inputs {grids.shape}")
    kept = np.all((preds == grids) | ((grids == OPEN) & (preds == PATH)), axis=(1, 2))
    valid = np.array([p is None for p in path_problems(grids, preds)], dtype=bool)
    length = np.count_nonzero(preds == PATH, axis=(1, 2)) + 1
    optimal = valid & (length == shortest_lengths(grids))
    exact = None
    if target_labels is not None:
        targets = as_grids("target_labels", target_labels, num)
        if targets.shape != grids.shape:
            raise ValueError(f"target_labels: shape {targets.shape}, inputs {grids.shape}")
        if targets.min() < WALL or targets.max() > PATH:
            raise ValueError(f"target_labels: tokens must lie in {WALL}..{PATH}, got {targets.min()}..{targets.max()}")
        exact = float(np.mean(np.all(preds == targets, axis=(1, 2))))
    return {"exact_accuracy": exact, "valid_path_rate": float(valid.mean()),
            "optimal_path_rate": float(optimal.mean()), "maze_kept_rate": float(kept.mean())}


class MazeEvaluator(Evaluator):
    """Scores the argmax predictions of every test maze (see `score_mazes`)."""

    name = "maze"
    task = "maze"
    required_outputs = frozenset({"preds"})

    def __init__(self, metadata, **options: Any):
        super().__init__(metadata, **options)
        side = int(round(metadata.seq_len ** 0.5))
        if side * side != metadata.seq_len or metadata.vocab_size != VOCAB_SIZE:
            raise ValueError(f"maze evaluator: expects a square maze dataset (seq_len n*n, vocab_size {VOCAB_SIZE}), "
                             f"got seq_len={metadata.seq_len}, vocab_size={metadata.vocab_size}")

    def metric_names(self) -> set[str]:
        return {"exact_accuracy", "valid_path_rate", "optimal_path_rate", "maze_kept_rate"}

    def begin_eval(self) -> None:
        self._inputs, self._preds, self._labels = [], [], []

    def update_batch(self, batch: dict[str, torch.Tensor], outputs: dict[str, torch.Tensor]) -> None:
        self._inputs.append(batch["inputs"].cpu().numpy())  # (B, n*n)
        self._labels.append(batch["labels"].cpu().numpy())
        self._preds.append(outputs["preds"].cpu().numpy())

    def result(self, save_path: Optional[Path], rank: int = 0, world_size: int = 1, group: Any = None) -> dict[str, float]:
        if not self._preds:
            raise ValueError("maze evaluator: result() called before any update_batch()")
        arrays = {k: np.concatenate(getattr(self, f"_{k}")) for k in ("inputs", "preds", "labels")}
        arrays = gather_arrays(arrays, world_size, group)
        metrics = score_mazes(arrays["inputs"], arrays["preds"], arrays["labels"])
        if save_path is not None and rank == 0:
            save_predictions(save_path / "maze_predictions.npz", **arrays)
        return {k: v for k, v in metrics.items() if v is not None}


# ---------------------------------------------------------------------------------------------
# Text: one row a line, '#' wall, '.' (or ' ') open, 'S' start, 'G' goal, 'o' path


def maze_text(tokens: np.ndarray) -> str:
    """One maze (n, n) or (n*n,) tokens as n lines; a token outside 1..5 shows as '?'."""
    grid = as_grids("maze", np.asarray(tokens)[None])[0]
    return "\n".join("".join(token_char(int(t)) for t in row) for row in grid)


def parse_maze_text(text: str, where: str, size: Optional[int] = None, allow_path: bool = False) -> np.ndarray:
    """Mazes drawn as text -> (N, n, n) uint8 tokens. Mazes are blocks of consecutive lines,
    separated by blank lines; each of n lines of n characters ('#', '.' or ' ', 'S', 'G', and
    'o' with `allow_path`), one 'S' and one 'G'. `size`: the n every maze must have (the
    checkpoint's); None: each maze square, all the same size. Errors name `where` and the line."""
    chars = {"#": WALL, ".": OPEN, " ": OPEN, "S": START, "G": GOAL, **({"o": PATH} if allow_path else {})}
    blocks: list[list[tuple[int, str]]] = []
    block: list[tuple[int, str]] = []
    for number, line in enumerate(text.split("\n") + [""], 1):
        line = line.rstrip("\r")
        if line.strip():
            block.append((number, line))
        elif block:
            blocks.append(block)
            block = []
    if not blocks:
        raise InputError(f"{where}: no maze found")
    mazes = []
    for rows in blocks:
        first = rows[0][0]
        want = size if size is not None else (mazes[0].shape[0] if mazes else len(rows[0][1]))
        if not 3 <= want <= MAX_SIZE:
            raise InputError(f"{where}: maze at line {first}: {want} columns; expected a maze of 3..{MAX_SIZE}")
        if len(rows) != want:
            raise InputError(f"{where}: maze at line {first} has {len(rows)} rows, expected {want}"
                             + (" (the checkpoint's size)" if size is not None else " (a square maze)"))
        grid = np.empty((want, want), dtype=np.uint8)
        for r, (number, line) in enumerate(rows):
            if len(line) != want:
                raise InputError(f"{where}: line {number}: {len(line)} characters, expected {want}")
            for c, ch in enumerate(line):
                if ch not in chars:
                    allowed = "'#', '.', 'S', 'G'" + (", 'o'" if allow_path else "")
                    raise InputError(f"{where}: line {number}, column {c + 1}: {ch[:1]!r} is not a maze character "
                                     f"({allowed})")
                grid[r, c] = chars[ch]
        for token, name in ((START, "S"), (GOAL, "G")):
            found = int(np.count_nonzero(grid == token))
            if found != 1:
                raise InputError(f"{where}: maze at line {first}: {found} '{name}' cells, expected exactly one")
        mazes.append(grid)
    return np.stack(mazes)


# ---------------------------------------------------------------------------------------------
# Pictures (matplotlib, Agg) and a wandb table row


def render_maze(facts: dict[str, Any], inputs: np.ndarray, labels: Optional[np.ndarray] = None,
                preds: Optional[np.ndarray] = None, title: str = "") -> "Figure":
    """Walls black; the shortest path (labels) light blue; the model's path cells as dots,
    green on the shortest path, red off it; start a triangle, goal a star."""
    grid = as_grids("inputs", np.asarray(inputs)[None])[0]
    side = grid.shape[0]
    target = None if labels is None else as_grids("labels", np.asarray(labels)[None])[0] == PATH
    guess = None if preds is None else as_grids("preds", np.asarray(preds)[None])[0]
    size = max(3.0, 1.5 + 0.16 * side)  # small mazes: room for the title's lines
    fig = new_figure(size + 0.5, size + 0.8)
    ax = fig.add_subplot()
    image = np.ones((side, side, 3))
    image[grid == WALL] = 0.15
    if target is not None:
        image[target] = (0.67, 0.82, 0.95)
    ax.imshow(image, interpolation="nearest")
    if guess is not None:
        on = guess == PATH
        right = on & (target if target is not None else np.zeros_like(on))
        for mask, color, marker in ((right, RIGHT, RIGHT_MARKER), (on & ~right, WRONG, WRONG_MARKER)):
            rows, cols = np.nonzero(mask)  # right and wrong told apart by shape too, not colour alone
            ax.scatter(cols, rows, s=max(4.0, 900.0 / side), color=color, marker=marker, linewidths=0)
    for token, marker, color in ((START, "^", "#1f78b4"), (GOAL, "*", "#e66101")):
        r, c = np.argwhere(grid == token)[0]
        ax.scatter([c], [r], s=max(12.0, 2400.0 / side), marker=marker, color=color, zorder=3)
    ax.set_xticks([])
    ax.set_yticks([])
    text = f"{side}x{side}"
    if target is not None:
        text += f", shortest path {int(target.sum()) + 1} moves (blue)"
    if guess is not None:
        problem = path_problems(grid[None], guess[None])[0]
        text += "\nmodel: " + ("exact" if target is not None and np.array_equal(guess == PATH, target) and problem is None
                               else "valid path" if problem is None else "not a valid path")
    ax.set_title(f"{title}\n{text}" if title else text, fontsize=9)
    return fig


def describe_maze(facts: dict[str, Any], inputs: np.ndarray, labels: np.ndarray, preds: np.ndarray) -> dict[str, Any]:
    """One example as text columns (input, target, prediction, correct): rows joined by '/'."""
    def rows(tokens: np.ndarray) -> str:
        return maze_text(tokens).replace("\n", "/")

    return {"input": rows(inputs), "target": rows(labels), "prediction": rows(preds),
            "correct": bool(np.array_equal(np.asarray(preds), np.asarray(labels)))}


# ---------------------------------------------------------------------------------------------
# The task: its facts, a user's mazes (scripts/solve.py)


def side_of(facts: dict[str, Any]) -> int:
    """The maze's n: the recorded fact, else the square root of seq_len."""
    n = facts.get("n")
    return n if is_integer(n) else int(round(facts["seq_len"] ** 0.5))


def check_facts(facts: dict[str, Any], where: Any, prefix: str = "") -> None:
    """n x n grids (3 <= n <= MAX_SIZE) of tokens 0..5."""
    seq_len, vocab_size = facts["seq_len"], facts["vocab_size"]
    n = facts.get("n", side_of(facts))
    if not is_integer(n) or not 3 <= n <= MAX_SIZE or n * n != seq_len:
        raise InputError(f"{where}: {prefix}n={n!r} and {prefix}seq_len={seq_len} do not describe n x n mazes "
                         f"(n in 3..{MAX_SIZE})")
    if vocab_size < VOCAB_SIZE:
        raise InputError(f"{where}: {prefix}vocab_size={vocab_size}: a maze has tokens 0..{VOCAB_SIZE - 1}")


def facts_from_build_args(args: dict[str, Any]) -> dict[str, Any]:
    from dataset.build_maze_dataset import MazeBuildConfig

    built = MazeBuildConfig.model_validate({**args, "output_dir": "."})
    return {"n": built.size}


def parse_maze(raw: bytes, where: str, facts: dict[str, Any]) -> np.ndarray:
    """Mazes drawn as text (`parse_maze_text`: n lines of n characters each, blank lines between
    mazes) of the checkpoint's n -> (N, n, n) tokens. Every line is read: '#' is a wall, not a
    comment."""
    try:
        text = raw.decode("utf-8-sig")  # a leading byte-order mark (Windows editors) is not a cell
    except UnicodeDecodeError as exc:
        raise InputError(f"{where}: byte {exc.start} is not UTF-8 text; a maze is drawn with '#', '.', 'S', 'G'") from exc
    return parse_maze_text(text, where, size=side_of(facts))


def solve_maze(model: "ReadyModel", grids: np.ndarray) -> list[dict[str, Any]]:
    """The model's path through each maze: its drawing, whether it is a valid path (and if not,
    why), its length and scipy's shortest length."""
    num, side, _ = grids.shape
    out = model.solve(grids.reshape(num, side * side).astype(np.int64))
    preds = as_grids("preds", out["preds"], num)
    problems = path_problems(grids, preds)
    shortest = shortest_lengths(grids)
    answers = []
    for i in range(num):
        valid = problems[i] is None
        length = int(np.count_nonzero(preds[i] == PATH)) + 1 if valid else None
        best = int(shortest[i]) if shortest[i] >= 0 else None
        answers.append({"answer": maze_text(preds[i]), "valid": valid, "problem": problems[i],
                        "steps": int(out["steps"][i]), "length": length, "shortest_length": best,
                        "optimal": bool(valid and length == best)})
    return answers


def show_maze(grid: np.ndarray, answer: dict[str, Any], facts: dict[str, Any]) -> str:
    if answer["valid"]:
        verdict = (f"a {'shortest' if answer['optimal'] else 'valid but not shortest'} path of {answer['length']} "
                   f"moves (shortest {answer['shortest_length']})")
    else:
        reach = ("no path exists" if answer["shortest_length"] is None
                 else f"shortest {answer['shortest_length']} moves")
        verdict = f"NOT a valid path: {answer['problem']} ({reach})"
    return f"{verdict}, {answer['steps']} ACT steps\n{answer['answer']}"


# Test-time compute (training/voting.py): the 8 symmetries of the square the builder augments
# with, and the label-free check


def maze_symmetries(facts: dict[str, Any], rng: np.random.Generator, count: int) -> list[Symmetry]:
    """Up to `count` (at most 7) distinct non-identity symmetries of the square, drawn as the
    builder draws a maze's augmentations and applied by the same function (`dihedral`) to
    (N, n*n) tokens. A maze's shortest path under a symmetry is the image of its shortest path."""
    side = side_of(facts)
    ks = (rng.random(7).argsort() + 1)[:max(0, min(count, 7))]

    def apply(k: int):
        return lambda tokens: np.ascontiguousarray(
            dihedral(np.asarray(tokens).reshape(-1, side, side), k)).reshape(-1, side * side)

    names = {1: "turn 90", 2: "turn 180", 3: "turn 270", 4: "transpose", 5: "transpose, turn 90",
             6: "transpose, turn 180", 7: "transpose, turn 270"}
    return [Symmetry(name=names[int(k)], augment=apply(int(k)), map_back=apply(inverse_dihedral(int(k)))) for k in ks]


def check_maze(facts: dict[str, Any], inputs: np.ndarray, preds: np.ndarray) -> np.ndarray:
    """Penalties without labels: +inf where the answer is not a valid path through the maze,
    else its length in moves (shorter is better; the shortest path scores lowest)."""
    grids = as_grids("inputs", inputs)
    guesses = as_grids("preds", preds, grids.shape[0])
    problems = path_problems(grids, guesses)
    lengths = np.count_nonzero(guesses == PATH, axis=(1, 2)) + 1.0
    return np.where([p is None for p in problems], lengths, np.inf).astype(np.float64)


TASK = Task(
    name="maze", builder="dataset.build_maze_dataset", builder_config="MazeBuildConfig",
    build_function="build_maze_dataset", evaluator=MazeEvaluator, headline_metric="eval/maze/exact_accuracy",
    fact_fields=("n",), check_facts=check_facts, facts_from_build_args=facts_from_build_args,
    render=render_maze, describe=describe_maze, parse=parse_maze, solve=solve_maze, show=show_maze,
    input_help=("mazes drawn as text, n lines of n characters each ('#' wall, '.' open, 'S' start, 'G' goal), "
                "a blank line between mazes; n must be the checkpoint's"),
    symmetries=maze_symmetries, check_answer=check_maze,
    tiny_build_args=dict(size=7, num_train=20, num_test=10, num_aug=2, min_path=4, loop_fraction=0.0, seed=0),
    size_arg="size", size_label="size (size x size cells)", size_in_name=square_size_in_name,
    scaling_metrics=(("eval/maze/exact_accuracy", "exact"), ("eval/maze/valid_path_rate", "valid path"),
                     ("eval/maze/optimal_path_rate", "optimal path")),
)
