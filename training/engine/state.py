"""The train state: everything training changes, saved and restored as one object.

`TrainState.state_dict()` / `load_state_dict()` follow the protocol torch.distributed.checkpoint
calls Stateful. The state dict has four parts, one checkpoint file each (training/engine/checkpoint.py):
  model  the weights (uncompiled names)
  ema    the EMA's shadow weights
  optim  both optimizers
  state  step, training seconds (and the agreed clock: below), LR scale, rollbacks, skipped
         steps, best metric, the data sampler's position, the ACT carry, every RNG (Python,
         numpy, torch CPU and CUDA) and the wandb run id.
Loading checks every field against this model and config before anything is changed (a bad
one is a CheckpointError naming the file and field), so a restored run continues exactly: on
a CPU, bit for bit (tests/test_resilience.py).
"""

from __future__ import annotations

import math
import random
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional

import numpy as np
import torch
from torch import nn

from dataset.loader import IGNORE_LABEL_ID, DeviceArrays, PuzzleDataset, TrainSampler
from training.engine.checkpoint import CheckpointError, check_field as _check, check_tensors
from training.config import Config
from training.engine.curriculum import DepthSchedule
from training.engine.distributed import World, all_gather_object, gather_rows
from training.engine.ema import EMA
from training.engine.optim import AdamATan2, SignSGD

WANDB_ID = re.compile(r"[A-Za-z0-9_-]{1,64}")
MAX_LR, MAX_WEIGHT_DECAY = 10.0, 1e3  # beyond these an update overflows float32 (and no recipe comes near)


@dataclass
class TrainState:
    """Built by training/engine/setup.py, advanced by `loop.train_step`, checkpointed as a whole."""

    cfg: Config
    device: torch.device
    data: PuzzleDataset
    train_arrays: DeviceArrays
    eval_arrays: DeviceArrays  # the split evaluation scores (data.eval_split)
    sampler: TrainSampler
    model: nn.Module
    step_fn: Callable  # the (compiled) ACTLossHead
    adam: AdamATan2
    sign: Optional[SignSGD]
    ema: Optional[EMA]
    total_steps: int
    compiled: bool
    train_fn: Optional[Callable] = None  # step_fn, wrapped in DDP when there are several ranks
    world: World = field(default_factory=World)
    clip_params: list = field(default_factory=list)
    step: int = 0
    train_seconds: float = 0.0
    carry: Optional[dict[str, torch.Tensor]] = None
    lr_scale: float = 1.0  # lowered by each rollback
    rollbacks: int = 0
    skipped_steps: int = 0  # non-finite steps so far (read back at log time)
    best_value: Optional[float] = None
    wandb_id: Optional[str] = None
    bad_in_a_row: Optional[torch.Tensor] = None  # device counter of consecutive skipped steps
    depth_schedule: Optional[DepthSchedule] = None  # train.depth_curriculum (training/engine/curriculum.py)
    # The clock every rank agrees on: the most training seconds any rank counted at the last log
    # step (a multiple of train.log_every; training/loop.py). The LR schedule's clock with
    # optim.lr_schedule_clock=time, and the depth curriculum's (by: time) under torchrun. Saved with
    # the checkpoint, so a resumed run continues with the value the uninterrupted one had; a
    # checkpoint written before it was saved restores it as its train_seconds.
    agreed_seconds: float = 0.0

    # ----- saving ------------------------------------------------------------------------------

    def state_dict(self) -> dict[str, Any]:
        """With several ranks every rank must call this (it gathers): the ACT carry is saved
        whole, its rows in rank order (rank r holds rows r*b..(r+1)*b of the global batch, as the
        sampler hands them out), and each rank's torch RNG state beside rank 0's RNGs."""
        world = self.world
        carry = {}
        if self.carry is not None:
            carry = {k: gather_rows(v.detach(), world).cpu() for k, v in self.carry.items()}
        rngs = all_gather_object(torch_rng_state(), world) if world.distributed else None
        return {
            "model": self.model.state_dict(),
            "ema": self.ema.state_dict() if self.ema is not None else {},
            "optim": {"adam": self.adam.state_dict(), "sign": self.sign.state_dict() if self.sign is not None else {}},
            "state": {
                "step": self.step,
                "train_seconds": self.train_seconds,
                "agreed_seconds": self.agreed_seconds,
                "sampler": self.sampler.state_dict(),
                "carry": carry,
                "rng": rng_state(),
                **({"rank_rngs": rngs} if rngs is not None else {}),
                "lr_scale": self.lr_scale,
                "rollbacks": self.rollbacks,
                "skipped_steps": self.skipped_steps,
                "best_value": self.best_value,
                "wandb_id": self.wandb_id,
            },
        }

    # ----- restoring ---------------------------------------------------------------------------

    def load_state_dict(self, state_dict: dict[str, Any], source: Path = Path("state_dict")) -> list[str]:
        """Check every part against this model and config, then apply it. `source` is the
        checkpoint directory the parts came from (`<part>.pt` each), for the messages. Returns
        notes for the log (e.g. a carry rebuilt for another batch size)."""
        files = {part: source / f"{part}.pt" for part in ("model", "ema", "optim", "state")}
        for part in files:
            _check(part in state_dict, files[part], "(file)", "is missing")
        own = {name: t.detach() for name, t in self.model.state_dict().items()}
        check_tensors(state_dict["model"], own, files["model"], "model")
        if self.ema is not None:
            params = dict(self.model.named_parameters())
            check_tensors(state_dict["ema"], {n: params[n].detach().float() for n in self.ema.names}, files["ema"], "ema")
        optim = state_dict["optim"]
        _check(isinstance(optim, dict) and "adam" in optim, files["optim"], "adam", "is missing")
        check_optimizer(optim["adam"], self.adam, files["optim"], "adam")
        if self.sign is not None:
            _check("sign" in optim, files["optim"], "sign", "is missing")
            check_optimizer(optim["sign"], self.sign, files["optim"], "sign")
        saved = state_dict["state"]
        check_saved_state(saved, self, files["state"])
        notes = [n for n in (check_carry(self, saved["carry"], files["state"]),
                             check_rank_rngs(saved.get("rank_rngs"), self.world, files["state"])) if n]

        # Everything checked: apply.
        self.model.load_state_dict(state_dict["model"], strict=True)
        if self.ema is not None:
            self.ema.load_state_dict(state_dict["ema"])
        try:
            self.adam.load_state_dict(optim["adam"])
            if self.sign is not None:
                self.sign.load_state_dict(optim["sign"])
        except (KeyError, ValueError, RuntimeError) as exc:
            raise CheckpointError(f"{files['optim']}: does not fit this model's optimizers ({exc})") from exc
        self.step = saved["step"]
        self.train_seconds = float(saved["train_seconds"])
        self.agreed_seconds = float(saved.get("agreed_seconds", self.train_seconds))
        self.sampler.load_state_dict(saved["sampler"])
        self.carry = None
        if saved["carry"] and not any("carry" in n for n in notes):  # this rank's rows of the global carry
            rows = slice(self.world.rank * self.sampler.local_batch_size, (self.world.rank + 1) * self.sampler.local_batch_size)
            self.carry = {k: v[rows].to(self.device) for k, v in saved["carry"].items()}
        self.lr_scale = float(saved.get("lr_scale", 1.0))
        self.rollbacks = saved.get("rollbacks", 0)
        self.skipped_steps = saved.get("skipped_steps", 0)
        self.best_value = saved.get("best_value")
        self.wandb_id = saved.get("wandb_id")
        set_rng_state(saved["rng"])
        rank_rngs = saved.get("rank_rngs")
        if self.world.distributed and rank_rngs is not None and len(rank_rngs) == self.world.world_size:
            set_torch_rng_state(rank_rngs[self.world.rank])
        return notes


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


