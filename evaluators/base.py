"""The evaluator protocol.

An evaluator sees every evaluation batch (after each example ran to `halt_max_steps`) and
returns named floats at the end. Scoring itself lives in pure numpy functions beside each
evaluator, so scripts and tests use the same code. An evaluator that fails raises: a broken
evaluation must stop the run, never turn into a warning and a silent number.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

import numpy as np
import pydantic
import torch

from core.errors import InputError, one_line
from dataset.common import DatasetMetadata
from dataset.loader import IGNORE_LABEL_ID


class EvaluatorError(InputError):
    """An evaluator that does not fit the dataset (its task, its tokens, its layout)."""


class EvaluatorOptions(pydantic.BaseModel):
    """An evaluator's options (the keys beside `name` in a config's `evaluators` entry); each
    evaluator subclasses this as `Options`, so unknown or mistyped options fail at validation."""

    model_config = pydantic.ConfigDict(extra="forbid", allow_inf_nan=False)


class Evaluator:
    """Base class: subclasses set `name`, `task` and `required_outputs`, list their metrics and
    override the hooks."""

    name: str = ""
    # The dataset task it scores (dataset.json's `task`); a dataset of another task is refused.
    task: str = ""
    # Model outputs this evaluator reads from `outputs` in update_batch (e.g. "preds", "logits").
    required_outputs: frozenset[str] = frozenset()
    Options: type[EvaluatorOptions] = EvaluatorOptions

    def __init__(self, metadata: DatasetMetadata, **options: Any):
        try:
            self.options = self.Options.model_validate(options)
        except pydantic.ValidationError as exc:
            raise ValueError(f"evaluator {self.name!r}: {one_line(exc)}") from None
        dataset_task = getattr(metadata, "task", None)
        if dataset_task is not None and dataset_task != self.task:
            raise ValueError(f"evaluator {self.name!r} scores {self.task} datasets, but this dataset's task is "
                             f"{dataset_task!r}")
        self.metadata = metadata

    def check_data(self, split: Any, metadata: DatasetMetadata) -> None:
        """Score the split's own labels as if they were the model's answers, through the real
        `update_batch` and `result`: whatever evaluation would stumble on later (tokens outside
        the task's range, a layout that does not match) raises now, before training."""
        labels = split.labels.astype(np.int64)
        if metadata.ignore_label_id is not None:
            labels[split.labels == metadata.ignore_label_id] = IGNORE_LABEL_ID
        preds = torch.from_numpy(np.where(labels == IGNORE_LABEL_ID, metadata.pad_id, labels))
        outputs = {"preds": preds}
        if "logits" in self.required_outputs:
            outputs["logits"] = torch.nn.functional.one_hot(preds, metadata.vocab_size).float()
        self.begin_eval()
        self.update_batch({"inputs": torch.from_numpy(split.inputs.astype(np.int64)), "labels": torch.from_numpy(labels)},
                          outputs)
        self.result(None)

    def metric_names(self) -> set[str]:
        """Every metric `result` can return (before the `eval/<name>/` prefix), known from the
        metadata alone, so that `train.best_metric` is checked before training starts."""
        raise NotImplementedError

    def begin_eval(self) -> None:
        raise NotImplementedError

    def update_batch(self, batch: dict[str, torch.Tensor], outputs: dict[str, torch.Tensor]) -> None:
        """`batch` and `outputs` hold only real examples (padding rows already removed)."""
        raise NotImplementedError

    def result(self, save_path: Optional[Path], rank: int = 0, world_size: int = 1, group: Any = None) -> dict[str, float]:
        raise NotImplementedError


def save_predictions(path: Path, **arrays: np.ndarray) -> None:
    """An evaluator's prediction file, written as a new file renamed into place: a hard-linked
    backup of the run (`cp -al`) keeps its own copy when a step is evaluated again."""
    from training.files import replace_file

    path.parent.mkdir(parents=True, exist_ok=True)
    replace_file(path, lambda f: np.savez_compressed(f, **arrays))


def gather_arrays(arrays: dict, world_size: int, group: Any) -> dict:
    """Concatenate per-rank numpy arrays on every rank (identity on a single process)."""
    if world_size == 1:
        return arrays
    import numpy as np
    import torch.distributed as dist

    gathered: list[Any] = [None] * world_size
    dist.all_gather_object(gathered, arrays, group=group)
    return {k: np.concatenate([g[k] for g in gathered]) for k in arrays}
