"""How a recipe scales with the LSA size n: the same config at several n, equal budget,
one table and one PNG plot of accuracy against n.

    python scripts/lsa_scaling.py --out scaling/                         # cfg_lsa_400s at n = 4, 6, 9, 12
    python scripts/lsa_scaling.py --out scaling/ --gpus 0,1,2,3          # the four runs side by side, one per GPU
    python scripts/lsa_scaling.py --out s/ --config-name cfg_lsa_cpu --sizes 3,4,5 train.max_train_seconds=120
    python scripts/lsa_scaling.py --out scaling/ --report-only           # redo table and plot from the runs
                                                                         # (the config, sizes and runs of its scaling.json)

Every size trains `--config-name` with the given overrides, `data.build_args.n=<n>` and its
own dataset: the config's data.path with its size replaced (`lsa-9x9-...` -> `lsa-4x4-...`,
or `-n<n>` appended), built first, one at a time, so no two runs build at once; an existing
dataset there must be LSA of that n. The budget is the config's (`train.max_train_seconds`,
`train.max_steps`), the same for every n. Runs are named `<prefix>-n<n>` under `--runs-dir`;
the script sets n, the run name and the runs folder itself (use --sizes, --prefix, --runs-dir).
Training refuses run names that exist and an `--out` that holds an earlier sweep's report or
logs; `--report-only` rewrites the report there from the runs. Writes `scaling.json`,
`scaling.md`, `scaling.png` (an earlier report stays whole if writing fails) and one log per run (`n<n>.log`) into `--out`. The
runs start in the current folder, like pretrain.py, with absolute paths. A SIGTERM or Ctrl-C
is passed on to the runs once, which write a checkpoint and stop; the script then exits
128 + the signal. On a CPU config, `--gpus` only sets how many sizes run at once.
"""

from __future__ import annotations

import json
import math
import os
import re
import shlex
import signal
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace
from typing import Any, Optional

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # run as a file from anywhere
if __name__ == "__main__":  # before the heavy imports: a signal now is one line, not a traceback
    from core.early_signals import exit_on_signals  # noqa: E402

    exit_on_signals()

from core.cli import plain_parser, run_cli  # noqa: E402
from core.errors import DatasetError, InputError  # noqa: E402
from training.bookkeeping.runs import headline_metric, read_json, read_metrics  # noqa: E402

DEFAULT_SIZES = "4,6,9,12"
DEFAULT_CONFIG = "cfg_lsa_400s"
# Columns of the table and lines of the plot, in this order, where the runs logged them.
METRICS = (
    ("eval/lsa/optimal_cost_rate", "optimal cost rate"),
    ("eval/lsa/exact_accuracy", "exact"),
    ("eval/lsa/valid_permutation_rate", "valid permutation"),
    ("eval/lsa/projected_optimal_cost_rate", "projected optimal"),
)


def parse_sizes(text: str) -> list[int]:
    try:
        sizes = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise InputError(f"--sizes {text}: expected comma-separated integers, e.g. {DEFAULT_SIZES}") from None
    if not sizes:
        raise InputError(f"--sizes {text!r}: no size given")
    if len(set(sizes)) != len(sizes):
        raise InputError(f"--sizes {text}: a size appears twice")
    return sizes


def parse_gpus(text: Optional[str]) -> list[str]:
    if text is None:
        return []
    parts = [part.strip() for part in text.split(",")]
    if not parts or not all(re.fullmatch(r"[0-9]{1,3}", part) for part in parts):
        raise InputError(f"--gpus {text}: expected GPU indices, e.g. 0,1,2,3")
    gpus = [str(int(part)) for part in parts]
    if len(set(gpus)) != len(gpus):
        raise InputError(f"--gpus {text}: a GPU appears twice")
    return gpus


