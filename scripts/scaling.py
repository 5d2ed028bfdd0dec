"""How a recipe scales with its task's instance size: the same config at several sizes, equal
budget, one table and one PNG plot of accuracy against size.

    python scripts/scaling.py --out scaling/                             # cfg_lsa_400s at n = 4, 6, 9, 12
    python scripts/scaling.py --out scaling/ --gpus 0,1,2,3              # the four runs side by side, one per GPU
    python scripts/scaling.py --out s/ --config-name cfg_lsa_cpu --sizes 3,4,5 train.max_train_seconds=120
    python scripts/scaling.py --out mul/ --config-name cfg_arith_mul --sizes 3,4,5,6   # digits of multiplication
    python scripts/scaling.py --out scaling/ --report-only               # redo table and plot from the runs
                                                                         # (the config, sizes and runs of its scaling.json)

The size is the builder argument the config's task names in its registry entry
(evaluators/tasks.py: `Task.size_arg`; LSA's n, a maze's size, arithmetic's max_digits); a task
without one (Sudoku) is refused. Every size trains `--config-name` with the given overrides,
`data.build_args.<size_arg>=<size>` and its own dataset: the config's data.path with its size
replaced (`Task.size_data_path`: `lsa-9x9-...` -> `lsa-4x4-...`, `arith-mul-b10-d1-4` ->
`...-d1-5`, or `-<size_arg><size>` appended), built first, one at a time, so no two runs build at
once; an existing dataset there must be the task's at that size. The budget is the config's
(`train.max_train_seconds`, `train.max_steps`), the same for every size. Runs are named
`<prefix>-<size_arg><size>` under `--runs-dir`; the script sets the size, the run name and the runs
folder itself (use --sizes, --prefix, --runs-dir). Training refuses run names that exist and an
`--out` that holds an earlier sweep's report or logs; `--report-only` rewrites the report there
from the runs. Writes `scaling.json`, `scaling.md`, `scaling.png` (an earlier report stays whole
if writing fails) and one log per run (`<size_arg><size>.log`) into `--out`; the columns are the
task's headline metric, then its `Task.scaling_metrics`. The runs start in the current folder,
like pretrain.py, with absolute paths. A SIGTERM or Ctrl-C is passed on to the runs once, which
write a checkpoint and stop; the script then exits 128 + the signal. On a CPU config, `--gpus`
only sets how many sizes run at once. Reports written before the script was generic (as
scripts/lsa_scaling.py) record no size_arg: their rows' size is n.
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

from core.cli import path_arg, plain_parser, run_cli  # noqa: E402
from core.errors import DatasetError, InputError  # noqa: E402
from core.paths import refuse_broken_link  # noqa: E402
from training.bookkeeping.runs import read_json, read_metrics  # noqa: E402

DEFAULT_SIZES = "4,6,9,12"
DEFAULT_CONFIG = "cfg_lsa_400s"
LEGACY_SIZE_ARG = "n"  # the size of a report that records none (written as scripts/lsa_scaling.py)


def parse_sizes(text: str) -> list[int]:
    parts = [part.strip() for part in text.split(",")]
    if not any(parts):
        raise InputError(f"--sizes {text!r}: no size given")
    # Every item an integer: an empty one ('4,,5') or '4_0' is a typo, not a size to drop or read as 40.
    if not all(re.fullmatch(r"-?[0-9]{1,9}", part) for part in parts):
        raise InputError(f"--sizes {text}: expected comma-separated integers, e.g. {DEFAULT_SIZES}")
    sizes = [int(part) for part in parts]
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


# Overrides this script sets for every size; the user sets them through its options instead
# (and data.build_args.<the task's size_arg>: --sizes).
OWN_KEYS = {"logging.run_name": "--prefix", "logging.runs_dir": "--runs-dir"}


def check_overrides(overrides: list[str], size_arg: Optional[str] = None) -> None:
    own = {**OWN_KEYS, **({f"data.build_args.{size_arg}": "--sizes"} if size_arg else {})}
    for override in overrides:
        key = override.lstrip("+~").split("=", 1)[0].strip()
        if key in own or key in ("data.build_args", "logging"):
            raise InputError(f"{override}: the script sets {key} for each size; use {own.get(key, 'its options')}")


def quoted(path: str) -> str:
    """A path as a Hydra override value: quoted (commas, spaces, any letters), no interpolation."""
    if "'" in path or "\\" in path:
        raise InputError(f"{path}: a path with a quote or backslash cannot be passed to pretrain.py; rename it")
    return "'" + path.replace("${", "\\${") + "'"


def check_dataset_size(path: Path, task: Any, size: int) -> None:
    """An existing dataset at a size's path must be the task's at that size (the builder records
    its arguments; datasets older than that record the size as a fact of the same name)."""
    meta_file = path / "train" / "dataset.json"
    if not meta_file.is_file():
        return
    recorded = read_json(meta_file)
    args = recorded.get("build_args")
    said = args.get(task.size_arg) if isinstance(args, dict) and task.size_arg in args else recorded.get(task.size_arg)
    if recorded.get("task") != task.name or said != size:
        raise InputError(f"{path} holds a dataset with task={recorded.get('task')!r}, {task.size_arg}={said!r}, not "
                         f"{task.name} {task.size_arg}={size}; move it, or give another data.path")


def base_config(config_name: str, overrides: list[str]) -> tuple[Any, Any, int]:
    """The recipe as given, checked once: a config of a task with an instance size
    (`Task.size_arg`) whose builder arguments are valid. Returns the config, its task and its size."""
    from dataset import builder_config
    from evaluators.tasks import all_tasks, get_task
    from training.config import validate_config
    from training.hydra_guard import compose_config

    base = validate_config(compose_config(config_name, overrides))
    task = get_task(base.data.builder, where=f"--config-name {config_name}: data.builder")
    if task.size_arg is None:
        sizable = ", ".join(t.name for t in all_tasks() if t.size_arg is not None)
        raise InputError(f"--config-name {config_name}: data.builder is {base.data.builder!r}, a task with no instance "
                         f"size to sweep (Task.size_arg); give a config of one that has: {sizable}")
    built = builder_config(task.name, base.data.build_args, Path(base.data.path))  # the arguments, before any size
    size = getattr(built, task.size_arg)
    if isinstance(size, bool) or not isinstance(size, int):  # a registry entry naming a non-size argument
        raise RuntimeError(f"evaluators.tasks: {task.name}'s size_arg {task.size_arg!r} is not an integer argument")
    return base, task, size


class Plan:
    """What one size runs: its overrides, dataset and run directory, checked before anything runs."""

    def __init__(self, config_name: str, overrides: list[str], base: Any, task: Any, base_size: int, size: int,
                 prefix: str, runs_dir: Path):
        from dataset import builder_config
        from training.config import validate_config
        from training.hydra_guard import compose_config
        from training.engine.setup import build_differences

        self.size, arg = size, task.size_arg
        self.label = f"{arg}={size}"  # in messages
        self.log = f"{arg}{size}.log"
        self.name = f"{prefix}-{arg}{size}"
        runs_dir = Path(os.path.abspath(runs_dir))
        data_path = task.size_data_path(base.data.path, base_size, size)
        self.overrides = [*overrides, f"data.build_args.{arg}={size}", f"data.path={quoted(data_path)}",
                          f"logging.runs_dir={quoted(str(runs_dir))}", f"logging.run_name={self.name}"]
        try:
            self.cfg = validate_config(compose_config(config_name, self.overrides))
        except InputError as exc:
            raise InputError(f"{self.label}: {exc}") from None
        try:
            builder_config(task.name, self.cfg.data.build_args, Path(self.cfg.data.path))
        except DatasetError as exc:
            raise InputError(f"--sizes: {self.label} is not a valid {task.name} size ({exc})") from None
        check_dataset_size(Path(data_path), task, size)
        differences = build_differences(self.cfg)
        if differences:
            raise InputError(f"{data_path} holds the {self.label} dataset built with {', '.join(differences)}; "
                             "move it, or give another data.path")
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
                log = open(out / plan.log, "w")
                print(f"{plan.label}: {shlex.join(plan.command)}" + (f"  (GPU {slot})" if slot else ""), flush=True)
                # Its own session: a Ctrl-C at the terminal reaches this script alone, which passes
                # one SIGTERM on (a run that got both would take the second as "exit at once").
                proc = subprocess.Popen(plan.command, env=env, stdout=log, stderr=subprocess.STDOUT,
                                        start_new_session=True)
                log.close()
                running[proc] = slot
                proc.plan = plan  # type: ignore[attr-defined]
            finished = wait_any(list(running))
            for proc in finished:
                codes[proc.plan.size] = proc.returncode  # type: ignore[attr-defined]
                print(f"{proc.plan.label}: exit {proc.returncode} (log {out / proc.plan.log})", flush=True)
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


def collect(plans: list[Any], size_arg: str) -> tuple[list[dict[str, Any]], Any]:
    """One row per size (keyed by `size_arg`): the run's last evaluation (its final result), read
    from its files; and the runs' task (from the first run's data.builder)."""
    from evaluators.tasks import get_task

    rows, task = [], None
    for plan in plans:
        label = f"{size_arg}={plan.size}"
        if not (plan.run_dir / "config.json").is_file():
            raise InputError(f"no run {plan.name} in {plan.run_dir.parent} (run names are <--prefix>-{size_arg}<size>; "
                             "check --prefix, --runs-dir and the config's logging.project)")
        config = read_json(plan.run_dir / "config.json")
        for part in ("data", "train"):
            if not isinstance(config.get(part), dict):
                raise InputError(f"{plan.run_dir}/config.json: {part} is not a mapping")
        run_task = get_task(config["data"].get("builder"), where=f"{plan.run_dir}/config.json: data.builder")
        if run_task.size_arg != size_arg or (task is not None and run_task is not task):
            raise InputError(f"{plan.run_dir}/config.json: data.builder is {run_task.name!r}, not a run of this sweep "
                             f"(its size is {size_arg}" + (f", its task {task.name})" if task else ")"))
        task = run_task
        build_args = config["data"].get("build_args")
        if not isinstance(build_args, dict) or build_args.get(size_arg) != plan.size:
            raise InputError(f"{plan.run_dir}/config.json: data.build_args.{size_arg} is not {plan.size}; this is not "
                             f"the {label} run of this sweep")
        evals = [r for r in read_metrics(plan.run_dir) if "eval/examples" in r and "step" in r]
        if not evals:
            raise InputError(f"{plan.run_dir}/metrics.jsonl: no evaluation yet (did the {label} run finish? its "
                             f"log is {size_arg}<size>.log in --out)")
        last, where = evals[-1], f"{plan.run_dir}/metrics.jsonl, step {evals[-1]['step']}"
        rows.append({
            size_arg: plan.size,
            "run": str(plan.run_dir),
            "step": last["step"],  # the step of that evaluation
            "train_seconds": number(last["train/seconds"], f"{where}: train/seconds") if "train/seconds" in last else None,
            "test_examples": number(last["eval/examples"], f"{where}: eval/examples"),
            **{key: number(last[key], f"{where}: {key}") for key, _ in task.scaling_columns() if key in last},
            "train": {k: config["train"].get(k) for k in ("max_train_seconds", "max_steps")},
        })
    return rows, task


def markdown(rows: list[dict[str, Any]], command: str, size_arg: str, columns: list[tuple[str, str]]) -> str:
    keys = [(k, label) for k, label in columns if any(k in r for r in rows)]
    lines = [f"| {size_arg} | steps | train seconds | " + " | ".join(label for _, label in keys) + " |",
             "|---|---|---|" + "---|" * len(keys)]
    for r in rows:
        seconds = f"{r['train_seconds']:.0f}" if isinstance(r.get("train_seconds"), (int, float)) else "?"
        cells = [f"{100 * r[k]:.1f}%" if k in r else "" for k, _ in keys]
        lines.append(f"| {r[size_arg]} | {r['step']:,} | {seconds} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + f"\n\nCommand: `{command}`\n"


def plot(rows: list[dict[str, Any]], out: Path, title: str, size_arg: str, columns: list[tuple[str, str]],
         xlabel: str) -> None:
    figure(rows, title, size_arg, columns, xlabel).savefig(out, format="png")


def figure(rows: list[dict[str, Any]], title: str, size_arg: str, columns: list[tuple[str, str]], xlabel: str):
    """Accuracy against size, one line per metric (`columns`: key, label) the runs logged."""
    from evaluators.render import new_figure

    fig = new_figure(6, 4)
    ax = fig.add_subplot()
    sizes = [r[size_arg] for r in rows]
    # Series that coincide (0% everywhere, say) stay visible: each its own marker and line style,
    # shifted sideways a little.
    styles = (("o", "-"), ("s", "--"), ("^", "-."), ("D", ":"))
    spread = 0.012 * (max(sizes) - min(sizes) + 2)
    for i, (key, label) in enumerate(columns):
        points = [(r[size_arg] + (i - (len(columns) - 1) / 2) * spread, 100 * r[key]) for r in rows if key in r]
        if points:
            marker, line = styles[i % len(styles)]
            ax.plot(*zip(*points), marker=marker, linestyle=line, markerfacecolor="none" if i % 2 else None,
                    label=label)
    for r in rows:  # how far each size got in the budget
        ax.annotate(f"{r['step']:,} steps", (r[size_arg], 100 * r.get(columns[0][0], 0)), textcoords="offset points",
                    xytext=(4, 6), fontsize=7, color="dimgray")
    ax.set_xticks(sizes)
    ax.set_xlabel(xlabel)
    ax.set_ylabel("% of test instances")
    ax.set_ylim(-2, 110)
    ax.set_xlim(min(sizes) - 0.7, max(sizes) + 0.25 * (max(sizes) - min(sizes) + 2))
    ax.set_title(title, fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return fig


REPORT_FILES = ("scaling.json", "scaling.md", "scaling.png")


def check_out(out: Path, logs: list[str], report_only: bool) -> None:
    """--out: a folder (made if missing). Training refuses one that holds an earlier sweep's report
    or logs (they exist nowhere else); --report-only rewrites the report files there."""
    if str(out) in ("", "."):
        raise InputError(f"--out {str(out)!r}: give a folder of its own for the report")
    refuse_broken_link(out, "--out")
    if out.exists() and not out.is_dir():
        raise InputError(f"--out {out}: exists and is not a folder")
    from dataset.replace_guard import is_run_dir

    absolute = Path(os.path.abspath(out))
    if any(is_run_dir(p) for p in (absolute, *absolute.parents)):  # logs and report are not a run's files
        raise InputError(f"--out {out}: is in a run directory; give a folder of its own for the report")
    for name in REPORT_FILES:
        if (out / name).exists() and not (out / name).is_file():
            raise InputError(f"--out {out}: {name} there is not a file")
    if not report_only:
        ours = [name for name in (*REPORT_FILES, *logs) if (out / name).exists()]
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


def write_report(out: Path, report: dict[str, Any], task: Any) -> None:
    """scaling.json (`report`), the table and the plot. Each file is written beside its target
    first and moved into place only when all three are written, so a failure while writing leaves
    the earlier report as it was."""
    size_arg, rows, columns = report["size_arg"], report["rows"], task.scaling_columns()
    table = markdown(rows, report["command"], size_arg, columns)
    title = f"{report['config_name']}: accuracy against {size_arg}, equal budget ({budget_of(rows)})"
    out.mkdir(parents=True, exist_ok=True)
    tmp = {name: out / f".{name}.tmp" for name in REPORT_FILES}
    try:
        tmp["scaling.json"].write_text(json.dumps(report, indent=1, allow_nan=False))
        tmp["scaling.md"].write_text(table)
        plot(rows, tmp["scaling.png"], title, size_arg, columns, task.size_label or size_arg)
        for name, path in tmp.items():
            os.replace(path, out / name)
    finally:
        for path in tmp.values():
            path.unlink(missing_ok=True)
    print(table)
    print(f"wrote {', '.join(str(out / name) for name in REPORT_FILES)}")


def report_again(out: Path, runs_dir: Optional[Path]) -> None:
    """--report-only with nothing else: the report in `out` names its config, its runs and the
    command that trained them; read the runs again (under `runs_dir` when given: the runs moved)
    and rewrite the table and plot, the command kept as it was. A report without size_arg is one
    written as scripts/lsa_scaling.py: its rows' size is n."""
    record_file = out / "scaling.json"
    if record_file.exists() and not record_file.is_file():
        raise InputError(f"--report-only: {record_file} is not a regular file")
    if not record_file.is_file():
        raise InputError(f"--report-only: {record_file} is missing; give the sweep's --config-name and --sizes "
                         "(and its --prefix, --runs-dir and overrides)")
    record = read_json(record_file)
    rows = record.get("rows") if isinstance(record, dict) else None
    size_arg = record.get("size_arg", LEGACY_SIZE_ARG) if isinstance(record, dict) else None
    if (not isinstance(rows, list) or not rows or not isinstance(record.get("command"), str)
            or not isinstance(record.get("config_name"), str)
            or not isinstance(size_arg, str) or not re.fullmatch(r"[a-z][a-z0-9_]*", size_arg)
            or not all(isinstance(r, dict) and type(r.get(size_arg)) is int and isinstance(r.get("run"), str)
                       and r["run"] for r in rows)):
        raise InputError(f"{record_file}: not a report of this script (needs command, config_name and rows with "
                         "their size and run); give the sweep's --config-name and --sizes")
    plans = []
    for row in rows:
        run = Path(row["run"])
        if runs_dir is not None:
            run = Path(os.path.abspath(runs_dir)) / run.parent.name / run.name
        plans.append(SimpleNamespace(size=row[size_arg], name=run.name, run_dir=run))
    found, task = collect(plans, size_arg)
    write_report(out, {**record, "task": task.name, "size_arg": size_arg, "headline": task.headline_metric,
                       "rows": found}, task)


