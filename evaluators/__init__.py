"""Evaluators by name: a config's `evaluators: [{name: lsa}, ...]` names a task of the task
registry (evaluators/tasks.py) and gets its `Task.evaluator`. A task's module is imported on
use, so one task's evaluator never imports another's dependencies."""

from __future__ import annotations

from typing import Any

from evaluators.base import Evaluator, EvaluatorError
from evaluators.tasks import TASKS, get_task, task_names


def evaluator_names() -> list[str]:
    return task_names()


def evaluator_class(name: str) -> type[Evaluator]:
    if not isinstance(name, str) or name not in TASKS:
        raise ValueError(f"evaluators: unknown evaluator name {name!r}; known: {evaluator_names()}")
    return get_task(name).evaluator


def build_evaluator(spec: dict[str, Any], metadata) -> Evaluator:
    spec = dict(spec)
    return evaluator_class(spec.pop("name", None))(metadata, **spec)


def build_evaluators(specs: list[dict[str, Any]], data, split: str = "test") -> list[Evaluator]:
    """The configured evaluators for a dataset's evaluation split (test or val), each checked
    against it (its task, and a dry run scoring the split's own labels); a misfit is one
    EvaluatorError naming it, a missing val/ one DatasetError."""
    from core.errors import one_line

    meta, arrays = data.split(split)
    evaluators = []
    for i, spec in enumerate(specs):
        try:
            evaluator = build_evaluator(spec, meta)
            evaluator.check_data(arrays, meta)
        except ValueError as exc:
            raise EvaluatorError(f"evaluators[{i}] ({spec.get('name')}): {one_line(exc)} ({data.path})") from exc
        evaluators.append(evaluator)
    return evaluators
