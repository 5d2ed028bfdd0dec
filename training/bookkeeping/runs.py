"""Runs on disk: find them, summarise them, look one up by name or wandb id.

A run lives in `<runs_dir>/<project>/<name>/` (config.json, metrics.jsonl, run.json,
checkpoints/, eval/, wandb/). Everything here reads those files only, so listing and
comparing runs never needs the dataset or a GPU, and works while a run is writing.
"""

from __future__ import annotations

import difflib
import json
import math
import os
import re
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional, TypeVar

from core.errors import InputError
from core.reading import MAX_JSON_BYTES, decode_json, open_regular, read_limited

RUN_FILE = "run.json"  # name, project, created, wandb id (written by training/bookkeeping/logger.py)
# The metric that says how well a run's task is solved (its `Task.headline_metric`; this one for
# a task the registry does not hold); compare_runs divides it by the parameters.
FALLBACK_HEADLINE = "eval/exact_accuracy"
# Metrics where lower is better (everything else under eval/ counts as higher-is-better).
LOWER_IS_BETTER = ("loss", "cost_difference")
NOT_A_SCORE = ("eval/steps", "eval/halt_steps", "eval/examples")
WANDB_RUN_DIR = re.compile(r"^(?:offline-)?run-\d{8}_\d{6}-(?P<id>[A-Za-z0-9]+)$")
# What the run tools read at most: a damaged or hostile file is an error, never unbounded memory.
MAX_METRICS_BYTES = 1 << 30  # metrics.jsonl
MAX_METRICS_LINE = 1 << 20
MAX_POINTER_BYTES = 4096
LATEST_DATE = 253402300799.0  # 9999-12-31: what time.localtime can show
T = TypeVar("T")


class RunNotFound(InputError):
    """No run, or more than one, matches a name or id; the message lists what exists."""


def run_dirs(runs_dir: Path | str) -> list[Path]:
    """Every run directory under `runs_dir` (runs/<project>/<name>/ holding config.json)."""
    return sorted(p.parent for p in Path(runs_dir).glob("*/*/config.json"))


def printable(text: Any) -> str:
    """`text` with every control or unprintable character escaped (\\n, \\x1b, \\udcff): a run's name
    or a field read from its files can then never forge or garble a line of the tools' output."""
    return "".join(ch if ch.isprintable() else ascii(ch)[1:-1] for ch in str(text))


def read_json(path: Path) -> dict[str, Any]:
    value = decode_json(read_limited(path, MAX_JSON_BYTES), str(path))
    if not isinstance(value, dict):
        raise InputError(f"{path}: expected a JSON object, got {type(value).__name__}")
    return value


