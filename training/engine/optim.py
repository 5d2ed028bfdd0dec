"""Optimizers and the learning-rate schedule, in plain PyTorch (no CUDA extension needed).

AdamATan2 (Everett et al. 2024, arXiv 2407.05872) replaces Adam's m / (sqrt(v) + eps) by
atan2(m, sqrt(v)): bounded, scale-invariant and free of epsilon. With bias corrections
bc1 = 1 - beta1^t and bc2 = 1 - beta2^t, one step is

    p <- p * (1 - lr * wd)
    m <- beta1 m + (1 - beta1) g ;  v <- beta2 v + (1 - beta2) g^2
    p <- p - (lr / bc1) * atan2(m, sqrt(v) / sqrt(bc2))

which is what the reference's CUDA kernel computes (with its scale constants a = b = 1).

Both optimizers take an optional `ok` (a 0-dim bool tensor on the device): when it is False
the step leaves parameters and moments untouched, decided on the device without a host
sync. The training loop passes "loss and gradients are finite" there. The guarded update's
per-step scalars are device tensors set with fill_ (a kernel launch: no host sync). By default
it is `foreach_guarded_adam_atan2_`: torch's multi-tensor `_foreach_*` ops over all parameters
at once (a few dozen kernel launches whatever the number of tensors, nothing to compile).
`compile_update=True` (`train.compile_optimizer`) compiles `guarded_adam_atan2_` instead: fewer
memory passes, but its cold compile grows with the number of parameter tensors (~6 s for TRM on
an H200, more for deeper models; docs/BENCHMARKS.md, issue 18).
"""

from __future__ import annotations

import math

import torch
from torch.optim import Optimizer


def guarded_adam_atan2_(params: list, grads: list, exp_avgs: list, exp_avg_sqs: list, ok: torch.Tensor,
                        decay: torch.Tensor, step_size: torch.Tensor, inv_bc2_sqrt: torch.Tensor,
                        beta1: float, beta2: float) -> None:
    """One AdamATan2 step over all tensors, applied only where `ok`. decay = 1 - lr * wd,
    step_size = lr / bc1, inv_bc2_sqrt = 1 / sqrt(bc2): 0-dim tensors (or floats)."""
    for p, g, m, v in zip(params, grads, exp_avgs, exp_avg_sqs):
        g = torch.where(ok, g, 0.0)  # a NaN gradient must not reach the moments even when discarded
        new_m = torch.lerp(m, g, 1.0 - beta1)
        new_v = torch.lerp(v, g * g, 1.0 - beta2)
        new_p = p * decay - step_size * torch.atan2(new_m, new_v.sqrt() * inv_bc2_sqrt)
        m.copy_(torch.where(ok, new_m, m))
        v.copy_(torch.where(ok, new_v, v))
        p.copy_(torch.where(ok, new_p, p))


# Below every positive sqrt(v) / sqrt(bc2) (v is 0 or >= the smallest float32, ~1.4e-45, so its root is
# >= 3.7e-23): clamping the denominator to it changes only a zero denominator, where m / TINY is
# +-inf or >= 1e8 in size for |m| >= 1.4e-37 (atan: +-pi/2 in float32, as atan2(m, 0)) and
# 0 / TINY = 0 (atan2(0, 0) = 0). Only a nonzero |m| < 1.4e-37 over v = 0 would differ.
TINY = float(torch.finfo(torch.float32).smallest_normal) * 2.0**-23  # the smallest subnormal float32


def safe_grads(grads: list, ok: torch.Tensor) -> list:
    """The gradients, or zeros where not `ok` (a non-finite gradient must not reach the moments
    even through a zero weight: NaN * 0 is NaN): one concatenation and one masked fill."""
    if len({g.dtype for g in grads}) != 1 or len({g.device for g in grads}) != 1:
        return [torch.where(ok, g, 0.0) for g in grads]
    flat = torch.cat([g.reshape(-1) for g in grads])
    flat.masked_fill_(~ok, 0.0)
    return [part.view_as(g) for part, g in zip(flat.split([g.numel() for g in grads]), grads)]


