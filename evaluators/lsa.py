"""Linear Sum Assignment scoring: permutation validity and optimal cost against scipy.

Because about 7.7% of 9x9 instances with costs 1..100 have several optimal assignments, the
headline metric is `optimal_cost_rate` (a valid permutation whose cost equals the optimum),
not exact match with the one optimum the builder stored.
"""

from __future__ import annotations

import math
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any, Optional

import numpy as np
import torch
from scipy.optimize import linear_sum_assignment

from core.errors import InputError
from evaluators.base import Evaluator, gather_arrays, save_predictions
from evaluators.instances import csv_row, is_integer, read_npy
from evaluators.render import RIGHT, RIGHT_MARKER, WRONG, WRONG_MARKER, new_figure
from evaluators.tasks import Solver, Symmetry, Task, square_size_in_name

if TYPE_CHECKING:
    from matplotlib.figure import Figure

LABEL_UNASSIGNED, LABEL_ASSIGNED = 1, 2


def _as_matrices(costs: np.ndarray) -> np.ndarray:
    costs = np.asarray(costs)
    if costs.ndim != 3 or costs.shape[1] != costs.shape[2]:
        raise ValueError(f"costs: expected shape (N, n, n), got {costs.shape}")
    return costs


def optimal_costs(costs: np.ndarray) -> np.ndarray:
    """Minimum assignment cost of each (n, n) matrix: (N, n, n) -> (N,)."""
    costs = _as_matrices(costs)
    out = np.empty(costs.shape[0], dtype=np.float64)
    for i, c in enumerate(costs):
        rows, cols = linear_sum_assignment(c)
        out[i] = c[rows, cols].sum()
    return out


def score_assignments(
    costs: np.ndarray, predicted_labels: np.ndarray, target_labels: Optional[np.ndarray] = None
) -> dict[str, Optional[float]]:
    """Score predicted assignments given in label-token form.

    costs (N, n, n); predicted_labels and target_labels (N, n*n) with 1 = not assigned,
    2 = assigned. A prediction is a valid permutation when every token is 1 or 2 and the 2s
    form a permutation matrix. Returns:
      exact_accuracy          all cells equal the target (None without targets)
      valid_permutation_rate  fraction of valid permutations
      optimal_cost_rate       valid and cost == optimal cost (ties count as optimal)
      mean_cost_difference    mean over valid predictions of (cost - optimal); None if none valid
    """
    costs = _as_matrices(costs)
    num, n, _ = costs.shape
    preds = np.asarray(predicted_labels)
    if preds.shape != (num, n * n):
        raise ValueError(f"predicted_labels: expected shape ({num}, {n * n}), got {preds.shape}")
    if num == 0:
        raise ValueError("score_assignments: no instances to score")
    assigned = (preds == LABEL_ASSIGNED).reshape(num, n, n)
    well_formed = np.all((preds == LABEL_ASSIGNED) | (preds == LABEL_UNASSIGNED), axis=1)
    valid = well_formed & np.all(assigned.sum(2) == 1, axis=1) & np.all(assigned.sum(1) == 1, axis=1)
    predicted_cost = (costs * assigned).sum(axis=(1, 2)).astype(np.float64)
    best = optimal_costs(costs)
    optimal = valid & (predicted_cost == best)

    exact = None
    if target_labels is not None:
        targets = np.asarray(target_labels)
        if targets.shape != (num, n * n):
            raise ValueError(f"target_labels: expected shape ({num}, {n * n}), got {targets.shape}")
        exact = float(np.mean(np.all(preds == targets, axis=1)))
    return {
        "exact_accuracy": exact,
        "valid_permutation_rate": float(valid.mean()),
        "optimal_cost_rate": float(optimal.mean()),
        "mean_cost_difference": float((predicted_cost - best)[valid].mean()) if valid.any() else None,
    }


def project_to_permutation(scores: np.ndarray) -> np.ndarray:
    """The permutation maximising the summed per-cell scores (Hungarian), as label tokens.

    scores (N, n, n), higher = more likely assigned -> (N, n*n) labels; always valid."""
    scores = _as_matrices(scores)
    num, n, _ = scores.shape
    labels = np.full((num, n, n), LABEL_UNASSIGNED, dtype=np.int64)
    for i, s in enumerate(scores):
        rows, cols = linear_sum_assignment(s, maximize=True)
        labels[i, rows, cols] = LABEL_ASSIGNED
    return labels.reshape(num, n * n)


