"""Saving and restoring the whole train state, and finding what to resume from.

A checkpoint holds everything that evolves during training: weights (uncompiled names), both
optimizers, the EMA, the step and LR scale, the data sampler's position, the ACT carry, every
RNG (Python, numpy, torch CPU and CUDA) and the wandb run id. Restoring it into a freshly
built state continues the run exactly: on a CPU, bit for bit (tests/test_resilience.py).
"""

from __future__ import annotations

import math
import random
import re
from pathlib import Path
from typing import TYPE_CHECKING, Any, Optional

import numpy as np
import torch

from dataset.loader import IGNORE_LABEL_ID
from training.checkpoint import (
    CheckpointError, check_field as _check, check_tensors, load_config, load_file, load_weights, resolve_checkpoint,
)
from training.config import Config, ConfigError

if TYPE_CHECKING:
    from training.loop import TrainState

# Config sections a checkpoint's weights depend on. The data may move or be rebuilt; its
# shape facts (vocab_size, seq_len, identifiers) are checked against the checkpoint instead.
FIXED_SECTIONS = ("arch",)
WANDB_ID = re.compile(r"[A-Za-z0-9_-]{1,64}")


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


def _int(value: Any, lo: int = 0, hi: Optional[int] = None) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= lo and (hi is None or value <= hi)


def _float(value: Any, lo: float = 0.0, hi: float = math.inf) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value) and lo <= value <= hi


def _check_optimizer(saved: Any, optimizer: torch.optim.Optimizer, path: Path, field: str) -> None:
    _check(isinstance(saved, dict) and isinstance(saved.get("state"), dict) and isinstance(saved.get("param_groups"), list),
           path, field, "is not an optimizer state (state, param_groups)")
    groups = saved["param_groups"]
    _check(len(groups) == len(optimizer.param_groups), path, f"{field}.param_groups",
           f"has {len(groups)} groups, the optimizer {len(optimizer.param_groups)}")
    params = [p for group in optimizer.param_groups for p in group["params"]]
    for g, (group, own) in enumerate(zip(groups, optimizer.param_groups)):
        where = f"{field}.param_groups[{g}]"
        _check(isinstance(group, dict) and isinstance(group.get("params"), list)
               and len(group["params"]) == len(own["params"]), path, where, "does not fit this model's parameters")
        for key in ("lr", "weight_decay"):
            _check(_float(group.get(key, 0.0)), path, f"{where}.{key}", f"is {group.get(key)!r}, expected a finite number >= 0")
        if "step" in group:
            _check(_int(group["step"]), path, f"{where}.step", f"is {group['step']!r}, expected an integer >= 0")
        if "betas" in group:
            betas = group["betas"]
            _check(isinstance(betas, (list, tuple)) and len(betas) == 2 and all(_float(b, 0.0, 0.999999) for b in betas),
                   path, f"{where}.betas", f"is {betas!r}, expected two numbers in [0, 1)")
    for index, entry in saved["state"].items():
        _check(_int(index, 0, len(params) - 1) and isinstance(entry, dict), path, f"{field}.state",
               f"has an entry for parameter {index!r}, which this model does not have")
        for key, value in entry.items():
            if isinstance(value, torch.Tensor) and value.ndim:
                where = f"{field}.state[{index}].{key}"
                _check(value.shape == params[index].shape, path, where,
                       f"has shape {tuple(value.shape)}, the parameter {tuple(params[index].shape)}")
                _check(bool(torch.isfinite(value).all()), path, where, "holds NaN or infinite values")


def _check_rng(rng: Any, path: Path) -> None:
    _check(isinstance(rng, dict) and {"python", "numpy", "torch"} <= set(rng), path, "rng", "lacks python/numpy/torch")
    python = rng["python"]
    _check(isinstance(python, tuple) and len(python) == 3 and _int(python[0], 3, 3) and isinstance(python[1], tuple)
           and len(python[1]) == 625 and all(_int(x, 0, 2**32 - 1) for x in python[1][:624])
           and _int(python[1][624], 0, 624) and (python[2] is None or _float(python[2], -math.inf)),
           path, "rng.python", "is not a Python random state")
    n = rng["numpy"]
    _check(isinstance(n, dict) and n.get("kind") == "MT19937" and isinstance(n.get("keys"), torch.Tensor)
           and n["keys"].shape == (624,) and bool(((n["keys"] >= 0) & (n["keys"] < 2**32)).all())
           and _int(n.get("pos"), 0, 624) and _int(n.get("has_gauss"), 0, 1) and _float(n.get("cached_gaussian"), -math.inf),
           path, "rng.numpy", "is not a numpy MT19937 state")
    reference = torch.get_rng_state()
    _check(isinstance(rng["torch"], torch.Tensor) and rng["torch"].dtype == torch.uint8
           and rng["torch"].shape == reference.shape, path, "rng.torch", "is not a torch CPU generator state")


