"""Evaluator registry: a config's `evaluators: [{name: lsa}, ...]` picks classes from here.
Entries are imported on use, so one task's evaluator never imports another's dependencies."""

from __future__ import annotations

import importlib
from typing import Any

from evaluators.base import Evaluator

# name -> (module, class)
EVALUATORS: dict[str, tuple[str, str]] = {
    "lsa": ("evaluators.lsa", "LSAEvaluator"),
    "sudoku": ("evaluators.sudoku", "SudokuEvaluator"),
    "arith": ("evaluators.arith", "ArithEvaluator"),
}


def evaluator_class(name: str) -> type[Evaluator]:
    if name not in EVALUATORS:
        raise ValueError(f"evaluators: unknown evaluator name {name!r}; known: {sorted(EVALUATORS)}")
    module, cls = EVALUATORS[name]
    return getattr(importlib.import_module(module), cls)


def build_evaluator(spec: dict[str, Any], metadata) -> Evaluator:
    spec = dict(spec)
    return evaluator_class(spec.pop("name", None))(metadata, **spec)
