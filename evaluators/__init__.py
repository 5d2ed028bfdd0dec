"""Evaluator registry: a config's `evaluators: [{name: lsa}, ...]` picks classes from here."""

from __future__ import annotations

from typing import Any

from evaluators.base import Evaluator
from evaluators.lsa import LSAEvaluator

EVALUATORS: dict[str, type[Evaluator]] = {
    LSAEvaluator.name: LSAEvaluator,
}


def build_evaluator(spec: dict[str, Any], metadata) -> Evaluator:
    spec = dict(spec)
    name = spec.pop("name", None)
    if name not in EVALUATORS:
        raise ValueError(f"evaluators: unknown evaluator name {name!r}; known: {sorted(EVALUATORS)}")
    return EVALUATORS[name](metadata, **spec)