def foreach_guarded_adam_atan2_(params: list, grads: list, exp_avgs: list, exp_avg_sqs: list, ok: torch.Tensor,
                                decay: torch.Tensor, step_size: torch.Tensor, inv_bc2_sqrt: torch.Tensor,
                                beta1: float, beta2: float) -> None:
    """guarded_adam_atan2_ with multi-tensor ops (torch >= 2.4: the Tensor overload of
    _foreach_mul_ takes the device-side weights). Where `ok` is False every weight is 0 and the
    decay 1, so parameters and moments keep their values (x + 0 and x * 1: exact, up to the
    sign of a zero). Where it is True the same quantities as the eager function, rounded in
    another order (the moments as b m + (1 - b) g, not lerp's m + (1 - b)(g - m)) and with
    atan2(m, d) = atan(m / d) for d >= 0 (no foreach atan2; TINY above handles d = 0): a few
    ulps apart. ~30 passes over the parameters' size (a fused kernel: 7). decay, step_size, inv_bc2_sqrt: 0-dim tensors on the parameters' device."""
    decay, step_size, inv_bc2_sqrt = (torch.as_tensor(x, dtype=torch.float32, device=ok.device)
                                      for x in (decay, step_size, inv_bc2_sqrt))
    g = safe_grads(grads, ok)
    # m <- b1 m + (1 - b1) g, v <- b2 v + (1 - b2) g^2 (lerp's result, rounded in another order):
    # where not ok the factors are 1 and g is 0
    torch._foreach_mul_(exp_avgs, torch.where(ok, beta1, 1.0).to(torch.float32))
    torch._foreach_add_(exp_avgs, g, alpha=1.0 - beta1)
    torch._foreach_mul_(exp_avg_sqs, torch.where(ok, beta2, 1.0).to(torch.float32))
    torch._foreach_addcmul_(exp_avg_sqs, g, g, value=1.0 - beta2)
    del g
    denom = torch._foreach_sqrt(exp_avg_sqs)
    torch._foreach_mul_(denom, inv_bc2_sqrt)
    torch._foreach_clamp_min_(denom, TINY)
    update = torch._foreach_div(exp_avgs, denom)
    del denom
    torch._foreach_atan_(update)
    torch._foreach_mul_(update, torch.where(ok, -step_size, 0.0))
    torch._foreach_mul_(params, torch.where(ok, decay, 1.0))
    torch._foreach_add_(params, update)