def check_gpus(gpus: list[str], device: str) -> None:
    """Indices this machine has; on a CPU config `--gpus` only sets how many sizes run at once."""
    if not gpus or device == "cpu":
        return
    import torch

    count = torch.cuda.device_count() if torch.cuda.is_available() else 0
    missing = [g for g in gpus if int(g) >= count]
    if missing:
        raise InputError(f"--gpus {','.join(gpus)}: this machine has {count} CUDA device(s), so GPU {missing[0]} "
                         "does not exist")


# Overrides this script sets for every size; the user sets them through its options instead.
OWN_KEYS = {"data.build_args.n": "--sizes", "logging.run_name": "--prefix", "logging.runs_dir": "--runs-dir"}


def check_overrides(overrides: list[str]) -> None:
    for override in overrides:
        key = override.lstrip("+~").split("=", 1)[0].strip()
        if key in OWN_KEYS or key in ("data.build_args", "logging"):
            raise InputError(f"{override}: the script sets {key} for each size; use {OWN_KEYS.get(key, 'its options')}")


def quoted(path: str) -> str:
    """A path as a Hydra override value: quoted (commas, spaces, any letters), no interpolation."""
    if "'" in path or "\\" in path:
        raise InputError(f"{path}: a path with a quote or backslash cannot be passed to pretrain.py; rename it")
    return "'" + path.replace("${", "\\${") + "'"


def data_path_for(path: str, base_n: int, n: int) -> str:
    """The config's data.path with its size replaced: data/lsa-9x9-10k-aug10 -> data/lsa-4x4-10k-aug10
    (absolute, normalised). A name that names no size gets `-n<n>`; one that names another size
    than the config's n is refused (it would put one size's data under another's name)."""
    path = os.path.abspath(path)
    parent, name = os.path.split(path)
    named = {int(a) for a, b in re.findall(r"(?<!\d)(\d+)x(\d+)(?!\d)", name) if a == b}
    if named and named != {base_n}:
        raise InputError(f"data.path={path}: its name says {'/'.join(f'{k}x{k}' for k in sorted(named))} but "
                         f"data.build_args.n={base_n}; give a data.path that names the config's size, or none")
    if n == base_n:
        return path
    if named:
        return os.path.join(parent, re.sub(rf"(?<!\d){base_n}x{base_n}(?!\d)", f"{n}x{n}", name))
    return os.path.join(parent, f"{name}-n{n}")


def check_dataset_size(path: Path, n: int) -> None:
    """An existing dataset at a size's path must be that size's (the builder records n)."""
    meta_file = path / "train" / "dataset.json"
    if not meta_file.is_file():
        return
    from training.bookkeeping.runs import read_json

    recorded = read_json(meta_file)
    if recorded.get("task") != "lsa" or recorded.get("n") != n:
        raise InputError(f"{path} holds a dataset with task={recorded.get('task')!r}, n={recorded.get('n')!r}, not "
                         f"LSA n={n}; move it, or give another data.path")


def base_config(config_name: str, overrides: list[str]) -> Any:
    """The recipe as given, checked once: an LSA config whose builder arguments are valid."""
    from dataset import builder_config
    from training.config import validate_config
    from training.hydra_guard import compose_config

    base = validate_config(compose_config(config_name, overrides))
    if base.data.builder != "lsa":
        raise InputError(f"--config-name {config_name}: data.builder is {base.data.builder!r}; the scaling "
                         "sweep changes the LSA builder's n, so it needs an LSA config (e.g. cfg_lsa_400s)")
    builder_config("lsa", base.data.build_args, Path(base.data.path))  # the arguments, before any size
    return base


