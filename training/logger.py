"""Run logging: metrics.jsonl in the run directory (always) and wandb (never required)."""

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

from dataset.common import InputError


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
    try:
        path.write_text(text)
    except OSError as exc:
        raise RunIOError(f"{path}: cannot write ({exc.strerror or exc}); earlier checkpoints are intact") from exc


def _clean(value: Any) -> Any:
    """JSON has no NaN/inf: write them as null."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


class RunLogger:
    def __init__(self, run_dir: Path, project: str, run_name: str, config: dict, wandb_mode: str,
                 wandb_id: Optional[str] = None, enabled: bool = True):
        self.enabled = enabled
        self.run_dir = run_dir
        self.wandb_run = None
        self.start = time.time()
        if not enabled:
            return
        # Unbuffered: each record is one write, so a failed write (full disk) leaves nothing
        # pending that close() would try, and fail, to write again.
        self.jsonl = open(run_dir / "metrics.jsonl", "ab", buffering=0)
        mode = resolve_wandb_mode(wandb_mode)
        if mode == "disabled":
            return
        import wandb

        kwargs = dict(project=project, name=run_name, dir=str(run_dir), config=config, id=wandb_id, resume="allow")
        try:
            self.wandb_run = wandb.init(mode=mode, **kwargs)
        except Exception as exc:  # an online init needs the network; the run must not depend on it
            if mode != "online":
                raise
            print(f"wandb: online init failed ({exc}); logging offline in {run_dir}/wandb instead", file=sys.stderr)
            self.wandb_run = wandb.init(mode="offline", **kwargs)

    @property
    def wandb_id(self) -> Optional[str]:
        return None if self.wandb_run is None else self.wandb_run.id

    def log(self, metrics: dict[str, float], step: int) -> None:
        if not self.enabled:
            return
        record = {"step": step, "time": round(time.time() - self.start, 3), **{k: _clean(v) for k, v in metrics.items()}}
        try:
            self.jsonl.write((json.dumps(record) + "\n").encode())
        except OSError as exc:
            raise RunIOError(f"{self.run_dir / 'metrics.jsonl'}: cannot write ({exc.strerror or exc}); "
                             "earlier checkpoints are intact") from exc
        if self.wandb_run is not None:
            self.wandb_run.log(metrics, step=step)

    def close(self) -> None:
        if not self.enabled:
            return
        self.jsonl.close()
        if self.wandb_run is not None:
            self.wandb_run.finish()


def truncate_metrics(run_dir: Path, step: int) -> int:
    """Before a resume from `step`: move the lines a crashed run logged after that step (and
    any line a crash cut short) to metrics.stale-<unix time>.jsonl, so that metrics.jsonl
    continues cleanly. Nothing is deleted. Returns the number of lines moved."""
    path = run_dir / "metrics.jsonl"
    if not path.is_file():
        return 0
    keep, stale = [], []
    for line in path.read_text().splitlines():
        if not line.strip():
            continue
        try:
            record_step = json.loads(line).get("step", 0)
        except json.JSONDecodeError:
            stale.append(line)
            continue
        (keep if record_step <= step else stale).append(line)
    if stale:
        (run_dir / f"metrics.stale-{int(time.time())}.jsonl").write_text("\n".join(stale) + "\n")
        tmp = path.with_name("metrics.jsonl.tmp")
        tmp.write_text("".join(line + "\n" for line in keep))
        os.replace(tmp, path)
    return len(stale)
