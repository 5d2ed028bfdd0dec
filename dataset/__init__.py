"""Dataset builders and the loader. Builders are looked up by task name in the task registry
(evaluators/tasks.py) for configs that build their dataset on first use (`data.builder`); they
are imported lazily so that `python -m dataset.build_X` runs each module once."""

from __future__ import annotations

from pathlib import Path
from typing import Any


def builder_config(builder: str, args: dict[str, Any], output_dir: Path | str, progress: bool = True):
    """The validated build config of `builder` (a task name, evaluators/tasks.py) for `args` (its
    CLI flags with underscores); a bad name or argument is a DatasetError naming it. Nothing is written."""
    import pydantic

    from core.errors import DatasetError, one_line
    from evaluators.tasks import TASKS, get_task, task_names

    if not isinstance(builder, str) or builder not in TASKS:
        raise DatasetError(f"data.builder={builder!r}: unknown builder; known: {task_names()}")
    try:
        return get_task(builder).config_class().model_validate({**args, "output_dir": output_dir, "progress": progress})
    except pydantic.ValidationError as exc:
        raise DatasetError(f"data.build_args: {one_line(exc)}") from exc


def build_dataset(builder: str, args: dict[str, Any], output_dir: Path | str, progress: bool = True) -> Path:
    """Build dataset `builder` with `args` (its CLI flags with underscores) into `output_dir`."""
    from evaluators.tasks import get_task

    return get_task(builder).build(builder_config(builder, args, output_dir, progress))