class Plan:
    """What one size runs: its overrides, dataset and run directory, checked before anything runs."""

    def __init__(self, config_name: str, overrides: list[str], base: Any, n: int, prefix: str, runs_dir: Path):
        from dataset import builder_config
        from training.config import validate_config
        from training.hydra_guard import compose_config
        from training.engine.setup import build_differences

        self.n = n
        self.name = f"{prefix}-n{n}"
        runs_dir = Path(os.path.abspath(runs_dir))
        data_path = data_path_for(base.data.path, int(base.data.build_args.get("n", 9)), n)
        self.overrides = [*overrides, f"data.build_args.n={n}", f"data.path={quoted(data_path)}",
                          f"logging.runs_dir={quoted(str(runs_dir))}", f"logging.run_name={self.name}"]
        try:
            self.cfg = validate_config(compose_config(config_name, self.overrides))
        except InputError as exc:
            raise InputError(f"n={n}: {exc}") from None
        try:
            builder_config("lsa", self.cfg.data.build_args, Path(self.cfg.data.path))
        except DatasetError as exc:
            raise InputError(f"--sizes: n={n} is not a valid LSA size ({exc})") from None
        check_dataset_size(Path(data_path), n)
        differences = build_differences(self.cfg)
        if differences:
            raise InputError(f"{data_path} holds the n={n} dataset built with {', '.join(differences)}; move it, or "
                             "give another data.path")
        self.run_dir = runs_dir / self.cfg.logging.project / self.name
        self.command = [sys.executable, str(REPO / "pretrain.py"), "--config-name", config_name, *self.overrides]


def build_datasets(plans: list[Plan]) -> None:
    """One at a time, before any run starts (runs that find their data never build)."""
    from training.engine.setup import prepare_data

    for plan in plans:
        prepare_data(plan.cfg, progress=plan.cfg.logging.progress)


def run_all(plans: list[Plan], gpus: list[str], out: Path) -> dict[int, int]:
    """Start the runs (one per GPU at a time when `gpus` is given, else one after another);
    returns each size's exit code."""
    waiting, running, codes = list(plans), {}, {}
    slots = gpus or [None]
    visible = [v.strip() for v in os.environ.get("CUDA_VISIBLE_DEVICES", "").split(",") if v.strip()]
    try:
        while waiting or running:
            free = [slot for slot in slots if slot not in running.values()]
            while waiting and free:
                plan, slot = waiting.pop(0), free.pop(0)
                env = dict(os.environ)
                if slot is not None:  # an index among the GPUs this process sees
                    env["CUDA_VISIBLE_DEVICES"] = visible[int(slot)] if visible else slot
                log = open(out / f"n{plan.n}.log", "w")
                print(f"n={plan.n}: {shlex.join(plan.command)}" + (f"  (GPU {slot})" if slot else ""), flush=True)
                # Its own session: a Ctrl-C at the terminal reaches this script alone, which passes
                # one SIGTERM on (a run that got both would take the second as "exit at once").
                proc = subprocess.Popen(plan.command, env=env, stdout=log, stderr=subprocess.STDOUT,
                                        start_new_session=True)
                log.close()
                running[proc] = slot
                proc.plan = plan  # type: ignore[attr-defined]
            finished = wait_any(list(running))
            for proc in finished:
                codes[proc.plan.n] = proc.returncode  # type: ignore[attr-defined]
                print(f"n={proc.plan.n}: exit {proc.returncode} (log {out / f'n{proc.plan.n}.log'})", flush=True)
                del running[proc]
    except BaseException:  # a signal, or anything else: no run is left training unwatched
        for proc in running:  # each run writes a checkpoint and stops (pretrain.py's first signal)
            proc.send_signal(signal.SIGTERM)
        for proc in running:
            proc.wait()
        raise
    return codes


def wait_any(procs: list[subprocess.Popen]) -> list[subprocess.Popen]:
    """Block until at least one of `procs` has ended; returns those that have."""
    while True:
        done = [p for p in procs if p.poll() is not None]
        if done:
            return done
        ended = os.waitid(os.P_ALL, 0, os.WEXITED | os.WNOWAIT)  # blocks; leaves the child for poll() to reap
        if ended is not None and ended.si_pid not in {p.pid for p in procs}:
            os.waitpid(ended.si_pid, 0)  # a child that is not one of the runs: reap it, or this would spin


def last_line(log: Path) -> str:
    lines = [line for line in log.read_text(errors="replace").splitlines() if line.strip()]
    return lines[-1][:300] if lines else "no output"


