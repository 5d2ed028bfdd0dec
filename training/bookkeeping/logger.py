"""Run logging: metrics.jsonl in the run directory (always) and wandb (never required).

`time` in metrics.jsonl is seconds since the run first started, summed over resumes (a resumed
run continues from the last logged value, so the gap while it was stopped is not counted).
wandb runs are grouped by task and architecture (`group` = "<task>-<arch>") and tagged with
both, so a project's dashboard can filter and compare like with like.

Every file here is written by replacing it (training/files.py), and metrics.jsonl, which is
appended to, is first copied when it has other hard links: a `cp -al` backup of the run keeps
its content.
"""

from __future__ import annotations

import json
import math
import netrc
import os
import sys
import time
from pathlib import Path
from typing import Any, Optional
from urllib.parse import urlparse

from core.errors import InputError
from training.files import own_file, replace_file
from training.bookkeeping.runs import task_of, write_run_file


def wandb_logged_in() -> bool:
    """True when wandb has credentials: WANDB_API_KEY, or a netrc entry for its host."""
    if os.environ.get("WANDB_API_KEY"):
        return True
    host = urlparse(os.environ.get("WANDB_BASE_URL", "https://api.wandb.ai")).hostname
    path = Path(os.environ.get("NETRC", Path.home() / ".netrc"))
    if not path.is_file():
        return False
    try:
        return netrc.netrc(str(path)).authenticators(host) is not None
    except (netrc.NetrcParseError, OSError) as exc:
        print(f"wandb: cannot read {path} ({exc}); treating as not logged in", file=sys.stderr)
        return False


def resolve_wandb_mode(configured: str) -> str:
    if configured != "auto":
        return configured
    env = os.environ.get("WANDB_MODE")
    if env:
        return {"dryrun": "offline", "run": "online"}.get(env, env)
    return "online" if wandb_logged_in() else "offline"


class RunIOError(InputError):
    """A run's own file could not be written (a full disk, a read-only directory): one line
    naming the file; the checkpoints already written stay intact."""


def write_text(path: Path, text: str) -> None:
    """`path` replaced by a new file holding `text` (never written into: see the module note)."""
    try:
        replace_file(path, text)
    except OSError as exc:
        raise RunIOError(f"{path}: cannot write ({exc.strerror or exc}); earlier checkpoints are intact") from exc


def _clean(value: Any) -> Any:
    """JSON has no NaN/inf: write them as null."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def metric_records(path: Path) -> list[tuple[str, Optional[dict[str, Any]]]]:
    """(line, record) for each non-empty line of a metrics.jsonl; record is None for a line that
    is not a JSON object with an integer step (a crash cut it short, or something else wrote it)."""
    out = []
    for line in path.read_bytes().decode("utf-8", errors="replace").splitlines():
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except (ValueError, RecursionError):
            record = None
        if not (isinstance(record, dict) and isinstance(record.get("step"), int)):
            record = None
        out.append((line, record))
    return out


def logged_seconds(run_dir: Path) -> float:
    """The last `time` in metrics.jsonl (0 for a new run): where a resumed run's clock restarts."""
    path = Path(run_dir) / "metrics.jsonl"
    if not path.is_file():
        return 0.0
    for _, record in reversed(metric_records(path)):
        value = record.get("time") if record else None
        if isinstance(value, (int, float)) and math.isfinite(value):
            return float(value)
    return 0.0


def wandb_grouping(config: dict) -> dict[str, Any]:
    """wandb.init's group and tags: runs of one task and architecture sit together."""
    arch = config.get("arch") or {}
    name = str(arch.get("name", "model"))
    tags = [task_of(config), name] + ([f"mixer:{arch['mixer']}"] if arch.get("mixer") else [])
    return {"group": f"{task_of(config)}-{name}", "tags": tags, "job_type": "train"}