class LSAEvaluator(Evaluator):
    """Scores argmax predictions and, beyond the reference, the Hungarian projection of the
    model's per-cell scores (logit of "assigned" minus logit of "not assigned")."""

    name = "lsa"
    task = "lsa"
    required_outputs = frozenset({"preds", "logits"})

    def __init__(self, metadata, **options: Any):
        super().__init__(metadata, **options)
        n = getattr(metadata, "n", None)
        n = math.isqrt(metadata.seq_len) if n is None else n
        if not isinstance(n, int) or isinstance(n, bool) or n * n != metadata.seq_len:
            raise ValueError(f"lsa evaluator: n={n!r} and seq_len={metadata.seq_len} do not describe n x n matrices")
        self.n = n

    def metric_names(self) -> set[str]:
        return {"exact_accuracy", "valid_permutation_rate", "optimal_cost_rate", "mean_cost_difference",
                "projected_optimal_cost_rate", "projected_exact_accuracy"}

    def begin_eval(self) -> None:
        self._costs, self._preds, self._labels, self._scores = [], [], [], []

    def update_batch(self, batch: dict[str, torch.Tensor], outputs: dict[str, torch.Tensor]) -> None:
        logits = outputs["logits"]
        scores = (logits[..., LABEL_ASSIGNED].float() - logits[..., LABEL_UNASSIGNED].float())  # (B, n*n)
        self._costs.append(batch["inputs"].cpu().numpy().reshape(-1, self.n, self.n))
        self._labels.append(batch["labels"].cpu().numpy())
        self._preds.append(outputs["preds"].cpu().numpy())
        self._scores.append(scores.cpu().numpy().reshape(-1, self.n, self.n))

    def result(self, save_path: Optional[Path], rank: int = 0, world_size: int = 1, group: Any = None) -> dict[str, float]:
        arrays = {k: np.concatenate(getattr(self, f"_{k}")) for k in ("costs", "preds", "labels", "scores")}
        arrays = gather_arrays(arrays, world_size, group)
        metrics = score_assignments(arrays["costs"], arrays["preds"], arrays["labels"])
        projected = project_to_permutation(arrays["scores"])
        projected_metrics = score_assignments(arrays["costs"], projected, arrays["labels"])
        metrics["projected_optimal_cost_rate"] = projected_metrics["optimal_cost_rate"]
        metrics["projected_exact_accuracy"] = projected_metrics["exact_accuracy"]
        if save_path is not None and rank == 0:
            save_predictions(save_path / "lsa_predictions.npz", projected=projected, **arrays)
        return {k: v for k, v in metrics.items() if v is not None}


# ---------------------------------------------------------------------------------------------
# The task: its facts, pictures and text of an example, a user's instances (scripts/solve.py)


def check_facts(facts: dict[str, Any], where: Any, prefix: str = "") -> None:
    """n x n cost matrices, each cost a token below vocab_size."""
    seq_len, vocab_size = facts["seq_len"], facts["vocab_size"]
    n = facts.get("n", math.isqrt(seq_len))
    if not is_integer(n) or n < 1 or n * n != seq_len:
        raise InputError(f"{where}: {prefix}n={n!r} and seq_len={seq_len} do not describe n x n cost matrices")
    max_cost = facts.get("max_cost", vocab_size - 2)
    if not is_integer(max_cost) or not 1 <= max_cost < vocab_size:
        raise InputError(f"{where}: {prefix}max_cost={max_cost!r}: costs are tokens, expected an integer "
                         f"in 1..{vocab_size - 1}")


def facts_from_build_args(args: dict[str, Any]) -> dict[str, Any]:
    from dataset.build_lsa_dataset import LSABuildConfig

    built = LSABuildConfig.model_validate({**args, "output_dir": "."})
    return {"n": built.n, "max_cost": built.max_cost}


# The cost matrix as a heat map; the optimal assignment boxed, the model's cells marked


def lsa_summary(costs: np.ndarray, labels: Optional[np.ndarray], preds: Optional[np.ndarray]) -> dict[str, Any]:
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
    fig = new_figure(size + 1.0, size + 0.4)
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
            right = target is not None and target[r] == c
            ax.plot(c, r - 0.3, marker=RIGHT_MARKER if right else WRONG_MARKER, markersize=8 if right else 9,
                    color=RIGHT if right else WRONG, markeredgecolor="white", markeredgewidth=0.8)
    ax.set_xticks(range(n))
    ax.set_yticks(range(n))
    ax.set_xlabel("column (orange box: the optimal assignment" + (";\nthe model's: dot where optimal, cross where not"
                  if "cells" in info else "") + ")", fontsize=8)
    ax.set_ylabel("row")
    text = f"optimal cost {info['optimal_cost']}"
    if "cells" in info:
        text += f"; model: cost {info['cost']}" if info["valid"] else "; model: not a permutation"
    ax.set_title(f"{title}\n{text}" if title else text, fontsize=10)
    return fig