def number(value: Any, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise InputError(f"{where}: expected a finite number, got {value!r}")
    return float(value)


def collect(plans: list[Plan]) -> list[dict[str, Any]]:
    """One row per size: the run's last evaluation (its final result), read from its files."""
    rows = []
    for plan in plans:
        if not (plan.run_dir / "config.json").is_file():
            raise InputError(f"no run {plan.name} in {plan.run_dir.parent} (run names are <--prefix>-n<n>; check "
                             "--prefix, --runs-dir and the config's logging.project)")
        config = read_json(plan.run_dir / "config.json")
        for part in ("data", "train"):
            if not isinstance(config.get(part), dict):
                raise InputError(f"{plan.run_dir}/config.json: {part} is not a mapping")
        build_args = config["data"].get("build_args")
        if not isinstance(build_args, dict) or build_args.get("n") != plan.n:
            raise InputError(f"{plan.run_dir}/config.json: data.build_args.n is not {plan.n}; this is not the n={plan.n} "
                             "run of this sweep")
        evals = [r for r in read_metrics(plan.run_dir) if "eval/examples" in r and "step" in r]
        if not evals:
            raise InputError(f"{plan.run_dir}/metrics.jsonl: no evaluation yet (did the n={plan.n} run finish? its "
                             "log is n<n>.log in --out)")
        last, where = evals[-1], f"{plan.run_dir}/metrics.jsonl, step {evals[-1]['step']}"
        rows.append({
            "n": plan.n,
            "run": str(plan.run_dir),
            "step": last["step"],  # the step of that evaluation
            "train_seconds": number(last["train/seconds"], f"{where}: train/seconds") if "train/seconds" in last else None,
            "test_examples": number(last["eval/examples"], f"{where}: eval/examples"),
            **{key: number(last[key], f"{where}: {key}") for key, _ in METRICS if key in last},
            "train": {k: config["train"].get(k) for k in ("max_train_seconds", "max_steps")},
        })
    return rows


def markdown(rows: list[dict[str, Any]], command: str) -> str:
    keys = [(k, label) for k, label in METRICS if any(k in r for r in rows)]
    lines = ["| n | steps | train seconds | " + " | ".join(label for _, label in keys) + " |",
             "|---|---|---|" + "---|" * len(keys)]
    for r in rows:
        seconds = f"{r['train_seconds']:.0f}" if isinstance(r.get("train_seconds"), (int, float)) else "?"
        cells = [f"{100 * r[k]:.1f}%" if k in r else "" for k, _ in keys]
        lines.append(f"| {r['n']} | {r['step']:,} | {seconds} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + f"\n\nCommand: `{command}`\n"


def plot(rows: list[dict[str, Any]], out: Path, title: str) -> None:
    figure(rows, title).savefig(out, format="png")


def figure(rows: list[dict[str, Any]], title: str):
    """Accuracy against n, one line per metric the runs logged."""
    from evaluators.render import new_figure

    fig = new_figure(6, 4)
    ax = fig.add_subplot()
    sizes = [r["n"] for r in rows]
    # Series that coincide (0% everywhere, say) stay visible: each its own marker and line style,
    # shifted sideways a little.
    styles = (("o", "-"), ("s", "--"), ("^", "-."), ("D", ":"))
    spread = 0.012 * (max(sizes) - min(sizes) + 2)
    for i, (key, label) in enumerate(METRICS):
        points = [(r["n"] + (i - (len(METRICS) - 1) / 2) * spread, 100 * r[key]) for r in rows if key in r]
        if points:
            marker, line = styles[i % len(styles)]
            ax.plot(*zip(*points), marker=marker, linestyle=line, markerfacecolor="none" if i % 2 else None,
                    label=label)
    for r in rows:  # how far each size got in the budget
        ax.annotate(f"{r['step']:,} steps", (r["n"], 100 * r.get(METRICS[0][0], 0)), textcoords="offset points",
                    xytext=(4, 6), fontsize=7, color="dimgray")
    ax.set_xticks(sizes)
    ax.set_xlabel("n (n x n cost matrix)")
    ax.set_ylabel("% of test instances")
    ax.set_ylim(-2, 110)
    ax.set_xlim(min(sizes) - 0.7, max(sizes) + 0.25 * (max(sizes) - min(sizes) + 2))
    ax.set_title(title, fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return fig


REPORT_FILES = ("scaling.json", "scaling.md", "scaling.png")


def check_out(out: Path, sizes: list[int], report_only: bool) -> None:
    """--out: a folder (made if missing). Training refuses one that holds an earlier sweep's report
    or logs (they exist nowhere else); --report-only rewrites the report files there."""
    if str(out) in ("", "."):
        raise InputError(f"--out {str(out)!r}: give a folder of its own for the report")
    if out.exists() and not out.is_dir():
        raise InputError(f"--out {out}: exists and is not a folder")
    for name in REPORT_FILES:
        if (out / name).exists() and not (out / name).is_file():
            raise InputError(f"--out {out}: {name} there is not a file")
    if not report_only:
        ours = [name for name in (*REPORT_FILES, *(f"n{n}.log" for n in sizes)) if (out / name).exists()]
        if ours:
            raise InputError(f"--out {out} already holds {ours[0]} from another sweep; choose another --out "
                             "(--report-only rewrites a report from existing runs)")


def budget_of(rows: list[dict[str, Any]]) -> str:
    budgets = {(r["train"]["max_train_seconds"], r["train"]["max_steps"]) for r in rows}
    if len(budgets) != 1:
        return "budgets differ between the runs"
    seconds, steps = budgets.pop()
    parts = [f"{seconds:g} s" if isinstance(seconds, (int, float)) else "", f"<= {steps:,} steps" if steps else ""]
    return ", ".join(part for part in parts if part) or "the config's budget"


def write_report(out: Path, report: dict[str, Any], table: str, title: str) -> None:
    """Each file is written beside its target first and moved into place only when all three
    are written, so a failure while writing leaves the earlier report as it was."""
    out.mkdir(parents=True, exist_ok=True)
    tmp = {name: out / f".{name}.tmp" for name in REPORT_FILES}
    try:
        tmp["scaling.json"].write_text(json.dumps(report, indent=1, allow_nan=False))
        tmp["scaling.md"].write_text(table)
        plot(report["rows"], tmp["scaling.png"], title)
        for name, path in tmp.items():
            os.replace(path, out / name)
    finally:
        for path in tmp.values():
            path.unlink(missing_ok=True)


def report_again(out: Path, runs_dir: Optional[Path]) -> None:
    """--report-only with nothing else: the report in `out` names its config, its runs and the
    command that trained them; read the runs again (under `runs_dir` when given: the runs moved)
    and rewrite the table and plot, the command kept as it was."""
    record_file = out / "scaling.json"
    if not record_file.is_file():
        raise InputError(f"--report-only: {record_file} is missing; give the sweep's --config-name and --sizes "
                         "(and its --prefix, --runs-dir and overrides)")
    record = read_json(record_file)
    rows = record.get("rows") if isinstance(record, dict) else None
    if (not isinstance(rows, list) or not rows or not isinstance(record.get("command"), str)
            or not isinstance(record.get("config_name"), str)
            or not all(isinstance(r, dict) and type(r.get("n")) is int and isinstance(r.get("run"), str) and r["run"]
                       for r in rows)):
        raise InputError(f"{record_file}: not a report of this script (needs command, config_name and rows with n "
                         "and run); give the sweep's --config-name and --sizes")
    plans = []
    for row in rows:
        run = Path(row["run"])
        if runs_dir is not None:
            run = Path(os.path.abspath(runs_dir)) / run.parent.name / run.name
        plans.append(SimpleNamespace(n=row["n"], name=run.name, run_dir=run))
    found = collect(plans)
    config = read_json(plans[0].run_dir / "config.json")
    write_report(out, {**record, "headline": headline_metric(config), "rows": found}, markdown(found, record["command"]),
                 f"{record['config_name']}: accuracy against n, equal budget ({budget_of(found)})")
    print(markdown(found, record["command"]))
    print(f"wrote {', '.join(str(out / name) for name in REPORT_FILES)}")


def main(argv: Optional[list[str]] = None) -> None:
    parser = plain_parser("Train one LSA recipe at several sizes n (equal budget) and tabulate and plot accuracy "
                          "against n.")
    parser.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="pretrain.py overrides for every size")
    parser.add_argument("--out", required=True, type=Path, help="folder for scaling.json/.md/.png and the run logs")
    parser.add_argument("--config-name", help=f"the recipe (an LSA config; default {DEFAULT_CONFIG}; --report-only: the "
                        "report's own)")
    parser.add_argument("--sizes", help=f"comma-separated n (default {DEFAULT_SIZES}; --report-only: the report's own)")
    parser.add_argument("--runs-dir", type=Path, help="where the runs go (default: runs; --report-only: where the report "
                        "found them)")
    parser.add_argument("--prefix", default="scaling", help="run names are <prefix>-n<n> (default: scaling)")
    parser.add_argument("--gpus", help="comma-separated GPU indices: run sizes side by side, one per GPU")
    parser.add_argument("--report-only", action="store_true", help="train nothing: table and plot from existing runs")
    args = parser.parse_intermixed_args(argv)  # overrides may come before and after the options
    if args.report_only and args.config_name is None and args.sizes is None and not args.overrides:
        report_again(args.out, args.runs_dir)  # the sweep as its report recorded it
        return
    if args.report_only and (args.config_name is None or args.sizes is None):  # no default sweep to guess
        raise InputError("--report-only: give both --config-name and --sizes of the sweep (and its --prefix, --runs-dir "
                         "and overrides), or none of them to read the report's own")
    args.config_name = args.config_name or DEFAULT_CONFIG
    args.runs_dir = args.runs_dir or Path("runs")
    sizes, gpus = parse_sizes(args.sizes or DEFAULT_SIZES), parse_gpus(args.gpus)
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]*", args.prefix):
        raise InputError(f"--prefix {args.prefix!r}: letters, digits, '.', '_' and '-' only")
    check_overrides(args.overrides)
    check_out(args.out, sizes, args.report_only)
    base = base_config(args.config_name, args.overrides)
    plans = [Plan(args.config_name, args.overrides, base, n, args.prefix, args.runs_dir) for n in sizes]
    if not args.report_only:
        check_gpus(gpus, plans[0].cfg.train.device)
        taken = [str(p.run_dir) for p in plans if p.run_dir.exists()]
        if taken:
            raise InputError(f"run {taken[0]} exists already: choose another --prefix, or --report-only to read it")
        args.out.mkdir(parents=True, exist_ok=True)
        build_datasets(plans)
        codes = run_all(plans, gpus, args.out)
        failed = sorted(n for n, code in codes.items() if code != 0)
        if failed:
            raise InputError("; ".join(f"n={n} failed ({last_line(args.out / f'n{n}.log')}; log {args.out}/n{n}.log)"
                                       for n in failed))
    rows = collect(plans)
    # What made this report: the training command, or (--report-only) the command that read the runs.
    command = shlex.join(["python", "scripts/lsa_scaling.py", *(sys.argv[1:] if argv is None else argv)])
    config = read_json(plans[0].run_dir / "config.json")
    table = markdown(rows, command)
    write_report(args.out, {"command": command, "config_name": args.config_name, "headline": headline_metric(config),
                            "rows": rows}, table,
                 f"{args.config_name}: accuracy against n, equal budget ({budget_of(rows)})")
    print(table)
    print(f"wrote {', '.join(str(args.out / name) for name in REPORT_FILES)}")


if __name__ == "__main__":
    run_cli(main)
