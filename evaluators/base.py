"""The evaluator protocol.

An evaluator sees every evaluation batch (after each example ran to `halt_max_steps`) and
returns named floats at the end. Scoring itself lives in pure numpy functions beside each
evaluator, so scripts and tests use the same code. An evaluator that fails raises: a broken
evaluation must stop the run, never turn into a warning and a silent number.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

import torch

from dataset.common import DatasetMetadata


class Evaluator:
    """Base class: subclasses set `name` and `required_outputs` and override the hooks."""

    name: str = ""
    # Model outputs this evaluator reads from `outputs` in update_batch (e.g. "preds", "logits").
    required_outputs: frozenset[str] = frozenset()

    def __init__(self, metadata: DatasetMetadata, **options: Any):
        if options:
            raise ValueError(f"evaluator {self.name!r}: unknown options {sorted(options)}")
        self.metadata = metadata

    def begin_eval(self) -> None:
        raise NotImplementedError

    def update_batch(self, batch: dict[str, torch.Tensor], outputs: dict[str, torch.Tensor]) -> None:
        """`batch` and `outputs` hold only real examples (padding rows already removed)."""
        raise NotImplementedError

    def result(self, save_path: Optional[Path], rank: int = 0, world_size: int = 1, group: Any = None) -> dict[str, float]:
        raise NotImplementedError


def gather_arrays(arrays: dict, world_size: int, group: Any) -> dict:
    """Concatenate per-rank numpy arrays on every rank (identity on a single process)."""
    if world_size == 1:
        return arrays
    import numpy as np
    import torch.distributed as dist

    gathered: list[Any] = [None] * world_size
    dist.all_gather_object(gathered, arrays, group=group)
    return {k: np.concatenate([g[k] for g in gathered]) for k in arrays}
