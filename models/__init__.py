"""Model registry: `arch.name` picks a (config class, model class) pair from here."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Annotated, Any, Optional, Union

import pydantic
import torch
from torch import nn

from core.errors import InputError, one_line

from models.act import check_model_cost, resolve_dtype
from models.hrm import HRM, HRMConfig
from models.transformer import Transformer, TransformerConfig
from models.trm import TRM, TRMConfig

MODELS: dict[str, tuple[type[pydantic.BaseModel], type[nn.Module]]] = {
    "trm": (TRMConfig, TRM),
    "hrm": (HRMConfig, HRM),
    "transformer": (TransformerConfig, Transformer),
}
DEFAULT_ARCH = "trm"  # the `arch` group's default option (training/config.py: the `base` config)

# `Config.arch`: one of the registered configs, told apart by `name` (each family's `name` is a Literal).
if TYPE_CHECKING:  # type checkers cannot read the union built from the registry below
    ArchConfig = Union[TRMConfig, HRMConfig, TransformerConfig]
else:
    ArchConfig = Annotated[Union[tuple(config for config, _ in MODELS.values())], pydantic.Field(discriminator="name")]


def other_arch_with(name: Any, field: str) -> Optional[str]:
    """The first registered family other than `name` whose config has `field`, or None (for the hint
    "a field of hrm: arch=hrm" when a field is set for the wrong family)."""
    return next((other for other, (config, _) in MODELS.items() if other != name and field in config.model_fields), None)


def field_hint(name: Any, field: str) -> str:
    other = other_arch_with(name, field)
    return f" ({field} is a field of arch {other}, not {name}: arch={other})" if other else ""


def validate_arch(raw: dict[str, Any]) -> pydantic.BaseModel:
    name = raw.get("name")
    if name not in MODELS:
        raise ValueError(f"unknown model name {name!r}; known: {sorted(MODELS)}")
    try:
        arch = MODELS[name][0].model_validate(raw)
    except pydantic.ValidationError as exc:
        extra = [str(e["loc"][0]) for e in exc.errors() if e["type"] == "extra_forbidden" and e["loc"]]
        hint = field_hint(name, extra[0]) if extra else ""
        raise ValueError("; ".join(f"arch.{part}" for part in one_line(exc).split("; ")) + hint) from None
    for key, value in arch.model_dump().items():  # every model family: no inf/NaN settings
        if isinstance(value, float) and not math.isfinite(value):
            raise ValueError(f"arch.{key}: must be a finite number (got {value})")
    return arch


def build_model(arch: pydantic.BaseModel, metadata, device: torch.device) -> nn.Module:
    """Instantiate on `device` from a validated arch config and the dataset's metadata, after
    checking that its size and cost per example are within the bounds (models/act.py)."""
    _, model_cls = MODELS[arch.name]
    try:
        check_model_cost(arch, metadata.vocab_size, metadata.seq_len, metadata.num_puzzle_identifiers)
    except ValueError as exc:
        raise InputError(str(exc)) from exc
    dtype = resolve_dtype(arch.forward_dtype, device)
    try:
        with torch.device(device):
            return model_cls(arch, metadata.vocab_size, metadata.seq_len, metadata.num_puzzle_identifiers, dtype)
    except (MemoryError, RuntimeError) as exc:  # torch's out-of-memory errors are RuntimeErrors
        if not isinstance(exc, MemoryError) and "alloc" not in str(exc) and "out of memory" not in str(exc):
            raise
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:120]
        raise InputError(f"arch ({arch.name}, hidden_size={arch.hidden_size}) with vocab_size={metadata.vocab_size}, "
                         f"num_puzzle_identifiers={metadata.num_puzzle_identifiers}: the model does not fit in "
                         f"{device.type} memory ({first})") from exc


def count_parameters(model: nn.Module) -> dict[str, int]:
    """Trainable parameter counts: `total` includes the puzzle embedding (a parameter trained
    by sign-SGD, one row per puzzle identifier), which is also given on its own."""
    emb = getattr(model, "puzzle_emb", None)
    return {"total": sum(p.numel() for p in model.parameters()), "puzzle_emb": emb.numel() if emb is not None else 0}