def finite_number(value: Any) -> Optional[float]:
    """`value` as a float when it is a finite real number (not a bool), else None."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    try:
        number = float(value)
    except OverflowError:  # an integer beyond float
        return None
    return number if math.isfinite(number) else None


def read_metrics(run_dir: Path) -> list[dict[str, Any]]:
    """metrics.jsonl as records. A crash can cut the last line short: that one is skipped;
    a broken line anywhere else is an error naming the line. Steps are integers 0..2^63-1."""
    path = Path(run_dir) / "metrics.jsonl"
    if not os.path.lexists(path):
        return []
    lines, total = [], 0
    with open_regular(path) as f:
        while True:
            try:
                line = f.readline(MAX_METRICS_LINE + 1)
            except OSError as exc:
                raise InputError(f"{path}: cannot read ({exc.strerror or exc})") from exc
            if not line:
                break
            if len(line) > MAX_METRICS_LINE:
                raise InputError(f"{path}:{len(lines) + 1}: a line longer than {MAX_METRICS_LINE} bytes")
            total += len(line)
            if total > MAX_METRICS_BYTES:
                raise InputError(f"{path}: larger than {MAX_METRICS_BYTES} bytes")
            lines.append(line)
    records = []
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            record = decode_json(line, f"{path}:{number}", "not a JSON line")
        except InputError:
            if number == len(lines):  # the last line, cut short by a crash
                break
            raise
        step = record.get("step", 0) if isinstance(record, dict) else None
        if not isinstance(step, int) or isinstance(step, bool) or not 0 <= step < 2**63:
            raise InputError(f"{path}:{number}: expected an object with an integer 'step' >= 0, "
                             f"got {printable(line[:80].decode(errors='replace'))!r}")
        records.append(record)
    return records


def read_pointer_name(pointer: Path) -> Optional[str]:
    """The checkpoint directory name a `latest` pointer holds (None without a pointer)."""
    from training.engine.checkpoint import POINTER_TARGET

    if not os.path.lexists(pointer):
        return None
    name = read_limited(pointer, MAX_POINTER_BYTES).decode(errors="replace").strip()
    if not POINTER_TARGET.fullmatch(name):
        raise InputError(f"{pointer}: names {printable(name[:80])!r}, not a checkpoint directory (step_NNNNNNN)")
    return name


def checkpoint_state(checkpoints: Path, name: Optional[str]) -> Optional[str]:
    """What the checkpoint `latest` names is: "ok", "missing" (no such directory: a resume would
    be refused), "incomplete" (not a whole save) or "unreadable" (this user may not look inside:
    another user's run in a shared runs directory); None without a pointer."""
    from training.engine.checkpoint import is_complete

    if name is None:
        return None
    target = checkpoints / name
    if not os.path.lexists(target):
        return "missing"
    try:
        return "ok" if is_complete(target) else "incomplete"
    except OSError:  # a listing never dies of one run's checkpoint (Permission denied: not ours to read)
        return "unreadable"


def read_each(run_dirs: list[Path], read: Callable[[Path], T], what: str) -> list[T]:
    """`read(run_dir)` for each run. A damaged run (an InputError) is one line on stderr naming
    it, and the others go on: the listing never dies of one run. When every run given is
    damaged, that is an InputError (exit 2); with at least one readable run the tool succeeds."""
    results = []
    for run_dir in run_dirs:
        try:
            results.append(read(run_dir))
        except InputError as exc:
            named = str(exc) if str(exc).startswith(str(run_dir)) else f"{run_dir}: {exc}"
            print(f"skipped: {printable(named)}", file=sys.stderr)
    if run_dirs and not results:
        raise InputError(f"{what}: none of the {len(run_dirs)} run(s) could be read (each one is named above)")
    return results


def wandb_id_of(run_dir: Path) -> Optional[str]:
    """The run's wandb id: from run.json, else from the newest wandb/ run directory name."""
    run_file = Path(run_dir) / RUN_FILE
    if os.path.lexists(run_file):
        wandb_id = read_json(run_file).get("wandb_id")
        if wandb_id is not None and not isinstance(wandb_id, str):
            raise InputError(f"{run_file}: field 'wandb_id' is {type(wandb_id).__name__}, expected a string")
        if wandb_id:
            return wandb_id
    names = sorted(p.name for p in (Path(run_dir) / "wandb").glob("*run-*") if p.is_dir())
    ids = [m.group("id") for m in map(WANDB_RUN_DIR.match, names) if m]
    return ids[-1] if ids else None


def config_section(config: dict[str, Any], key: str, path: Path | str = "config.json") -> dict[str, Any]:
    """config[key] as a mapping ({} when absent); anything else is an InputError naming it."""
    value = config.get(key)
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise InputError(f"{path}: field '{key}' is {type(value).__name__}, expected an object")
    return value


def task_of(config: dict[str, Any]) -> str:
    """The run's task: its dataset builder, else its first evaluator, else '?'."""
    builder = config_section(config, "data").get("builder")
    if builder:
        return str(builder)
    evaluators = config.get("evaluators")
    first = evaluators[0] if isinstance(evaluators, list) and evaluators else None
    return str(first.get("name")) if isinstance(first, dict) else "?"


def headline_metric(config: dict[str, Any]) -> str:
    from evaluators.tasks import TASKS, get_task  # a task's module is imported when one of its runs is shown

    task = task_of(config)
    return get_task(task).headline_metric if task in TASKS else FALLBACK_HEADLINE


def is_score(key: str) -> bool:
    return key.startswith("eval/") and key not in NOT_A_SCORE


def better(key: str, a: float, b: float) -> bool:
    """Is `a` a better value of metric `key` than `b`?"""
    return a < b if any(word in key for word in LOWER_IS_BETTER) else a > b


def best_metrics(records: list[dict[str, Any]]) -> dict[str, dict[str, float]]:
    """{metric: {"value", "step"}}: each evaluation metric at its best evaluation."""
    best: dict[str, dict[str, float]] = {}
    for record in records:
        for key, raw in record.items():
            value = finite_number(raw)
            if not is_score(key) or value is None:  # NaN and infinities are no one's best
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
    checkpoint: Optional[str]  # the directory name `checkpoints/latest` holds
    checkpoint_state: Optional[str]  # checkpoint_state(): "ok", "missing", "incomplete", "unreadable"; None without `latest`
    wandb_id: Optional[str]
    headline: str
    last_eval: dict[str, float] = field(default_factory=dict)
    best: dict[str, dict[str, float]] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def created_of(run_dir: Path, run_file: dict[str, Any]) -> float:
    """run.json's `created` (a date time.localtime can show), else config.json's mtime."""
    raw = run_file.get("created")
    if raw is None:
        try:
            return (run_dir / "config.json").stat().st_mtime
        except OSError as exc:
            raise InputError(f"{run_dir / 'config.json'}: cannot read ({exc.strerror or exc})") from exc
    created = finite_number(raw)
    if created is None or not 0 <= created <= LATEST_DATE:
        raise InputError(f"{run_dir / RUN_FILE}: field 'created' is {printable(repr(raw)[:40])}, expected a unix time")
    return created


def summarize(run_dir: Path | str) -> RunSummary:
    """One run's summary; anything damaged in its files is an InputError naming the file."""
    run_dir = Path(run_dir)
    config_path = run_dir / "config.json"
    config = read_json(config_path)
    arch = config_section(config, "arch", config_path)
    config_section(config, "data", config_path)  # checked here, where the error can name the file
    task = task_of(config)
    records = read_metrics(run_dir)
    run_file = read_json(run_dir / RUN_FILE) if os.path.lexists(run_dir / RUN_FILE) else {}
    evals = [r for r in records if any(is_score(k) for k in r)]
    checkpoint = read_pointer_name(run_dir / "checkpoints" / "latest")
    seconds = [finite_number(r["train/seconds"]) for r in records if finite_number(r.get("train/seconds")) is not None]
    return RunSummary(
        project=run_dir.parent.name,
        name=run_dir.name,
        path=str(run_dir),
        created=created_of(run_dir, run_file),
        task=task,
        arch=str(arch.get("name", "?")) + (f"/{arch['mixer']}" if arch.get("mixer") else ""),
        step=max((int(r.get("step", 0)) for r in records), default=0),
        train_seconds=seconds[-1] if seconds else None,
        wall_seconds=finite_number(records[-1].get("time")) if records else None,
        checkpoint=checkpoint,
        checkpoint_state=checkpoint_state(run_dir / "checkpoints", checkpoint),
        wandb_id=wandb_id_of(run_dir),
        headline=headline_metric(config),
        last_eval={k: v for k, v in evals[-1].items() if k.startswith("eval/") and finite_number(v) is not None}
        if evals else {},
        best=best_metrics(evals),
    )


def wandb_id_or_none(run_dir: Path) -> Optional[str]:
    """For look-ups only: a run whose run.json is damaged is still found by its name (the tool
    that then reads it reports the damage); its wandb id is unknown."""
    try:
        return wandb_id_of(run_dir)
    except InputError:
        return None


def find_run(key: str, runs_dir: Path | str, project: Optional[str] = None) -> Path:
    """A run directory by path, by name, or by wandb id; a unique prefix of a name or id will do.
    With `project`, an exact name in that project wins over the same name elsewhere."""
    if not str(key):  # Path('') is '.', the current directory: never what an empty argument meant
        raise RunNotFound("'': an empty run (an unset shell variable?); give a run directory, run name or wandb id")
    if Path(key).is_dir():
        return Path(key)
    runs = run_dirs(runs_dir)
    ids = {run: wandb_id_or_none(run) for run in runs}

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
    known = sorted({r.name for r in runs} | {i for i in ids.values() if i})
    close = difflib.get_close_matches(key, known, n=3, cutoff=0.6)
    hint = f"did you mean {', '.join(close)}? " if close else ""
    raise RunNotFound(f"{key}: no run directory, run name or wandb id under {runs_dir} ({hint}{len(runs)} runs "
                      f"there; python scripts/list_runs.py --runs-dir {runs_dir} lists them)")


def locate_run(value: str | Path, runs_dir: Path | str = "runs", project: Optional[str] = None) -> Path:
    """The one resolver every tool uses for a run argument (train.resume, --checkpoint, the run
    tools): a run, checkpoint or export path as given, else a run's name or wandb id (or a
    unique prefix of one) under `runs_dir`; an unknown or ambiguous one is one line naming the
    candidates. A run found by name stands for its latest checkpoint where a checkpoint is read."""
    path = Path(value)
    return path if path.exists() else find_run(str(value), runs_dir, project)


def read_run_file(run_dir: Path) -> dict[str, Any]:
    """run.json ({} when absent) with the fields a start carries on checked: `created` a unix
    time, `starts` a count, `parent` an object, `wandb_id` a string. The run checks this when
    it owns the run, before it writes anything, so a damaged file is one line naming it."""
    path = Path(run_dir) / RUN_FILE
    if not os.path.lexists(path):
        return {}
    record = read_json(path)
    if record.get("created") is not None:
        created_of(Path(run_dir), record)
    starts = record.get("starts", 0)
    if isinstance(starts, bool) or not isinstance(starts, int) or not 0 <= starts < 2**63:
        raise InputError(f"{path}: field 'starts' is {printable(repr(starts)[:40])}, expected a count of starts")
    parent = record.get("parent")
    if parent is not None and not isinstance(parent, dict):
        raise InputError(f"{path}: field 'parent' is {type(parent).__name__}, expected an object")
    wandb_id = record.get("wandb_id")
    if wandb_id is not None and not isinstance(wandb_id, str):
        raise InputError(f"{path}: field 'wandb_id' is {type(wandb_id).__name__}, expected a string")
    return record


def write_run_file(run_dir: Path, name: str, project: str, wandb_id: Optional[str], wandb_mode: str,
                   parent: Optional[dict] = None, eval_split: str = "test") -> None:
    """Record the run's identity; `created` is kept from the first start across resumes, and
    `parent` (the run and checkpoint a fork started from) from the start that set it. The file
    is replaced, never written into (a hard-linked backup keeps its own). `eval_split`: the
    split this start evaluates on (data.eval_split: its eval/... metrics are of that split)."""
    from training.files import replace_file

    path = Path(run_dir) / RUN_FILE
    old = read_run_file(run_dir)
    record = {"name": name, "project": project, "created": old.get("created", round(time.time(), 3)),
              "wandb_id": wandb_id or old.get("wandb_id"), "wandb_mode": wandb_mode,
              "starts": old.get("starts", 0) + 1, "eval_split": eval_split}
    if parent or old.get("parent"):
        record["parent"] = parent or old.get("parent")
    replace_file(path, json.dumps(record, indent=2) + "\n")
