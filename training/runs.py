"""Runs on disk: find them, summarise them, look one up by name or wandb id.

A run lives in `<runs_dir>/<project>/<name>/` (config.json, metrics.jsonl, run.json,
checkpoints/, eval/, wandb/). Everything here reads those files only, so listing and
comparing runs never needs the dataset or a GPU, and works while a run is writing.
"""

from __future__ import annotations

import json
import re
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Optional

from dataset.common import InputError

RUN_FILE = "run.json"  # name, project, created, wandb id (written by training/logger.py)
# The metric that says how well a task is solved; compare_runs divides it by the parameters.
HEADLINE_METRICS = {
    "lsa": "eval/lsa/optimal_cost_rate",
    "sudoku": "eval/sudoku/exact_accuracy",
    "arith": "eval/arith/exact_accuracy",
}
FALLBACK_HEADLINE = "eval/exact_accuracy"
# Metrics where lower is better (everything else under eval/ counts as higher-is-better).
LOWER_IS_BETTER = ("loss", "cost_difference")
NOT_A_SCORE = ("eval/steps", "eval/halt_steps", "eval/examples")
WANDB_RUN_DIR = re.compile(r"^(?:offline-)?run-\d{8}_\d{6}-(?P<id>[A-Za-z0-9]+)$")


class RunNotFound(InputError):
    """No run, or more than one, matches a name or id; the message lists what exists."""


def run_dirs(runs_dir: Path | str) -> list[Path]:
    """Every run directory under `runs_dir` (runs/<project>/<name>/ holding config.json)."""
    return sorted(p.parent for p in Path(runs_dir).glob("*/*/config.json"))


def read_json(path: Path) -> dict[str, Any]:
    try:
        value = json.loads(path.read_text())
    except (OSError, ValueError, RecursionError) as exc:
        raise InputError(f"{path}: cannot read JSON ({str(exc)[:200]})") from exc
    if not isinstance(value, dict):
        raise InputError(f"{path}: expected a JSON object, got {type(value).__name__}")
    return value


def read_metrics(run_dir: Path) -> list[dict[str, Any]]:
    """metrics.jsonl as records. A crash can cut the last line short: that one is skipped;
    a broken line anywhere else is an error naming the line."""
    path = Path(run_dir) / "metrics.jsonl"
    if not path.is_file():
        return []
    lines = path.read_text().splitlines()
    records = []
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except (json.JSONDecodeError, RecursionError) as exc:
            if number == len(lines) and isinstance(exc, json.JSONDecodeError):
                break
            raise InputError(f"{path}:{number}: not a JSON line ({str(exc)[:200]})") from exc
        if not isinstance(record, dict) or not isinstance(record.get("step", 0), int) or isinstance(record.get("step"), bool):
            raise InputError(f"{path}:{number}: expected an object with an integer 'step', got {line[:80]!r}")
        records.append(record)
    return records


def wandb_id_of(run_dir: Path) -> Optional[str]:
    """The run's wandb id: from run.json, else from the newest wandb/ run directory name."""
    run_file = Path(run_dir) / RUN_FILE
    if run_file.is_file():
        wandb_id = read_json(run_file).get("wandb_id")
        if wandb_id:
            return str(wandb_id)
    names = sorted(p.name for p in (Path(run_dir) / "wandb").glob("*run-*") if p.is_dir())
    ids = [m.group("id") for m in map(WANDB_RUN_DIR.match, names) if m]
    return ids[-1] if ids else None


def task_of(config: dict[str, Any]) -> str:
    """The run's task: its dataset builder, else its first evaluator, else '?'."""
    builder = (config.get("data") or {}).get("builder")
    if builder:
        return str(builder)
    evaluators = config.get("evaluators") or []
    return str(evaluators[0].get("name")) if evaluators and isinstance(evaluators[0], dict) else "?"


def headline_metric(config: dict[str, Any]) -> str:
    return HEADLINE_METRICS.get(task_of(config), FALLBACK_HEADLINE)


def is_score(key: str) -> bool:
    return key.startswith("eval/") and key not in NOT_A_SCORE


def better(key: str, a: float, b: float) -> bool:
    """Is `a` a better value of metric `key` than `b`?"""
    return a < b if any(word in key for word in LOWER_IS_BETTER) else a > b


def best_metrics(records: list[dict[str, Any]]) -> dict[str, dict[str, float]]:
    """{metric: {"value", "step"}}: each evaluation metric at its best evaluation."""
    best: dict[str, dict[str, float]] = {}
    for record in records:
        for key, value in record.items():
            if not is_score(key) or not isinstance(value, (int, float)):
                continue
            if key not in best or better(key, value, best[key]["value"]):
                best[key] = {"value": value, "step": record.get("step", 0)}
    return best