class RunLogger:
    def __init__(self, run_dir: Path, project: str, run_name: str, config: dict, wandb_mode: str,
                 wandb_id: Optional[str] = None, enabled: bool = True, parent: Optional[dict] = None):
        self.enabled = enabled
        self.run_dir = run_dir
        self.wandb_run = None
        self.start = time.time()
        if not enabled:
            return
        self.start -= logged_seconds(run_dir)
        # Unbuffered: each record is one write, so a failed write (full disk) leaves nothing
        # pending that close() would try, and fail, to write again.
        path = run_dir / "metrics.jsonl"
        try:
            own_file(path)  # a hard-linked backup keeps its lines
            fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW, 0o666)
        except OSError as exc:
            raise RunIOError(f"{path}: cannot open for appending ({exc.strerror or exc})") from exc
        self.jsonl = os.fdopen(fd, "ab", buffering=0)
        mode = resolve_wandb_mode(wandb_mode)
        if mode != "disabled":
            self.wandb_run = self._init_wandb(mode, project, run_name, config, wandb_id)
        write_run_file(run_dir, run_name, project, self.wandb_id, mode, parent,
                       eval_split=(config.get("data") or {}).get("eval_split", "test"))

    def _init_wandb(self, mode: str, project: str, run_name: str, config: dict, wandb_id: Optional[str]):
        # wandb keeps caches and debug logs under ~/.cache unless told otherwise: keep them in the
        # run (a user's own WANDB_* settings win).
        for variable, sub in (("WANDB_CACHE_DIR", "cache"), ("WANDB_DATA_DIR", "data"), ("WANDB_ARTIFACT_DIR", "artifacts")):
            os.environ.setdefault(variable, str(self.run_dir / "wandb" / sub))
        import wandb

        kwargs = dict(project=project, name=run_name, dir=str(self.run_dir), config=config, id=wandb_id,
                      resume="allow", **wandb_grouping(config))
        try:
            return wandb.init(mode=mode, **kwargs)
        except Exception as exc:  # an online init needs the network; the run must not depend on it
            if mode != "online":
                raise
            print(f"wandb: online init failed ({exc}); logging offline in {self.run_dir}/wandb instead", file=sys.stderr)
            return wandb.init(mode="offline", **kwargs)

    @property
    def wandb_id(self) -> Optional[str]:
        return None if self.wandb_run is None else self.wandb_run.id

    def log(self, metrics: dict[str, float], step: int, labels: Optional[dict[str, str]] = None) -> None:
        """`labels`: text fields for metrics.jsonl only (an evaluation's `eval_split`); wandb
        gets the numbers."""
        if not self.enabled:
            return
        record = {"step": step, "time": round(time.time() - self.start, 3), **(labels or {}),
                  **{k: _clean(v) for k, v in metrics.items()}}
        try:
            self.jsonl.write((json.dumps(record) + "\n").encode())
        except OSError as exc:
            raise RunIOError(f"{self.run_dir / 'metrics.jsonl'}: cannot write ({exc.strerror or exc}); "
                             "earlier checkpoints are intact") from exc
        if self.wandb_run is not None:
            self.wandb_run.log(metrics, step=step)

    def log_media(self, media: dict[str, Any], step: int) -> None:
        """Tables and pictures: wandb only (metrics.jsonl holds numbers)."""
        if self.enabled and self.wandb_run is not None and media:
            self.wandb_run.log(media, step=step)

    def close(self) -> None:
        if not self.enabled:
            return
        self.jsonl.close()
        if self.wandb_run is not None:
            self.wandb_run.finish()


def truncate_metrics(run_dir: Path, step: int) -> int:
    """Before a resume from `step`: move the lines a crashed run logged after that step (and
    any line a crash cut short or that is not a record) to metrics.stale-<unix time>.jsonl, so
    that metrics.jsonl continues cleanly. Nothing is deleted. Returns the number of lines moved."""
    path = run_dir / "metrics.jsonl"
    if not path.is_file():
        return 0
    keep, stale = [], []
    for line, record in metric_records(path):
        (keep if record is not None and record["step"] <= step else stale).append(line)
    if stale:
        aside = run_dir / f"metrics.stale-{int(time.time())}.jsonl"
        for n in range(1, 1000):  # an earlier file of that second stays as it is
            if not aside.exists() and not aside.is_symlink():
                break
            aside = run_dir / f"metrics.stale-{int(time.time())}-{n}.jsonl"
        write_text(aside, "\n".join(stale) + "\n")
        write_text(path, "".join(line + "\n" for line in keep))
    return len(stale)
