"""The run configuration: Hydra composes YAML, this validates it before anything runs.

Every section forbids unknown keys, so a typo (`train.lrr`) fails at once with the field's
name instead of being silently ignored.
"""

from __future__ import annotations

from typing import Any, Literal, Optional

import pydantic
from pydantic import BaseModel, ConfigDict, Field

from dataset.common import InputError, one_line
from models import validate_arch


class ConfigError(InputError):
    """Invalid configuration; the message names the field."""


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class DataConfig(Strict):
    path: str = Field(description="dataset directory (train/, test/)")
    builder: Optional[str] = Field(None, description="builder to run when `path` holds no dataset (lsa, ...)")
    build_args: dict[str, Any] = Field(default_factory=dict, description="arguments for the builder (its flags, with _)")
    device_resident: Literal["auto", "always", "never"] = "auto"


class OptimConfig(Strict):
    lr: float = Field(1e-4, gt=0)
    lr_min_ratio: float = Field(1.0, ge=0, le=1)
    lr_warmup_steps: int = Field(2000, ge=0)
    weight_decay: float = Field(1.0, ge=0)
    beta1: float = Field(0.9, ge=0, lt=1)
    beta2: float = Field(0.95, ge=0, lt=1)
    puzzle_emb_lr: float = Field(1e-4, ge=0)
    puzzle_emb_weight_decay: float = Field(1.0, ge=0)
    grad_clip: Optional[float] = Field(1.0, gt=0, description="max global gradient norm; null = no clipping")


class TrainConfig(Strict):
    seed: int = 0
    global_batch_size: int = Field(768, ge=1)
    eval_batch_size: Optional[int] = Field(None, ge=1, description="default: global_batch_size")
    epochs: Optional[float] = Field(None, gt=0, description="length in epochs (one group visit each)")
    max_steps: Optional[int] = Field(None, ge=1, description="length in optimizer steps (overrides epochs)")
    max_train_seconds: Optional[float] = Field(None, gt=0, description="stop after this much training wall time")
    eval_interval: int = Field(1000, ge=1, description="evaluate (and checkpoint) every N steps and at the end")
    eval_at_start: bool = False
    log_every: int = Field(50, ge=1, description="read metrics back from the device every N steps")
    ema: bool = True
    ema_rate: float = Field(0.999, ge=0, lt=1)
    device: str = Field("auto", description="auto, cpu, cuda, cuda:N")
    compile: Literal["auto", "on", "off"] = "auto"
    keep_checkpoints: int = Field(2, ge=1, description="most recent checkpoints kept")
    save_checkpoints: bool = True

    @pydantic.model_validator(mode="after")
    def _length(self) -> "TrainConfig":
        if self.epochs is None and self.max_steps is None:
            raise ValueError("set train.epochs or train.max_steps")
        return self


class LoggingConfig(Strict):
    project: str = "trm"
    run_name: Optional[str] = Field(None, description="default: a generated coolname slug")
    runs_dir: str = "runs"
    wandb_mode: Literal["auto", "online", "offline", "disabled"] = Field(
        "auto", description="auto: WANDB_MODE if set, else online when logged in, else offline"
    )
    progress: bool = True


class Config(Strict):
    arch: Any
    data: DataConfig
    optim: OptimConfig = Field(default_factory=OptimConfig)
    train: TrainConfig
    logging: LoggingConfig = Field(default_factory=LoggingConfig)
    evaluators: list[dict[str, Any]] = Field(default_factory=list)

    @pydantic.field_validator("arch", mode="before")
    @classmethod
    def _arch(cls, value: Any) -> Any:
        if isinstance(value, BaseModel):
            return value
        if not isinstance(value, dict):
            raise ValueError("arch must be a mapping with a 'name'")
        return validate_arch(value)

    @pydantic.field_validator("evaluators")
    @classmethod
    def _evaluators(cls, value: list[dict[str, Any]]) -> list[dict[str, Any]]:
        from evaluators import EVALUATORS

        for i, spec in enumerate(value):
            if spec.get("name") not in EVALUATORS:
                raise ValueError(f"evaluators[{i}].name={spec.get('name')!r}; known: {sorted(EVALUATORS)}")
        return value

    def to_dict(self) -> dict[str, Any]:
        return self.model_dump(mode="json")


def validate_config(raw: dict[str, Any]) -> Config:
    """Validate a composed config (a plain dict) or raise ConfigError with a one-line message."""
    try:
        return Config.model_validate(raw)
    except pydantic.ValidationError as exc:
        raise ConfigError(f"config: {one_line(exc)}") from exc
