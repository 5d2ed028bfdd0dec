"""List the runs under a runs directory, one line each (or JSON).

    python scripts/list_runs.py                                   # every run under runs/, oldest first
    python scripts/list_runs.py --sort step                       # by last step logged
    python scripts/list_runs.py --sort optimal_cost_rate          # by a metric's best value, best last
    python scripts/list_runs.py --project trm-lsa-cpu --json      # one JSON array

A run's name or wandb id (or a unique prefix of either) is what `train.resume=...`,
`compare_runs.py` and `plot_run.py` accept. A damaged run (unreadable or malformed files) is one
`skipped: ...` line on stderr naming it, and the others are listed (exit 0); exit code 2 only
when every run found is damaged. Names and fields are printed with control characters escaped.
A `checkpoints/latest` that names a checkpoint which is not there (or not whole) shows in its
run's row: `step_0000040 (missing)`, `(incomplete)`, or `(unreadable)` where this user may not
look inside it (another user's run); `checkpoint_state` in the JSON.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Optional

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a file from anywhere
if __name__ == "__main__":  # before the heavy imports: a signal now is one line, not a traceback
    from core.early_signals import exit_on_signals  # noqa: E402

    exit_on_signals()

from core.cli import path_arg, plain_parser, run_cli  # noqa: E402
from core.errors import InputError  # noqa: E402
from training.bookkeeping.runs import RunSummary, better, printable, read_each, run_dirs, summarize  # noqa: E402


def metric_key(name: str, runs: list[RunSummary]) -> str:
    """A metric given in full (eval/lsa/optimal_cost_rate) or by its last part (optimal_cost_rate)."""
    known = sorted({k for r in runs for k in r.best})
    for key in (name, f"eval/{name}"):
        if key in known:
            return key
    matches = [k for k in known if k.rsplit("/", 1)[-1] == name or k.endswith("/" + name)]
    if len(matches) == 1:
        return matches[0]
    if not matches:
        raise InputError(f"--sort {name}: not date, step or a metric these runs logged; metrics: {printable(', '.join(known)) or 'none'}")
    raise InputError(f"--sort {name}: ambiguous, matches {printable(', '.join(matches))}")


def sort_runs(runs: list[RunSummary], key: str) -> list[RunSummary]:
    """Oldest, shortest or worst first: the run you want sits just above the prompt."""
    if key == "date":
        return sorted(runs, key=lambda r: r.created)
    if key == "step":
        return sorted(runs, key=lambda r: (r.step, r.created))
    metric = metric_key(key, runs)
    missing = [r for r in runs if metric not in r.best]
    present = [r for r in runs if metric in r.best]
    flip = better(metric, 0.0, 1.0)  # lower is better: sort descending so the best comes last
    return missing + sorted(present, key=lambda r: r.best[metric]["value"], reverse=flip)


def fmt_seconds(seconds: Optional[float]) -> str:
    if seconds is None:
        return "-"
    minutes, sec = divmod(int(round(seconds)), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m" if hours else f"{minutes}m{sec:02d}s"


def table(runs: list[RunSummary], metric: Optional[str]) -> str:
    rows = [("created", "run", "task", "arch", "step", "train time", "best headline", "wandb id", "checkpoint")]
    for r in runs:
        shown = metric or r.headline
        best = r.best.get(shown)
        rows.append(tuple(printable(cell) for cell in (
            time.strftime("%Y-%m-%d %H:%M", time.localtime(r.created)),
            f"{r.project}/{r.name}",
            r.task,
            r.arch,
            str(r.step),
            fmt_seconds(r.train_seconds),
            f"{shown.rsplit('/', 1)[-1]}={best['value']:.4g} @{best['step']}" if best else "-",
            r.wandb_id or "-",
            "-" if r.checkpoint is None else r.checkpoint + ("" if r.checkpoint_state == "ok" else f" ({r.checkpoint_state})"),
        )))
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip() for row in rows)


def main(argv: Optional[list[str]] = None) -> None:
    parser = plain_parser("List training runs (name, task, steps, best headline metric, wandb id).")
    parser.add_argument("--runs-dir", type=path_arg, default="runs", help="the runs directory (logging.runs_dir; default: runs)")
    parser.add_argument("--project", help="only this project (logging.project)")
    parser.add_argument("--sort", default="date", help="date (default), step, or a metric: its best value, best last")
    parser.add_argument("--json", action="store_true", help="print one JSON array instead of a table")
    args = parser.parse_args(argv)
    if not Path(args.runs_dir).is_dir():
        raise InputError(f"--runs-dir {args.runs_dir}: no such directory")
    found = [d for d in run_dirs(args.runs_dir) if args.project in (None, d.parent.name)]
    runs = read_each(found, summarize, f"--runs-dir {args.runs_dir}")
    runs = sort_runs(runs, args.sort)
    if args.json:
        print(json.dumps([r.to_dict() for r in runs]))
    elif not runs:
        print(f"no runs under {printable(args.runs_dir)}" + (f" in project {printable(args.project)}" if args.project else ""))
    else:
        print(table(runs, None if args.sort in ("date", "step") else metric_key(args.sort, runs)))


if __name__ == "__main__":
    run_cli(main)
