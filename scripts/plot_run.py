"""Training and evaluation curves of one or more runs, overlaid, as one PNG.

    python scripts/plot_run.py my-run --out curves.png                      # a run by name (or wandb id, or path)
    python scripts/plot_run.py run-a run-b --out cmp.png --x time           # overlaid, against wall-clock time
    python scripts/plot_run.py run-a --out e.png --x train_seconds --metrics eval/exact_accuracy  # the training clock
    python scripts/plot_run.py run-a --out f.png --metrics train/lm_loss,eval/lsa/optimal_cost_rate

Default panels: training loss and accuracy, evaluation loss, exact accuracy and each task's
headline metric (LSA: optimal cost rate). Reads metrics.jsonl only; works while a run trains.
With --metrics, a directory holding only metrics.jsonl will do (e.g. a record under docs/benchmarks).
A default panel with no point against --x is left out (training metrics against train_seconds, which
is logged with evaluations only); a panel named with --metrics that would be empty is an error.
A damaged run is one `skipped: ...` line on stderr and the others are plotted (exit 2 when none
can be read). An existing --out is replaced only with --overwrite, and never written through: the
PNG is written beside it and renamed into place (a symbolic link there is refused). Missing
folders above --out are created, as every tool's --out does (export, ttc_sweep, visualize_dataset,
scaling), and the `wrote` line says which.
"""

from __future__ import annotations

import functools
import json
import os
import sys
from pathlib import Path
from typing import Any, Optional

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a file from anywhere
if __name__ == "__main__":  # before the heavy imports: a signal now is one line, not a traceback
    from core.early_signals import exit_on_signals  # noqa: E402

    exit_on_signals()

from core.cli import path_arg, plain_parser, run_cli  # noqa: E402
from core.errors import InputError  # noqa: E402
from core.paths import refuse_broken_link  # noqa: E402
from evaluators.render import check_new_output, save  # noqa: E402
from training.bookkeeping.runs import (  # noqa: E402
    config_section, finite_number, find_run, headline_metric, printable, read_each, read_json, read_metrics,
)

DEFAULT_PANELS = ("train/lm_loss", "train/accuracy", "eval/lm_loss", "eval/exact_accuracy")
LOG_SCALE = ("loss",)
# --x: the record key it reads, and the axis label
X_AXES = {"step": ("step", "step"),
          "time": ("time", "seconds (wall clock, summed over resumes)"),
          "train_seconds": ("train/seconds", "training seconds (compile included, evaluations excluded)")}


def series(records: list[dict[str, Any]], metric: str, x: str) -> tuple[list[float], list[float]]:
    """The finite (x, value) points of `metric` (NaN, infinities and non-numbers are left out)."""
    key = X_AXES[x][0]
    points = [(finite_number(r.get(key)), finite_number(r.get(metric))) for r in records]
    points = [(a, b) for a, b in points if a is not None and b is not None]
    return [a for a, _ in points], [b for _, b in points]


def plain_text(text: str) -> str:
    """A name drawn as plain text: escaped control characters, and no '$' mathtext."""
    return printable(text).replace("$", r"\$")


def read_run(run_dir: Path, need_config: bool = True) -> tuple[Path, list[dict[str, Any]], Optional[dict[str, Any]]]:
    """The run's records and config. With `need_config` false (--metrics names the panels, so no
    headline is looked up) a directory holding only metrics.jsonl, e.g. a benchmark record copied
    from another machine, will do; one with neither file is still an error."""
    path = run_dir / "config.json"
    if not os.path.lexists(path):
        if not os.path.lexists(run_dir / "metrics.jsonl"):
            raise InputError(f"{printable(run_dir)}: neither config.json nor metrics.jsonl (not a run directory)")
        if need_config:  # the default panels include the task's headline, which config.json names
            raise InputError(f"{printable(path)}: not there (a directory holding only metrics.jsonl is plotted "
                             "with --metrics naming its panels)")
        return run_dir, read_metrics(run_dir), None
    config = read_json(path)
    config_section(config, "data", path)  # headline_metric reads it
    return run_dir, read_metrics(run_dir), config