def _box(x: float, y: float, color: str, width: float):
    from matplotlib.patches import Rectangle

    return Rectangle((x - 0.5, y - 0.5), 1, 1, fill=False, edgecolor=color, linewidth=width)


def describe_lsa(facts: dict[str, Any], inputs: np.ndarray, labels: np.ndarray, preds: np.ndarray) -> dict[str, Any]:
    """One example as text columns (input, target, prediction, correct); int64 tokens."""
    n = int(facts.get("n") or round(len(inputs) ** 0.5))
    info = lsa_summary(inputs.reshape(n, n), labels, preds)
    rows = "; ".join(" ".join(map(str, row)) for row in inputs.reshape(n, n))
    shown = f"{info['prediction']} (cost {info['cost']})" if info["valid"] else "not a permutation"
    return {"input": rows, "target": f"{info['target']} (cost {info['optimal_cost']})", "prediction": shown,
            "correct": bool(info["valid"] and info["cost"] == info["optimal_cost"])}


# A user's cost matrices


def parse_lsa(raw: bytes, where: str, facts: dict[str, Any]) -> np.ndarray:
    """Cost matrices (N, n, n) int64 from .npy bytes or CSV text; checked against the checkpoint."""
    n, max_cost = facts.get("n"), facts.get("max_cost")
    if not isinstance(n, int) or not isinstance(max_cost, int):
        raise InputError(f"--checkpoint: its LSA facts need integer n and max_cost, got n={n!r}, max_cost={max_cost!r}")
    if raw.startswith(b"\x93NUMPY"):
        costs = read_npy(raw, where)
        costs = costs[None] if costs.ndim == 2 else costs
        if costs.ndim != 3:
            raise InputError(f"{where}: expected an array of shape (n, n) or (N, n, n), got {costs.shape}")
        matrices = [(f"matrix {i + 1}", m) for i, m in enumerate(costs)]
    else:
        blocks, block = [], []
        for number, line in enumerate(raw.decode(errors="replace").splitlines() + [""], 1):
            if line.strip().startswith("#"):
                continue
            if line.strip():
                block.append((number, line))
            elif block:
                blocks.append(block)
                block = []
        matrices = []
        for rows in blocks:
            values = [csv_row(line, number, where) for number, line in rows]
            if len({len(v) for v in values}) != 1:
                raise InputError(f"{where}: lines {rows[0][0]}-{rows[-1][0]}: rows of different lengths")
            matrices.append((f"matrix at line {rows[0][0]}", np.array(values)))
    if not matrices:
        raise InputError(f"{where}: no cost matrix found")
    for name, m in matrices:
        if m.shape != (n, n):
            raise InputError(f"{where}: {name} is {'x'.join(map(str, m.shape))}; the checkpoint was trained on {n}x{n}")
        bad = ~np.isfinite(m) | (m != np.round(m)) if m.dtype.kind == "f" else np.zeros(m.shape, bool)
        if bad.any():
            raise InputError(f"{where}: {name}: costs must be integers (tokens), got {m[bad][0]:g}")
        if m.min() < 1 or m.max() > max_cost:
            bad = m.min() if m.min() < 1 else m.max()
            raise InputError(f"{where}: {name}: cost {bad:g} is outside the trained range 1..{max_cost}")
    return np.stack([m for _, m in matrices]).astype(np.int64)


def solve_lsa(model: Solver, costs: np.ndarray) -> list[dict[str, Any]]:
    num, n, _ = costs.shape
    out = model.solve(costs.reshape(num, n * n))
    assigned = (out["preds"] == LABEL_ASSIGNED).reshape(num, n, n)
    scores = (out["logits"][..., LABEL_ASSIGNED] - out["logits"][..., LABEL_UNASSIGNED]).reshape(num, n, n)
    projected = (project_to_permutation(scores) == LABEL_ASSIGNED).reshape(num, n, n)
    best = optimal_costs(costs)
    answers = []
    for i in range(num):
        valid = bool(np.all(np.isin(out["preds"][i], (LABEL_ASSIGNED, LABEL_UNASSIGNED))) and
                     np.all(assigned[i].sum(0) == 1) and np.all(assigned[i].sum(1) == 1))
        cost = int((costs[i] * assigned[i]).sum()) if valid else None
        answers.append({
            "assignment": assigned[i].argmax(1).tolist() if valid else None,
            "valid": valid,
            "steps": int(out["steps"][i]),
            "cost": cost,
            "optimal_cost": int(best[i]),
            "gap": cost - int(best[i]) if valid else None,
            "projected_assignment": projected[i].argmax(1).tolist(),
            "projected_cost": int((costs[i] * projected[i]).sum()),
        })
    return answers


