"""Nested dicts as dotted keys (what a config, a checkpoint's config.json and the ranks' configs
are compared by)."""

from __future__ import annotations

from typing import Any


def flatten(d: Any, prefix: str = "") -> dict[str, Any]:
    """{"train": {"seed": 0}} -> {"train.seed": 0}: config keys as they are written on the command line."""
    if not isinstance(d, dict):
        return {prefix: d}
    return {k: v for key, item in d.items() for k, v in flatten(item, f"{prefix}.{key}" if prefix else str(key)).items()}