def torch_rng_state() -> dict[str, Any]:
    """This rank's torch generators (the ones a model's random draws use)."""
    state = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_torch_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available() and len(state["cuda"]) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(state["cuda"])


def set_rng_state(state: dict[str, Any]) -> None:
    random.setstate(state["python"])
    n = state["numpy"]
    np.random.set_state((n["kind"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["cached_gaussian"]))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available() and len(state["cuda"]) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(state["cuda"])


# ---------------------------------------------------------------------------------------------
# Checks of a saved state (each names the file and field)


def _int(value: Any, lo: int = 0, hi: Optional[int] = None) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= lo and (hi is None or value <= hi)


def _float(value: Any, lo: float = 0.0, hi: float = math.inf) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value) and lo <= value <= hi


def check_optimizer(saved: Any, optimizer: torch.optim.Optimizer, path: Path, field: str) -> None:
    _check(isinstance(saved, dict) and isinstance(saved.get("state"), dict) and isinstance(saved.get("param_groups"), list),
           path, field, "is not an optimizer state (state, param_groups)")
    groups = saved["param_groups"]
    _check(len(groups) == len(optimizer.param_groups), path, f"{field}.param_groups",
           f"has {len(groups)} groups, the optimizer {len(optimizer.param_groups)}")
    for g, (group, own) in enumerate(zip(groups, optimizer.param_groups)):
        where = f"{field}.param_groups[{g}]"
        _check(isinstance(group, dict) and isinstance(group.get("params"), list)
               and len(group["params"]) == len(own["params"]), path, where, "does not fit this model's parameters")
        for key, most in (("lr", MAX_LR), ("weight_decay", MAX_WEIGHT_DECAY)):
            _check(_float(group.get(key, 0.0), 0.0, most), path, f"{where}.{key}",
                   f"is {group.get(key)!r}, expected a number in 0..{most:g}")
        if "step" in group:
            _check(_int(group["step"]), path, f"{where}.step", f"is {group['step']!r}, expected an integer >= 0")
        if "betas" in group:
            betas = group["betas"]
            _check(isinstance(betas, (list, tuple)) and len(betas) == 2 and all(_float(b, 0.0, 0.999999) for b in betas),
                   path, f"{where}.betas", f"is {betas!r}, expected two numbers in [0, 1)")
    own_state = optimizer.state_dict()["state"]
    _check(set(saved["state"]) == set(own_state), path, f"{field}.state",
           f"holds entries for parameters {sorted(saved['state'], key=str)[:5]}, this optimizer for {sorted(own_state)[:5]}")
    for index, entry in saved["state"].items():
        _check(isinstance(entry, dict) and set(entry) == set(own_state[index]), path, f"{field}.state[{index}]",
               f"holds {sorted(entry) if isinstance(entry, dict) else type(entry).__name__}, expected "
               f"{sorted(own_state[index])}")
        for key, value in entry.items():
            where, want = f"{field}.state[{index}].{key}", own_state[index][key]
            if isinstance(want, torch.Tensor):
                _check(isinstance(value, torch.Tensor) and value.shape == want.shape and value.is_floating_point()
                       and value.layout == torch.strided, path, where,
                       f"is {tuple(value.shape) if isinstance(value, torch.Tensor) else type(value).__name__}, "
                       f"expected a dense float tensor of shape {tuple(want.shape)}")
                _check(bool(torch.isfinite(value).all()), path, where, "holds NaN or infinite values")