class AdamATan2(Optimizer):
    def __init__(self, params, lr: float = 1e-4, betas: tuple[float, float] = (0.9, 0.95), weight_decay: float = 0.0,
                 compile_update: bool = False):
        if lr < 0 or weight_decay < 0 or not all(0.0 <= b < 1.0 for b in betas):
            raise ValueError(f"AdamATan2: invalid lr={lr}, betas={betas} or weight_decay={weight_decay}")
        super().__init__(params, dict(lr=lr, betas=tuple(betas), weight_decay=weight_decay, step=0))
        self._update = (torch.compile(guarded_adam_atan2_, dynamic=False) if compile_update
                        else foreach_guarded_adam_atan2_)
        self._scalars: dict[torch.device, torch.Tensor] = {}
        for group in self.param_groups:
            for p in group["params"]:  # moments exist from the start (guarded steps update them in place)
                self.state[p]["exp_avg"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                self.state[p]["exp_avg_sq"] = torch.zeros_like(p, memory_format=torch.preserve_format)

    @torch.no_grad()
    def step(self, closure=None, ok: torch.Tensor | None = None):
        if closure is not None:
            raise ValueError("AdamATan2 does not take a closure")
        for group in self.param_groups:
            params = [p for p in group["params"] if p.grad is not None]
            if not params:
                continue
            grads = [p.grad for p in params]
            if ok is not None:
                self._guarded_step(group, params, grads, ok)
                continue
            exp_avgs = [self.state[p]["exp_avg"] for p in params]
            exp_avg_sqs = [self.state[p]["exp_avg_sq"] for p in params]
            group["step"] += 1
            lr, wd, (beta1, beta2), t = group["lr"], group["weight_decay"], group["betas"], group["step"]

            if wd:
                torch._foreach_mul_(params, 1.0 - lr * wd)
            torch._foreach_lerp_(exp_avgs, grads, 1.0 - beta1)
            torch._foreach_lerp_(exp_avg_sqs, torch._foreach_mul(grads, grads), 1.0 - beta2)
            step_size = lr / (1.0 - beta1**t)
            inv_bc2_sqrt = 1.0 / math.sqrt(1.0 - beta2**t)
            denoms = torch._foreach_sqrt(exp_avg_sqs)
            torch._foreach_mul_(denoms, inv_bc2_sqrt)
            for p, m, d in zip(params, exp_avgs, denoms):
                p.add_(torch.atan2(m, d), alpha=-step_size)
        return None

    def _guarded_step(self, group: dict, params: list, grads: list, ok: torch.Tensor) -> None:
        """The update kept only where `ok`, with no host sync (see foreach_guarded_adam_atan2_)."""
        group["step"] += 1
        lr, wd, (beta1, beta2), t = group["lr"], group["weight_decay"], group["betas"], group["step"]
        device = params[0].device
        if device not in self._scalars:
            self._scalars[device] = torch.zeros(3, device=device)
        scalars = self._scalars[device]  # decay, step size, 1/sqrt(bc2): refilled in place every step
        scalars[0].fill_(1.0 - lr * wd)
        scalars[1].fill_(lr / (1.0 - beta1**t))
        scalars[2].fill_(1.0 / math.sqrt(1.0 - beta2**t))
        exp_avgs = [self.state[p]["exp_avg"] for p in params]
        exp_avg_sqs = [self.state[p]["exp_avg_sq"] for p in params]
        self._update(params, grads, exp_avgs, exp_avg_sqs, ok, scalars[0], scalars[1], scalars[2], beta1, beta2)


class SignSGD(Optimizer):
    """Sign descent with decoupled weight decay for the puzzle embedding table.

    Only rows that received gradient this step (the puzzles in the batch) are updated or
    decayed, as in the reference's sparse embedding optimizer.
    """

    def __init__(self, params, lr: float = 1e-2, weight_decay: float = 0.0):
        super().__init__(params, dict(lr=lr, weight_decay=weight_decay))

    @torch.no_grad()
    def step(self, closure=None, ok: torch.Tensor | None = None):
        if closure is not None:
            raise ValueError("SignSGD does not take a closure")
        for group in self.param_groups:
            lr, wd = group["lr"], group["weight_decay"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                touched = (p.grad != 0).any(dim=-1, keepdim=True)  # (rows, 1)
                if ok is not None:
                    touched = touched & ok
                updated = p * (1.0 - lr * wd) - lr * torch.sign(p.grad)
                p.copy_(torch.where(touched, updated, p))
        return None


def cosine_to_floor(progress: float, min_ratio: float) -> float:
    """The decay factor both schedules share: 1 at progress 0, min_ratio at progress 1."""
    return min_ratio + (1.0 - min_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))


def lr_at(step: int, base_lr: float, warmup_steps: int, total_steps: int, min_ratio: float) -> float:
    """Linear warmup to base_lr, then cosine decay to base_lr * min_ratio at total_steps.

    `step` counts optimizer steps already taken, so the first update uses lr_at(1, ...)."""
    if step < warmup_steps:
        return base_lr * step / max(1, warmup_steps)
    progress = min(1.0, (step - warmup_steps) / max(1, total_steps - warmup_steps))
    return base_lr * cosine_to_floor(progress, min_ratio)


def lr_at_time(step: int, seconds: float, base_lr: float, warmup_steps: int, budget_seconds: float,
               min_ratio: float) -> float:
    """optim.lr_schedule_clock=time: the linear warm-up over `warmup_steps` steps (as lr_at's)
    times a cosine decay from 1 to min_ratio over the time budget, at `seconds` of it spent;
    base_lr * min_ratio from the budget on.

    The factors multiply, so the schedule is continuous: when the budget ends before the warm-up
    does, the LR still falls to (at most) the floor, and the decay that the warm-up's own seconds
    (the first step's compile among them) spend is not made up afterwards."""
    ramp = step / warmup_steps if step < warmup_steps else 1.0
    progress = min(1.0, seconds / budget_seconds)
    return base_lr * ramp * cosine_to_floor(progress, min_ratio)


def set_lr(optimizer: Optimizer, lr: float) -> None:
    for group in optimizer.param_groups:
        group["lr"] = lr
