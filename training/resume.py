"""Saving and restoring the whole train state, and finding what to resume from.

A checkpoint holds everything that evolves during training: weights (uncompiled names), both
optimizers, the EMA, the step and LR scale, the data sampler's position, the ACT carry, every
RNG (Python, numpy, torch CPU and CUDA) and the wandb run id. Restoring it into a freshly
built state continues the run exactly: on a CPU, bit for bit (tests/test_resilience.py).
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import TYPE_CHECKING, Any, Optional

import numpy as np
import torch

from training.checkpoint import CheckpointError, load_config, load_file, load_weights, resolve_checkpoint
from training.config import Config, ConfigError
from training.runs import locate_run

if TYPE_CHECKING:
    from training.loop import TrainState

# Config sections a checkpoint's weights depend on. The data may move or be rebuilt; its
# shape facts (vocab_size, seq_len, identifiers) are checked against the checkpoint instead.
FIXED_SECTIONS = ("arch",)


# ---------------------------------------------------------------------------------------------
# RNG state as tensors and plain data (loadable with weights_only=True)


def rng_state() -> dict[str, Any]:
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    state = {
        "python": random.getstate(),
        "numpy": {"kind": kind, "keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos),
                  "has_gauss": int(has_gauss), "cached_gaussian": float(cached)},
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    random.setstate(state["python"])
    n = state["numpy"]
    np.random.set_state((n["kind"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["cached_gaussian"]))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available() and len(state["cuda"]) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(state["cuda"])


# ---------------------------------------------------------------------------------------------
# Train state <-> checkpoint payload


def train_state_payload(state: "TrainState", wandb_id: Optional[str]) -> dict[str, Any]:
    return {
        "model": state.model.state_dict(),
        "ema": state.ema.state_dict() if state.ema is not None else {},
        "optim": {"adam": state.adam.state_dict(), "sign": state.sign.state_dict() if state.sign is not None else {}},
        "state": {
            "step": state.step,
            "train_seconds": state.train_seconds,
            "sampler": state.sampler.state_dict(),
            "carry": {k: v.detach().cpu() for k, v in state.carry.items()} if state.carry is not None else {},
            "rng": rng_state(),
            "lr_scale": state.lr_scale,
            "rollbacks": state.rollbacks,
            "skipped_steps": state.skipped_steps,
            "best_value": state.best_value,
            "wandb_id": wandb_id,
        },
    }


def restore_train_state(state: "TrainState", ckpt: Path) -> dict[str, Any]:
    """Load a checkpoint into a freshly built state; returns the saved `state` dict."""
    load_weights(state.model, ckpt, use_ema=False)
    if state.ema is not None:
        ema = load_file(ckpt / "ema.pt")
        try:
            state.ema.load_state_dict(ema)
        except (KeyError, RuntimeError) as exc:
            raise CheckpointError(f"{ckpt / 'ema.pt'}: does not fit this model ({exc})") from exc
    optim = load_file(ckpt / "optim.pt")
    try:
        state.adam.load_state_dict(optim["adam"])
        if state.sign is not None:
            state.sign.load_state_dict(optim["sign"])
    except (KeyError, ValueError, RuntimeError) as exc:
        raise CheckpointError(f"{ckpt / 'optim.pt'}: does not fit this model's optimizers ({exc})") from exc
    saved = load_file(ckpt / "state.pt")
    try:
        state.step = int(saved["step"])
        state.train_seconds = float(saved["train_seconds"])
        state.sampler.load_state_dict(saved["sampler"])
        state.carry = {k: v.to(state.device) for k, v in saved["carry"].items()} or None
        state.lr_scale = float(saved.get("lr_scale", 1.0))
        state.rollbacks = int(saved.get("rollbacks", 0))
        state.skipped_steps = int(saved.get("skipped_steps", 0))
        state.best_value = saved.get("best_value")
        set_rng_state(saved["rng"])
    except (KeyError, TypeError, ValueError) as exc:
        raise CheckpointError(f"{ckpt / 'state.pt'}: incomplete or foreign train state ({exc!r})") from exc
    return saved


# ---------------------------------------------------------------------------------------------
# What to resume


def _flatten(d: Any, prefix: str = "") -> dict[str, Any]:
    if not isinstance(d, dict):
        return {prefix: d}
    out: dict[str, Any] = {}
    for k, v in d.items():
        out.update(_flatten(v, f"{prefix}.{k}" if prefix else k))
    return out


def resume_target(cfg: Config, project_dir: Path) -> Optional[tuple[Path, Path]]:
    """(run_dir, checkpoint) to continue, or None for a fresh run."""
    resume = cfg.train.resume
    if resume is False:
        return None
    if resume is True:
        if not cfg.logging.run_name:
            raise ConfigError("train.resume=true needs logging.run_name (the run to continue), or give a path")
        run_dir = project_dir / cfg.logging.run_name
        if not run_dir.is_dir():
            raise ConfigError(f"train.resume=true: no run directory {run_dir}")
        ckpt = resolve_checkpoint(run_dir)
    else:
        ckpt = resolve_checkpoint(locate_run(resume, cfg.logging.runs_dir, cfg.logging.project))  # path, name or wandb id
    return ckpt.parent.parent, ckpt


def check_resume_config(cfg: Config, ckpt: Path) -> list[str]:
    """Refuse a resume whose model or data differ from the checkpoint's; list other changes."""
    saved = _flatten(load_config(ckpt))
    current = _flatten(cfg.to_dict())
    changed = sorted(k for k in set(saved) | set(current) if saved.get(k) != current.get(k))
    fixed = [k for k in changed if k.split(".")[0] in FIXED_SECTIONS]
    if fixed:
        k = fixed[0]
        raise ConfigError(f"train.resume: {k}={current.get(k)!r} differs from the checkpoint's {saved.get(k)!r} "
                          f"({ckpt}); the model settings must match to resume")
    ignored = {"train.resume", "train.load_checkpoint", "logging.run_name"}
    return [f"{k}: {saved.get(k)!r} -> {current.get(k)!r}" for k in changed if k not in ignored]
