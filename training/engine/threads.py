"""How many CPU threads torch uses (`train.num_threads`), decided in one place for training and
every script that runs a model.

`auto` (the default): what `OMP_NUM_THREADS` says when it is set (the user's or torchrun's
choice); otherwise torch's default (one per physical core) lowered to the cores the machine's
1-minute load average leaves free, at least one. Why: on an idle 2-core machine torch's default
trained the CPU preset faster than one thread, while on a busy one one thread was many times
faster (OpenMP threads spin while they wait for a core that another process holds); see
docs/BENCHMARKS.md. An integer is used as it is; null leaves torch's setting alone.
"""

from __future__ import annotations

import os
from typing import Optional, Union

import torch

ThreadSetting = Optional[Union[str, int]]


def env_threads() -> Optional[int]:
    """OMP_NUM_THREADS as a positive integer, or None when unset or not one."""
    text = os.environ.get("OMP_NUM_THREADS", "").strip()
    return int(text) if text.isdigit() and int(text) > 0 else None


def auto_threads(default: Optional[int] = None, load: Optional[float] = None, cores: Optional[int] = None) -> int:
    """The `auto` choice; `default`, `load` and `cores` stand for torch's default thread count,
    the 1-minute load average and the machine's cores (read from the system when None)."""
    from_env = env_threads()
    if from_env is not None:
        return from_env
    if default is None:
        default = torch.get_num_threads()
    if load is None:
        try:
            load = os.getloadavg()[0]
        except (OSError, AttributeError):  # no load average on this platform: torch's default
            return max(1, default)
    cores = cores or os.cpu_count() or 1
    return max(1, min(default, round(cores - load)))


def apply_threads(setting: ThreadSetting) -> Optional[int]:
    """Set torch's thread count from a `train.num_threads` value; returns the count set (None:
    left alone)."""
    if setting is None:
        return None
    count = auto_threads() if setting == "auto" else int(setting)
    torch.set_num_threads(count)
    return count


def threads_text(count: int) -> str:
    return f"{count} thread" + ("" if count == 1 else "s")