def plot_runs(run_dirs: list[Path], out: Path, metrics: Optional[list[str]] = None, x: str = "step",
              overwrite: bool = False) -> list[str]:
    """Draw each metric in its own panel, one line per run; returns the panels drawn. Damaged runs
    are skipped with one line each (training.bookkeeping.runs.read_each)."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure

    check_new_output(out, overwrite)
    runs = read_each(run_dirs, functools.partial(read_run, need_config=not metrics), "plot_run")
    available = sorted({k for _, records, _ in runs for r in records for k in r if "/" in k})
    if metrics:
        missing = [m for m in metrics if m not in available]
        if missing:
            raise InputError(f"--metrics {printable(missing[0])}: not logged by these runs; "
                             f"logged: {printable(', '.join(available))}")
        panels = metrics
    else:
        headlines = [headline_metric(config) for _, _, config in runs]
        panels = [m for m in dict.fromkeys([*DEFAULT_PANELS, *headlines]) if m in available]
    if not panels:
        raise InputError(f"{printable(', '.join(str(d) for d, _, _ in runs))}: no metrics logged yet "
                         "(metrics.jsonl is empty)")
    # A panel no run has a point for would be drawn empty: e.g. training metrics against
    # --x train_seconds (logged with evaluations only), or an x value that is never finite.
    drawable = [m for m in panels if any(series(records, m, x)[0] for _, records, _ in runs)]
    if metrics and len(drawable) < len(panels):
        empty = next(m for m in panels if m not in drawable)
        why = ("; train/seconds is logged with evaluations only" if x == "train_seconds" and not empty.startswith("eval/")
               else "")
        raise InputError(f"--metrics {printable(empty)}: no record of these runs has a finite value of it beside a "
                         f"finite {X_AXES[x][0]!r} (--x {x}){why}")
    if not drawable:
        raise InputError(f"{printable(', '.join(str(d) for d, _, _ in runs))}: no point to draw against --x {x} "
                         f"(no finite {X_AXES[x][0]!r} beside {printable(', '.join(panels))})")
    panels = drawable

    columns = 2 if len(panels) > 1 else 1
    rows = -(-len(panels) // columns)
    fig = Figure(figsize=(5.2 * columns, 3.2 * rows + 0.5), dpi=100, layout="constrained")
    axes = fig.subplots(rows, columns, squeeze=False).ravel()
    colors = matplotlib.colormaps["tab10"].colors
    for ax, metric in zip(axes, panels):
        for i, (run_dir, records, _) in enumerate(runs):
            xs, ys = series(records, metric, x)
            if not xs:
                continue
            dots = metric.startswith("eval/") or len(xs) == 1
            # each run its own line style (and marker) as well as colour, for colour-blind readers
            line = ("-", "--", "-.", ":")[i % 4]
            style = dict(marker="osD^v"[i % 5], markersize=3) if dots else dict(linewidth=1.2)
            ax.plot(xs, ys, color=colors[i % len(colors)], linestyle=line, label=plain_text(run_dir.name), **style)
        if any(word in metric for word in LOG_SCALE) and ax.lines and all(min(line.get_ydata()) > 0 for line in ax.lines):
            ax.set_yscale("log")
        ax.set_title(plain_text(metric), fontsize=10)
        ax.set_xlabel(X_AXES[x][1])
        ax.grid(alpha=0.3)
    for ax in axes[len(panels):]:
        ax.axis("off")
    handles, labels = axes[0].get_legend_handles_labels()
    for ax in axes[1:len(panels)]:
        for h, label in zip(*ax.get_legend_handles_labels()):
            if label not in labels:
                handles.append(h)
                labels.append(label)
    fig.legend(handles, labels, loc="outside upper center", ncols=min(len(labels), 4), fontsize=9)
    out.parent.mkdir(parents=True, exist_ok=True)
    save(fig, out, overwrite)
    return panels


def metric_list(text: str) -> list[str]:
    """--metrics as names, each stripped of spaces (`a, b`); an empty item (`,`, `a,`, '') or a
    repeated one is refused as ttc_sweep.py refuses its lists, before any run is read."""
    items = [part.strip() for part in text.split(",")]
    shown = printable(repr(text))
    if items == [""]:
        raise InputError(f"--metrics {shown}: is empty; give metric names separated by commas, e.g. "
                         "train/lm_loss,eval/exact_accuracy")
    if not all(items):
        raise InputError(f"--metrics {shown}: item {items.index('') + 1} of {len(items)} is empty (a stray comma?)")
    repeated = next((item for n, item in enumerate(items) if item in items[:n]), None)
    if repeated is not None:
        raise InputError(f"--metrics {shown}: {printable(repeated)} is named twice")
    return items


def first_missing(folder: Path) -> Optional[Path]:
    """The outermost folder of `folder`'s path that does not exist yet (None: it exists)."""
    missing = None
    for path in (folder, *folder.parents):
        if os.path.lexists(path):
            break
        missing = path
    return missing


def created_note(created: Optional[Path], folder: Path) -> str:
    """' (created the folder X)' for the `wrote` line; '' when nothing was created."""
    if created is None:
        return ""
    if created == folder:
        return f" (created the folder {printable(folder)})"
    return f" (created the folders {printable(folder)}, new from {printable(created)})"


def main(argv: Optional[list[str]] = None) -> None:
    parser = plain_parser("Plot training and evaluation curves of runs (overlaid) to a PNG file.")
    parser.add_argument("runs", nargs="+", metavar="RUN", help="a run directory, run name or wandb id (or a unique prefix)")
    parser.add_argument("--out", required=True, type=path_arg,
                        help="the PNG file to write (missing folders above it are created)")
    parser.add_argument("--runs-dir", type=path_arg, default="runs", help="where names are looked up (default: runs)")
    parser.add_argument("--metrics", help="comma-separated metric names (default: losses, accuracies, the task's headline)")
    parser.add_argument("--x", choices=tuple(X_AXES), default="step",
                        help="the x axis (default: step); train_seconds: the training clock, logged with evaluations "
                             "only, so it suits eval/ panels")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing --out file")
    args = parser.parse_args(argv)
    if args.out.suffix.lower() != ".png":
        raise InputError(f"--out {args.out}: expected a .png file name")
    refuse_broken_link(args.out, "--out")
    run_dirs = [find_run(key, args.runs_dir) for key in args.runs]
    created = first_missing(args.out.parent)
    panels = plot_runs(run_dirs, args.out, None if args.metrics is None else metric_list(args.metrics), args.x,
                       args.overwrite)
    print(f"wrote {printable(args.out)}{created_note(created, args.out.parent)}")
    print(json.dumps({"out": str(args.out), "runs": [str(d) for d in run_dirs], "panels": panels}))


if __name__ == "__main__":
    run_cli(main)