def show_lsa(costs: np.ndarray, answer: dict[str, Any], facts: dict[str, Any]) -> str:
    """The cost matrix with the chosen cell of each row in brackets."""
    if answer["valid"]:
        cols = answer["assignment"]
        head = (f"cost {answer['cost']}, optimal {answer['optimal_cost']} (gap {answer['gap']}), "
                f"{answer['steps']} ACT steps; assignment row -> column: {cols}")
    else:
        cols = answer["projected_assignment"]
        head = (f"not a permutation ({answer['steps']} ACT steps); the Hungarian projection of its scores, "
                f"{cols}, costs {answer['projected_cost']}, optimal {answer['optimal_cost']}")
    width = len(str(costs.max())) + 2
    rows = ["".join((f"[{c}]" if j == cols[r] else f" {c} ").rjust(width + 1) for j, c in enumerate(row)).rstrip()
            for r, row in enumerate(costs)]
    return head + "\n" + "\n".join(rows)


# Test-time compute (training/voting.py): the builder's row/column permutations and transposes,
# and the label-free check


def _move_cells(tokens: np.ndarray, sources: np.ndarray) -> np.ndarray:
    return np.asarray(tokens)[:, sources]


def lsa_symmetries(facts: dict[str, Any], rng: np.random.Generator, count: int) -> list[Symmetry]:
    """`count` random row and column permutations of the cost matrix (and transposes), drawn and
    applied by the builder's own functions (`draw_permutations`, `permute_costs`). The optimal
    assignments of a permuted matrix are the permuted optimal assignments, so the answer maps
    back cell by cell: `permute_costs` of the cell-index grid says which cell each one reads."""
    from dataset.build_lsa_dataset import draw_permutations, permute_costs

    if count <= 0:
        return []
    n = int(facts.get("n") or math.isqrt(facts["seq_len"]))
    row_perm, col_perm, flip = draw_permutations(rng, (1, count), n, True)
    cells = np.arange(n * n).reshape(1, n, n)
    sources = permute_costs(cells, row_perm, col_perm, flip)[0].reshape(count, n * n)  # (count, n*n)
    return [Symmetry(f"rows {row_perm[0, a].tolist()} cols {col_perm[0, a].tolist()}{' transposed' if flip[0, a] else ''}",
                     partial(_move_cells, sources=sources[a]), partial(_move_cells, sources=np.argsort(sources[a])))
            for a in range(count)]


def check_lsa(facts: dict[str, Any], inputs: np.ndarray, preds: np.ndarray) -> np.ndarray:
    """The assignment's cost under the input costs where the answer is a permutation matrix (1 =
    not assigned, 2 = assigned everywhere), +inf elsewhere: the cheapest passing answer wins."""
    inputs, preds = np.asarray(inputs).astype(np.int64), np.asarray(preds)
    num, cells = inputs.shape
    n = math.isqrt(cells)
    assigned = (preds == LABEL_ASSIGNED).reshape(num, n, n)
    well_formed = np.all((preds == LABEL_ASSIGNED) | (preds == LABEL_UNASSIGNED), axis=1)
    valid = well_formed & np.all(assigned.sum(2) == 1, axis=1) & np.all(assigned.sum(1) == 1, axis=1)
    cost = (inputs.reshape(num, n, n) * assigned).sum(axis=(1, 2)).astype(np.float64)
    return np.where(valid, cost, np.inf)


TASK = Task(
    name="lsa", builder="dataset.build_lsa_dataset", builder_config="LSABuildConfig",
    build_function="build_lsa_dataset", evaluator=LSAEvaluator, headline_metric="eval/lsa/optimal_cost_rate",
    fact_fields=("n", "max_cost"), check_facts=check_facts, facts_from_build_args=facts_from_build_args,
    render=render_lsa, describe=describe_lsa, parse=parse_lsa, solve=solve_lsa, show=show_lsa,
    input_help=("cost matrices as CSV (rows of comma- or space-separated integers, matrices separated by a blank "
                "line) or .npy of shape (n, n) or (N, n, n); n and the cost range 1..max_cost must be the checkpoint's"),
    symmetries=lsa_symmetries, check_answer=check_lsa,
    tiny_build_args=dict(n=4, max_cost=9, num_train=40, num_test=10, num_aug=3, seed=0),
    size_arg="n", size_label="n (n x n cost matrix)", size_in_name=square_size_in_name,
    scaling_metrics=(("eval/lsa/optimal_cost_rate", "optimal cost rate"), ("eval/lsa/exact_accuracy", "exact"),
                     ("eval/lsa/valid_permutation_rate", "valid permutation"),
                     ("eval/lsa/projected_optimal_cost_rate", "projected optimal")),
)