def check_rng(rng: Any, path: Path) -> None:
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
    # An all-zero Mersenne Twister key is a degenerate generator (python and numpy then draw 0.0
    # forever); torch refuses it ("Invalid mt19937 state").
    _check(any(python[1][:624]), path, "rng.python", "is all zeros (not a usable random state)")
    _check(bool(n["keys"].any()), path, "rng.numpy", "is all zeros (not a usable random state)")
    _check(usable_torch_rng(rng["torch"]), path, "rng.torch", "is not a usable torch CPU generator state")


def usable_torch_rng(state: Any) -> bool:
    """Whether `state` is a torch CPU generator state that torch accepts (tried on a new generator)."""
    if not (isinstance(state, torch.Tensor) and state.dtype == torch.uint8 and state.shape == torch.get_rng_state().shape):
        return False
    try:
        torch.Generator().set_state(state)
    except RuntimeError:
        return False
    return True


def check_rank_rngs(rank_rngs: Any, world: World, path: Path) -> Optional[str]:
    """Per-rank torch RNG states of a multi-rank run: used as they are with as many ranks,
    otherwise every rank continues from rank 0's (said in the log)."""
    if rank_rngs is None:
        return None if not world.distributed else (
            f"the checkpoint was written by one process: the {world.world_size} ranks' random streams start from its one")
    _check(isinstance(rank_rngs, list) and rank_rngs and all(
        isinstance(r, dict) and usable_torch_rng(r.get("torch")) for r in rank_rngs), path, "rank_rngs",
        "is not a list of usable torch RNG states")
    if len(rank_rngs) != world.world_size:
        return (f"the checkpoint was written by {len(rank_rngs)} ranks, this run has {world.world_size}: the random "
                "streams (halting exploration) restart from rank 0's, so the run continues, but not bit for bit")
    return None


def check_saved_state(saved: Any, state: TrainState, path: Path) -> None:
    """The scalar fields, the sampler position and the RNG states of state.pt."""
    _check(isinstance(saved, dict), path, "(top level)", f"is a {type(saved).__name__}, expected a mapping")
    for key in ("step", "train_seconds", "sampler", "carry", "rng"):
        _check(key in saved, path, key, "is missing")
    _check(_int(saved["step"]), path, "step", f"is {saved['step']!r}, expected an integer >= 0")
    _check(_float(saved["train_seconds"]), path, "train_seconds", f"is {saved['train_seconds']!r}, expected a number >= 0")
    _check(_float(saved.get("agreed_seconds", 0.0)), path, "agreed_seconds",
           f"is {saved.get('agreed_seconds')!r}, expected a number >= 0")
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
    check_rng(saved["rng"], path)


def check_carry(state: TrainState, carry: Any, path: Path) -> Optional[str]:
    """Check a saved ACT carry against this model and config; returns a note when the carry
    must be rebuilt (another global batch size) instead of used."""
    _check(isinstance(carry, dict), path, "carry", f"is a {type(carry).__name__}, expected a mapping of tensors")
    if not carry:
        return None
    batch_size = state.cfg.train.global_batch_size
    reference = state.model.initial_carry(state.train_arrays.gather(np.zeros(batch_size, dtype=np.int64)))
    reference = {k: v.cpu() for k, v in reference.items()}
    first = next(iter(carry.values()))
    saved_batch = first.shape[0] if isinstance(first, torch.Tensor) and first.ndim else None
    if saved_batch is not None and saved_batch != batch_size:
        check_tensors(carry, {k: v.new_zeros((saved_batch,) + tuple(v.shape[1:])) for k, v in reference.items()},
                      path, "carry")
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