def _check_carry(state: "TrainState", carry: Any, path: Path) -> Optional[str]:
    """Check a saved ACT carry against this model and config; returns a note when the carry
    must be rebuilt (another global batch size) instead of used."""
    _check(isinstance(carry, dict), path, "carry", f"is a {type(carry).__name__}, expected a mapping of tensors")
    if not carry:
        return None
    batch_size = state.cfg.train.global_batch_size
    reference = state.model.initial_carry(state.train_arrays.gather(np.zeros(batch_size, dtype=np.int64)))
    reference = {k: v.cpu() for k, v in reference.items()}
    saved_batch = next(iter(carry.values())).shape[0] if isinstance(next(iter(carry.values())), torch.Tensor) else None
    if saved_batch is not None and saved_batch != batch_size:
        reference = {k: v.new_zeros((saved_batch,) + tuple(v.shape[1:])) for k, v in reference.items()}
        check_tensors(carry, reference, path, "carry")
        return (f"train.global_batch_size changed ({saved_batch} -> {batch_size}): the ACT carry is rebuilt, so every "
                "example starts its reasoning afresh at the next step")
    check_tensors(carry, reference, path, "carry")
    meta, max_steps = state.data.meta, state.model.cfg.halt_max_steps
    limits = {"inputs": (0, meta.vocab_size - 1), "puzzle_identifiers": (0, meta.num_puzzle_identifiers - 1),
              "steps": (0, max_steps)}
    for key, (lo, hi) in limits.items():
        if key in carry and carry[key].numel():
            _check(int(carry[key].min()) >= lo and int(carry[key].max()) <= hi, path, f"carry.{key}",
                   f"holds values outside {lo}..{hi}")
    if "labels" in carry and carry["labels"].numel():
        labels = carry["labels"]
        ok = (labels == IGNORE_LABEL_ID) | ((labels >= 0) & (labels < meta.vocab_size))
        _check(bool(ok.all()), path, "carry.labels", f"holds values outside 0..{meta.vocab_size - 1} (and -100)")
    return None


def restore_train_state(state: "TrainState", ckpt: Path) -> tuple[dict[str, Any], list[str]]:
    """Load a checkpoint into a freshly built state, checking every field before it is used
    (a bad one is a CheckpointError naming the file and field). Returns the saved `state`
    dict and notes for the log (e.g. a rebuilt carry)."""
    load_weights(state.model, ckpt, use_ema=False)
    own = {name: p.detach() for name, p in state.model.named_parameters()}
    if state.ema is not None:
        ema = load_file(ckpt / "ema.pt")
        check_tensors(ema, {name: own[name].float() for name in state.ema.names}, ckpt / "ema.pt", "ema")
        state.ema.load_state_dict(ema)
    optim = load_file(ckpt / "optim.pt")
    _check(isinstance(optim, dict) and "adam" in optim, ckpt / "optim.pt", "adam", "is missing")
    _check_optimizer(optim["adam"], state.adam, ckpt / "optim.pt", "adam")
    if state.sign is not None:
        _check("sign" in optim, ckpt / "optim.pt", "sign", "is missing")
        _check_optimizer(optim["sign"], state.sign, ckpt / "optim.pt", "sign")
    path = ckpt / "state.pt"
    saved = load_file(path)
    _check(isinstance(saved, dict), path, "(top level)", f"is a {type(saved).__name__}, expected a mapping")
    for key in ("step", "train_seconds", "sampler", "carry", "rng"):
        _check(key in saved, path, key, "is missing")
    _check(_int(saved["step"]), path, "step", f"is {saved['step']!r}, expected an integer >= 0")
    _check(_float(saved["train_seconds"]), path, "train_seconds", f"is {saved['train_seconds']!r}, expected a number >= 0")
    sampler = saved["sampler"]
    _check(isinstance(sampler, dict) and _int(sampler.get("epoch")) and _int(sampler.get("seed"), 0, 2**63 - 1)
           and _int(sampler.get("offset")), path, "sampler", f"is {sampler!r}, expected epoch, offset, seed >= 0")
    epoch_length = len(state.sampler.epoch_order(sampler["epoch"]))
    _check(sampler["offset"] < epoch_length, path, "sampler.offset",
           f"is {sampler['offset']}, past the end of an epoch ({epoch_length} examples)")
    _check(_float(saved.get("lr_scale", 1.0), 1e-30, 1.0), path, "lr_scale", "must be a number in (0, 1]")
    for key in ("rollbacks", "skipped_steps"):
        _check(_int(saved.get(key, 0)), path, key, f"is {saved.get(key)!r}, expected an integer >= 0")
    best = saved.get("best_value")
    _check(best is None or _float(best, -math.inf), path, "best_value", f"is {best!r}, expected a finite number or none")
    wandb_id = saved.get("wandb_id")
    _check(wandb_id is None or (isinstance(wandb_id, str) and WANDB_ID.fullmatch(wandb_id) is not None), path,
           "wandb_id", f"is {wandb_id!r}, expected letters and digits")
    _check_rng(saved["rng"], path)
    note = _check_carry(state, saved["carry"], path)

    # Everything checked: apply.
    try:
        state.adam.load_state_dict(optim["adam"])
        if state.sign is not None:
            state.sign.load_state_dict(optim["sign"])
    except (KeyError, ValueError, RuntimeError) as exc:
        raise CheckpointError(f"{ckpt / 'optim.pt'}: does not fit this model's optimizers ({exc})") from exc
    state.step = saved["step"]
    state.train_seconds = float(saved["train_seconds"])
    state.sampler.load_state_dict(sampler)
    state.carry = None if note or not saved["carry"] else {k: v.to(state.device) for k, v in saved["carry"].items()}
    state.lr_scale = float(saved.get("lr_scale", 1.0))
    state.rollbacks = saved.get("rollbacks", 0)
    state.skipped_steps = saved.get("skipped_steps", 0)
    state.best_value = best
    set_rng_state(saved["rng"])
    return saved, [note] if note else []


# ---------------------------------------------------------------------------------------------
# What to resume


def _flatten(d: Any, prefix: str = "") -> dict[str, Any]:
    if not isinstance(d, dict):
        return {prefix: d}
    out: dict[str, Any] = {}
    for k, v in d.items():
        out.update(_flatten(v, f"{prefix}.{k}" if prefix else k))
    return out


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
