"""Compare runs side by side: model, parameters, steps, time, best evaluation metrics,
accuracy per million parameters, and the config keys that differ.

    python scripts/compare_runs.py run-a run-b                  # runs by name, wandb id or path
    python scripts/compare_runs.py runs/trm-lsa/* --json        # one JSON object

Parameters are counted by building each run's model from the registry (models/__init__.py) on
PyTorch's meta device (no memory, no weights read), the puzzle embedding included.
"Per M params" is the task's headline metric (LSA: optimal cost rate; best evaluation) divided
by the parameters in millions: accuracy bought per parameter. A damaged run is one `skipped: ...`
line on stderr and the others are compared (exit 0; exit 2 when none can be read).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any, Optional

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a file from anywhere
if __name__ == "__main__":  # before the heavy imports: a signal now is one line, not a traceback
    from core.early_signals import exit_on_signals  # noqa: E402

    exit_on_signals()

import torch  # noqa: E402

from core.cli import path_arg, plain_parser, run_cli  # noqa: E402
from core.dicts import flatten  # noqa: E402
from core.errors import InputError  # noqa: E402
from training.inference import SHAPE_FIELDS, build_from_facts  # noqa: E402
from training.bookkeeping.runs import (  # noqa: E402
    config_section, find_run, printable, read_each, read_json, read_pointer_name, summarize,
)

ARCH_KEYS = ("hidden_size", "num_layers", "H_cycles", "L_cycles", "mixer", "halt_max_steps")
IGNORED_DIFFERENCES = ("logging.run_name",)


def shape_facts(run_dir: Path, config: dict[str, Any]) -> Optional[dict[str, Any]]:
    """vocab_size, seq_len, num_puzzle_identifiers: from the latest checkpoint, else the dataset."""
    latest = read_pointer_name(run_dir / "checkpoints" / "latest")
    meta = run_dir / "checkpoints" / latest / "meta.json" if latest else None
    if meta is not None and meta.is_file():
        facts = config_section(read_json(meta), "dataset", meta)
        if all(f in facts for f in SHAPE_FIELDS):
            return facts
    data_path = config_section(config, "data", run_dir / "config.json").get("path") or ""
    if not isinstance(data_path, str):
        raise InputError(f"{run_dir / 'config.json'}: field 'data.path' is {type(data_path).__name__}, expected a string")
    dataset_json = Path(data_path) / "train" / "dataset.json"
    return read_json(dataset_json) if data_path and dataset_json.is_file() else None


def count_parameters(run_dir: Path, config: dict[str, Any]) -> dict[str, Optional[int]]:
    facts = shape_facts(run_dir, config)
    if facts is None:
        return {"parameters": None, "puzzle_embedding_parameters": None}
    try:
        model = build_from_facts(config_section(config, "arch"), facts, torch.device("meta"), run_dir / "config.json")
    except InputError:  # a model this checkout does not know (another branch's arch)
        return {"parameters": None, "puzzle_embedding_parameters": None}
    named = list(model.named_parameters())
    return {"parameters": sum(p.numel() for _, p in named),
            "puzzle_embedding_parameters": sum(p.numel() for n, p in named if "puzzle_emb" in n)}


def compare_entry(run_dir: Path) -> tuple[dict[str, Any], dict[str, Any]]:
    """One run's column and its flattened config; a damaged run is an InputError naming it."""
    config = read_json(run_dir / "config.json")
    arch = config_section(config, "arch", run_dir / "config.json")
    summary = summarize(run_dir)
    counts = count_parameters(run_dir, config)
    headline = summary.best.get(summary.headline)
    per_million = None
    if headline is not None and counts["parameters"]:
        per_million = headline["value"] / (counts["parameters"] / 1e6)
    entry = {
        "name": summary.name, "path": summary.path, "task": summary.task, "arch": arch.get("name"),
        **{k: arch[k] for k in ARCH_KEYS if k in arch},
        **counts,
        "steps": summary.step, "train_seconds": summary.train_seconds, "wall_seconds": summary.wall_seconds,
        "headline": summary.headline, "headline_best": headline["value"] if headline else None,
        "headline_best_step": headline["step"] if headline else None, "headline_per_million_params": per_million,
        "best": {k: v["value"] for k, v in summary.best.items()},
    }
    try:
        flat = flatten(config)
    except RecursionError as exc:
        raise InputError(f"{run_dir / 'config.json'}: nested too deeply to compare") from exc
    return entry, flat


def compare(run_dirs: list[Path]) -> dict[str, Any]:
    """The runs side by side; damaged ones are skipped with one line each (training.bookkeeping.runs.read_each)."""
    read = read_each(run_dirs, compare_entry, "compare_runs")
    runs, configs = [entry for entry, _ in read], [flat for _, flat in read]
    keys = sorted(set().union(*configs))
    differ = {k: [c.get(k) for c in configs] for k in keys
              if k not in IGNORED_DIFFERENCES and len({json.dumps(c.get(k)) for c in configs}) > 1}
    return {"runs": runs, "config_differences": differ}


def fmt(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return str(int(value)) if value.is_integer() and abs(value) < 1e15 else f"{value:.4g}"
    if isinstance(value, int) and not isinstance(value, bool) and abs(value) >= 10000:
        return f"{value:,}"
    return printable(value)


def table(result: dict[str, Any]) -> str:
    runs = result["runs"]
    rows = [("", *[printable(r["name"]) for r in runs])]
    for key in ("task", "arch", *ARCH_KEYS, "parameters", "puzzle_embedding_parameters", "steps", "train_seconds",
                "headline", "headline_best", "headline_best_step", "headline_per_million_params"):
        if any(key in r for r in runs):
            rows.append((key.replace("headline_per_million_params", "headline per M params"),
                         *[fmt(r.get(key)) for r in runs]))
    metrics = sorted(set().union(*(r["best"] for r in runs)))
    rows.append(("best evaluation:", *[""] * len(runs)))
    rows += [(f"  {printable(m)}", *[fmt(r["best"].get(m)) for r in runs]) for m in metrics]
    rows.append(("config keys that differ:", *[""] * len(runs)))
    rows += [(f"  {printable(k)}", *[fmt(v) for v in values]) for k, values in result["config_differences"].items()]
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip() for row in rows)


def main(argv: Optional[list[str]] = None) -> None:
    parser = plain_parser("Compare runs: model, parameters, steps, time, best metrics, accuracy per parameter, config.")
    parser.add_argument("runs", nargs="+", metavar="RUN", help="a run directory, run name or wandb id (or a unique prefix)")
    parser.add_argument("--runs-dir", type=path_arg, default="runs", help="where names are looked up (default: runs)")
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of a table")
    args = parser.parse_args(argv)
    result = compare([find_run(key, args.runs_dir) for key in args.runs])
    print(json.dumps(result) if args.json else table(result))


if __name__ == "__main__":
    run_cli(main)