@dataclass
class RunSummary:
    project: str
    name: str
    path: str
    created: float  # unix time
    task: str
    arch: str
    step: int  # last step logged
    train_seconds: Optional[float]  # training time (evaluation excluded) at the last evaluation
    wall_seconds: Optional[float]  # the metrics' `time` at the last record, summed over resumes
    checkpoint: Optional[str]  # the latest complete checkpoint's directory name
    wandb_id: Optional[str]
    headline: str
    last_eval: dict[str, float] = field(default_factory=dict)
    best: dict[str, dict[str, float]] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def summarize(run_dir: Path | str) -> RunSummary:
    run_dir = Path(run_dir)
    config = read_json(run_dir / "config.json")
    records = read_metrics(run_dir)
    run_file = read_json(run_dir / RUN_FILE) if (run_dir / RUN_FILE).is_file() else {}
    evals = [r for r in records if any(is_score(k) for k in r)]
    seconds = [r["train/seconds"] for r in records if isinstance(r.get("train/seconds"), (int, float))]
    pointer = run_dir / "checkpoints" / "latest"
    arch = config.get("arch") or {}
    return RunSummary(
        project=run_dir.parent.name,
        name=run_dir.name,
        path=str(run_dir),
        created=float(run_file.get("created") or (run_dir / "config.json").stat().st_mtime),
        task=task_of(config),
        arch=str(arch.get("name", "?")) + (f"/{arch['mixer']}" if arch.get("mixer") else ""),
        step=max((int(r.get("step", 0)) for r in records), default=0),
        train_seconds=seconds[-1] if seconds else None,
        wall_seconds=records[-1].get("time") if records else None,
        checkpoint=pointer.read_text().strip() if pointer.is_file() else None,
        wandb_id=wandb_id_of(run_dir),
        headline=headline_metric(config),
        last_eval={k: v for k, v in evals[-1].items() if k.startswith("eval/")} if evals else {},
        best=best_metrics(evals),
    )


def find_run(key: str, runs_dir: Path | str, project: Optional[str] = None) -> Path:
    """A run directory by path, by name, or by wandb id; a unique prefix of a name or id will do.
    With `project`, an exact name in that project wins over the same name elsewhere."""
    if Path(key).is_dir():
        return Path(key)
    runs = run_dirs(runs_dir)
    ids = {run: wandb_id_of(run) for run in runs}

    def pick(matches: list[Path], how: str) -> Optional[Path]:
        if project is not None and len(matches) > 1:
            matches = [m for m in matches if m.parent.name == project] or matches
        if len(matches) > 1:
            listed = ", ".join(str(m) for m in matches[:5])
            raise RunNotFound(f"{key}: {how} matches {len(matches)} runs ({listed}); give more of it or the path")
        return matches[0] if matches else None

    for matches, how in (
        ([r for r in runs if r.name == key], "the name"),
        ([r for r in runs if ids[r] == key], "the wandb id"),
        ([r for r in runs if r.name.startswith(key) or (ids[r] or "").startswith(key)], "the prefix"),
    ):
        found = pick(matches, how)
        if found is not None:
            return found
    raise RunNotFound(f"{key}: no run directory, run name or wandb id under {runs_dir} "
                      f"({len(runs)} runs there; python scripts/list_runs.py --runs-dir {runs_dir} lists them)")


def locate_run(value: str, runs_dir: Path | str, project: Optional[str] = None) -> Path:
    """train.resume=<value>: a run or checkpoint path as given, else a run's name or wandb id."""
    path = Path(value)
    return path if path.exists() else find_run(value, runs_dir, project)


def write_run_file(run_dir: Path, name: str, project: str, wandb_id: Optional[str], wandb_mode: str,
                   parent: Optional[dict] = None) -> None:
    """Record the run's identity; `created` is kept from the first start across resumes, and
    `parent` (the run and checkpoint a fork started from) from the start that set it. The file
    is replaced, never written into (a hard-linked backup keeps its own)."""
    from training.files import replace_file

    path = Path(run_dir) / RUN_FILE
    old = read_json(path) if path.is_file() else {}
    record = {"name": name, "project": project, "created": old.get("created", round(time.time(), 3)),
              "wandb_id": wandb_id or old.get("wandb_id"), "wandb_mode": wandb_mode,
              "starts": old.get("starts", 0) + 1}
    if parent or old.get("parent"):
        record["parent"] = parent or old.get("parent")
    replace_file(path, json.dumps(record, indent=2) + "\n")


def preflight(cfg: Any) -> Path:
    """What `train` would refuse about the run directory and data, checked before anything
    starts (train_lsa.sh calls this through `pretrain.py --check` before it opens a screen
    session): the same planning `train` does. Returns the run directory the run will write."""
    from dataset.common import DatasetError, dataset_exists
    from training.run import check_real_dirs, plan_run

    if not dataset_exists(cfg.data.path) and cfg.data.builder is None:
        raise DatasetError(f"data.path={cfg.data.path}: no dataset there (and data.builder is not set to build one)")
    if cfg.train.resume is False and not cfg.logging.run_name:
        run_dir = Path(cfg.logging.runs_dir) / cfg.logging.project / "<generated name>"
    else:
        run_dir = plan_run(cfg).run_dir
    check_real_dirs(run_dir)  # a symbolic link as the project or run directory
    return run_dir