def main(argv: Optional[list[str]] = None) -> None:
    parser = plain_parser("Train one recipe at several instance sizes of its task (equal budget) and tabulate and "
                          "plot accuracy against size.")
    parser.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="pretrain.py overrides for every size")
    parser.add_argument("--out", required=True, type=path_arg, help="folder for scaling.json/.md/.png and the run logs")
    parser.add_argument("--config-name", help=f"the recipe (a config of a task with a size; default {DEFAULT_CONFIG}; "
                        "--report-only: the report's own)")
    parser.add_argument("--sizes", help=f"comma-separated sizes, values of the task's size argument (default "
                        f"{DEFAULT_SIZES}; --report-only: the report's own)")
    parser.add_argument("--runs-dir", type=path_arg, help="where the runs go (default: runs; --report-only: where the report "
                        "found them)")
    parser.add_argument("--prefix", default="scaling",
                        help="run names are <prefix>-<size_arg><size> (default: scaling)")
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
    sizes, gpus = parse_sizes(DEFAULT_SIZES if args.sizes is None else args.sizes), parse_gpus(args.gpus)
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]*", args.prefix):
        raise InputError(f"--prefix {args.prefix!r}: letters, digits, '.', '_' and '-' only")
    check_overrides(args.overrides)
    base, task, base_size = base_config(args.config_name, args.overrides)
    check_overrides(args.overrides, task.size_arg)
    check_out(args.out, [f"{task.size_arg}{size}.log" for size in sizes], args.report_only)
    plans = [Plan(args.config_name, args.overrides, base, task, base_size, size, args.prefix, args.runs_dir)
             for size in sizes]
    if not args.report_only:
        check_gpus(gpus, plans[0].cfg.train.device)
        taken = [str(p.run_dir) for p in plans if p.run_dir.exists()]
        if taken:
            raise InputError(f"run {taken[0]} exists already: choose another --prefix, or --report-only to read it")
        args.out.mkdir(parents=True, exist_ok=True)
        build_datasets(plans)
        codes = run_all(plans, gpus, args.out)
        failed = [p for p in plans if codes.get(p.size, 0) != 0]
        if failed:
            raise InputError("; ".join(f"{p.label} failed ({last_line(args.out / p.log)}; log {args.out}/{p.log})"
                                       for p in failed))
    rows, _ = collect(plans, task.size_arg)
    # What made this report: the training command, or (--report-only) the command that read the runs.
    command = shlex.join(["python", "scripts/scaling.py", *(sys.argv[1:] if argv is None else argv)])
    write_report(args.out, {"command": command, "config_name": args.config_name, "task": task.name,
                            "size_arg": task.size_arg, "headline": task.headline_metric, "rows": rows}, task)


if __name__ == "__main__":
    run_cli(main)
