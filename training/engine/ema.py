"""Exponential moving average of the model's parameters, used for evaluation.

The shadow weights are float32 tensors beside the model; `swapped()` copies them into the
model in place (and back), so compiled graphs keep pointing at the same parameter storage
and no second model or deep copy of the train state is made.
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator

import torch
from torch import nn


def guarded_ema_(shadow: list, params: list, ok: torch.Tensor, weight: float) -> None:
    """shadow <- lerp(shadow, param, weight) where `ok`, for every tensor."""
    for s, p in zip(shadow, params):
        s.copy_(torch.where(ok, torch.lerp(s, p.detach().float(), weight), s))


def foreach_guarded_ema_(shadow: list, params: list, ok: torch.Tensor, weight: float) -> None:
    """guarded_ema_ with multi-tensor ops and no compile: shadow + w (param - shadow), lerp's
    arithmetic for a weight < 0.5, with w = weight where `ok` and 0 elsewhere (shadow + 0:
    unchanged). The parameters are finite here: a step that would have made them not was skipped."""
    w = ok.to(torch.float32) * weight
    delta = torch._foreach_sub([p.detach().float() for p in params], shadow)
    torch._foreach_mul_(delta, w)
    torch._foreach_add_(shadow, delta)


class EMA:
    """`compile_update` (train.compile_optimizer) compiles guarded_ema_; by default the guarded
    update is foreach_guarded_ema_ (a few multi-tensor kernels, nothing to compile)."""

    def __init__(self, model: nn.Module, rate: float, compile_update: bool = False):
        if not 0.0 <= rate < 1.0:
            raise ValueError(f"train.ema_rate={rate}: must lie in [0, 1)")
        self.rate = rate
        self._update = torch.compile(guarded_ema_, dynamic=False) if compile_update else foreach_guarded_ema_
        self.names = [name for name, _ in model.named_parameters()]
        self.params = [p for _, p in model.named_parameters()]
        self.shadow = [p.detach().clone().float() for p in self.params]
        self._backup: list[torch.Tensor] | None = None

    @torch.no_grad()
    def update(self, ok: torch.Tensor | None = None) -> None:
        """shadow <- rate * shadow + (1 - rate) * param; skipped where `ok` is False."""
        if ok is None:
            torch._foreach_lerp_(self.shadow, [p.detach() for p in self.params], 1.0 - self.rate)
            return
        self._update(self.shadow, self.params, ok, 1.0 - self.rate)

    @contextmanager
    def swapped(self) -> Iterator[None]:
        """Within the block the model holds the EMA weights; its own come back afterwards."""
        with torch.no_grad():
            if self._backup is None:
                self._backup = [torch.empty_like(p) for p in self.params]
            torch._foreach_copy_(self._backup, self.params)
            torch._foreach_copy_(self.params, self.shadow)
        try:
            yield
        finally:
            with torch.no_grad():
                torch._foreach_copy_(self.params, self._backup)

    def state_dict(self) -> dict[str, torch.Tensor]:
        return dict(zip(self.names, self.shadow))

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        missing = set(self.names) - set(state)
        if missing:
            raise KeyError(f"EMA state lacks parameters: {sorted(missing)}")
        with torch.no_grad():
            for name, shadow in zip(self.names, self.shadow):
                shadow.copy_(state[name])
