"""Pictures and text of task examples, with a model's answer when given: for looking at a
dataset (scripts/visualize_dataset.py) and at predictions (wandb, at each evaluation).

Each renderer takes one example as dataset tokens (inputs, labels, optional predictions) and
the task's encoding facts (`task`, and `n` / `layout`; see training/inference.task_facts).
matplotlib is imported here only, with the Agg backend (files, no display).
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any, Optional

import numpy as np

from core.errors import InputError
from dataset.common import _umask
from training.files import replace_file

if TYPE_CHECKING:
    from matplotlib.figure import Figure

TASKS = ("lsa", "sudoku", "arith")
RIGHT, WRONG, GIVEN = "#1a9850", "#d73027", "#000000"


def _figure(width: float, height: float) -> "Figure":
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure

    return Figure(figsize=(width, height), dpi=100, layout="constrained")


def check_new_output(path: Path, overwrite: bool, flag: str = "--out") -> None:
    """An output file may replace only a regular file, and only with `overwrite` (`flag` names the
    option in the message)."""
    if not os.path.lexists(path):
        return
    if not overwrite:
        raise InputError(f"{flag} {path}: exists (pass --overwrite to replace it)")
    if path.is_symlink() or not path.is_file():
        raise InputError(f"{flag} {path}: exists and is not a regular file (a symbolic link, a directory, ...); "
                         "not replaced")


def save(fig: "Figure", path: Path | str, overwrite: bool = False) -> Path:
    """Write the PNG beside `path`, then move it into place: a reader never sees half a file, and
    an existing `path` (a symbolic link included) is replaced, never written through; without
    `overwrite` an existing file is an InputError (os.link refuses it atomically)."""
    path = Path(path)
    check_new_output(path, overwrite)
    if overwrite:
        replace_file(path, lambda f: fig.savefig(f, format="png"))
        return path
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.tmp-", suffix=".png", dir=path.parent)
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, "wb") as f:
            fig.savefig(f, format="png")
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp made it private
        try:
            os.link(tmp, path)  # unlike a rename, refuses a file that appeared meanwhile
        except FileExistsError as exc:
            raise InputError(f"--out {path}: exists (pass --overwrite to replace it)") from exc
    finally:
        tmp.unlink(missing_ok=True)
    return path


def known_task(facts: dict[str, Any]) -> Optional[str]:
    """The task whose pictures fit these facts; None when there are none (a foreign dataset)."""
    task = facts.get("task")
    if task in TASKS:
        return task
    if facts.get("seq_len") == 81 and facts.get("vocab_size") == 11:  # the reference's Sudoku format
        return "sudoku"
    return None


def task_of(facts: dict[str, Any]) -> str:
    task = known_task(facts)
    if task is None:
        raise ValueError(f"dataset task {facts.get('task')!r}: pictures exist for {', '.join(TASKS)}")
    return task


# ---------------------------------------------------------------------------------------------
# LSA: the cost matrix as a heat map; the optimal assignment boxed, the model's cells dotted


def lsa_summary(costs: np.ndarray, labels: Optional[np.ndarray], preds: Optional[np.ndarray]) -> dict[str, Any]:
    from evaluators.lsa import LABEL_ASSIGNED, optimal_costs

    n = costs.shape[0]
    out: dict[str, Any] = {"optimal_cost": int(optimal_costs(costs[None])[0])}
    if labels is not None:
        out["target"] = (labels.reshape(n, n) == LABEL_ASSIGNED).argmax(1).tolist()
    if preds is not None:
        chosen = preds.reshape(n, n) == LABEL_ASSIGNED
        valid = bool(np.all(chosen.sum(0) == 1) and np.all(chosen.sum(1) == 1))
        out.update(valid=valid, cells=chosen, prediction=chosen.argmax(1).tolist() if valid else None,
                   cost=int((costs * chosen).sum()) if valid else None)
    return out


def render_lsa(facts: dict[str, Any], inputs: np.ndarray, labels: Optional[np.ndarray] = None,
               preds: Optional[np.ndarray] = None, title: str = "") -> "Figure":
    n = int(facts.get("n") or round(len(inputs) ** 0.5))
    costs = np.asarray(inputs).reshape(n, n).astype(np.int64)
    info = lsa_summary(costs, labels, preds)
    size = 1.2 + 0.45 * n
    fig = _figure(size + 1.0, size + 0.4)
    ax = fig.add_subplot()
    image = ax.imshow(costs, cmap="YlGnBu", vmin=1, vmax=int(facts.get("max_cost") or costs.max()))
    fig.colorbar(image, ax=ax, shrink=0.8, label="cost")
    for r in range(n):
        for c in range(n):
            light = costs[r, c] > 0.6 * image.norm.vmax
            ax.text(c, r, str(costs[r, c]), ha="center", va="center", fontsize=9, color="white" if light else "black")
    if "target" in info:
        for r, c in enumerate(info["target"]):
            ax.add_patch(_box(c, r, "#ff7f00", 3.5))
    if "cells" in info:
        target = info.get("target")
        for r, c in zip(*np.nonzero(info["cells"])):
            ax.plot(c, r - 0.32, marker="v", markersize=7,
                    color=RIGHT if target is not None and target[r] == c else WRONG)
    ax.set_xticks(range(n))
    ax.set_yticks(range(n))
    ax.set_xlabel("column (orange box: the optimal assignment" + ("; triangles: the model's" if "cells" in info else "")
                  + ")", fontsize=8)
    ax.set_ylabel("row")
    text = f"optimal cost {info['optimal_cost']}"
    if "cells" in info:
        text += f"; model: cost {info['cost']}" if info["valid"] else "; model: not a permutation"
    ax.set_title(f"{title}\n{text}" if title else text, fontsize=10)
    return fig


def _box(x: float, y: float, color: str, width: float):
    from matplotlib.patches import Rectangle

    return Rectangle((x - 0.5, y - 0.5), 1, 1, fill=False, edgecolor=color, linewidth=width)


# ---------------------------------------------------------------------------------------------
# Sudoku: givens in black on grey, the solution (or the model's digits, green/red) in the blanks


def render_sudoku(facts: dict[str, Any], inputs: np.ndarray, labels: Optional[np.ndarray] = None,
                  preds: Optional[np.ndarray] = None, title: str = "") -> "Figure":
    puzzle = np.asarray(inputs).astype(np.int64) - 1  # 0 = blank
    solution = None if labels is None else np.asarray(labels).astype(np.int64) - 1
    guess = None if preds is None else np.asarray(preds).astype(np.int64) - 1
    fig = _figure(4.4, 4.8)
    ax = fig.add_subplot()
    for cell in range(81):
        r, c = divmod(cell, 9)
        if puzzle[cell] > 0:
            ax.add_patch(_filled(c, r, "#e6e6e6"))
            ax.text(c, r, str(puzzle[cell]), ha="center", va="center", fontsize=13, weight="bold", color=GIVEN)
        elif guess is not None:
            right = solution is not None and guess[cell] == solution[cell]
            shown = str(guess[cell]) if 1 <= guess[cell] <= 9 else "?"
            ax.text(c, r, shown, ha="center", va="center", fontsize=12, color=RIGHT if right else WRONG)
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
        text = f"{givens} givens; model right on {int((guess == solution)[blanks].sum())}/{int(blanks.sum())} blanks"
    else:
        text = f"{givens} givens (bold); solution in blue"
    ax.set_title(f"{title}\n{text}" if title else text, fontsize=10)
    return fig


def _filled(x: float, y: float, color: str):
    from matplotlib.patches import Rectangle

    return Rectangle((x - 0.5, y - 0.5), 1, 1, facecolor=color, edgecolor="none")


# ---------------------------------------------------------------------------------------------
# Arithmetic: the problem in columns, most significant digit left, as on paper


def arith_numbers(facts: dict[str, Any], inputs: np.ndarray, labels: Optional[np.ndarray],
                  preds: Optional[np.ndarray]) -> dict[str, Any]:
    """The example's operands, answer and the model's answer as digit strings (most significant first)."""
    from dataset.build_arith_dataset import DIGIT_CHARS, DIGIT_TOKEN_OFFSET, OP_SYMBOLS, ArithLayout

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
    fig = _figure(0.4 * columns + 2.6, 0.42 * len(rows) + 1.3)
    ax = fig.add_subplot()
    for y, (label, number) in enumerate(rows):
        ax.text(-0.9, y, label, ha="right", va="center", fontsize=13, family="monospace")
        for i, ch in enumerate(reversed(number)):  # significance i sits in column columns - 1 - i
            color = "black"
            if label == "model" and "answer" in info:
                target = info["answer"][::-1][i] if i < len(info["answer"]) else "0"
                color = RIGHT if ch == target else WRONG
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
        text += "; model " + ("right" if info["prediction"] == info["answer"] else "wrong")
    ax.set_title(f"{title}\n{text}" if title else text, fontsize=9)
    return fig


# ---------------------------------------------------------------------------------------------


RENDERERS = {"lsa": render_lsa, "sudoku": render_sudoku, "arith": render_arith}


def render_example(facts: dict[str, Any], inputs: np.ndarray, labels: Optional[np.ndarray] = None,
                   preds: Optional[np.ndarray] = None, title: str = "") -> "Figure":
    """One example as a matplotlib Figure (save it with `save`)."""
    return RENDERERS[task_of(facts)](facts, np.asarray(inputs), labels, preds, title)


def describe_example(facts: dict[str, Any], inputs: np.ndarray, labels: np.ndarray,
                     preds: np.ndarray) -> dict[str, Any]:
    """One example as text columns (input, target, prediction, correct): a wandb table row."""
    task = task_of(facts)
    inputs, labels, preds = (np.asarray(x).astype(np.int64) for x in (inputs, labels, preds))
    if task == "lsa":
        n = int(facts.get("n") or round(len(inputs) ** 0.5))
        info = lsa_summary(inputs.reshape(n, n), labels, preds)
        rows = "; ".join(" ".join(map(str, row)) for row in inputs.reshape(n, n))
        shown = f"{info['prediction']} (cost {info['cost']})" if info["valid"] else "not a permutation"
        return {"input": rows, "target": f"{info['target']} (cost {info['optimal_cost']})", "prediction": shown,
                "correct": bool(info["valid"] and info["cost"] == info["optimal_cost"])}
    if task == "sudoku":
        def grid(tokens: np.ndarray, blank: str) -> str:
            return "".join(str(t - 1) if 2 <= t <= 10 else blank for t in tokens)

        return {"input": grid(inputs, "."), "target": grid(labels, "?"), "prediction": grid(preds, "?"),
                "correct": bool(np.array_equal(preds, labels))}
    info = arith_numbers(facts, inputs, labels, preds)
    return {"input": f"{info['a']} {info['symbol']} {info['b']}", "target": info["answer"],
            "prediction": info["prediction"], "correct": info["prediction"] == info["answer"]}
