"""Hierarchical Reasoning Model (HRM, arXiv 2506.21734) with adaptive computation time (ACT).

Two recurrent modules, each its own stack of blocks: a low-level module L updates every inner
step from its state, the high-level state and the input (z_L <- L(z_L + z_H + x)); the
high-level module H updates once every `L_cycles` L-steps from its state and the low-level
state (z_H <- H(z_H + z_L)). One ACT step runs `H_cycles` x `L_cycles` L-updates and
`H_cycles` H-updates; the answer and the Q head read z_H.

The one-step gradient approximation: every update but the final L-update and the final
H-update runs without gradients, so backward costs one L- and one H-application whatever the
cycle counts (the paper's replacement for backpropagation through time or implicit
differentiation at the fixed point). ACT as in the paper: a Q head with halt and continue
logits, the continue logit trained towards a bootstrapped next-step target
(`no_act_continue: false`, handled in models/act.py), exploration as in TRM.
"""

from __future__ import annotations

from typing import Literal

import pydantic
import torch

from models.act import MAX_CYCLES, MAX_LAYERS, ACTModel, ModelConfig


class HRMConfig(ModelConfig):
    """Hierarchical Reasoning Model (arXiv 2506.21734), the paper's setup: a low-level module L and a high-level
    module H, 4 blocks each; per ACT step H_cycles x L_cycles L-updates and H_cycles H-updates, gradients only
    through the last of each (the one-step gradient); Q-learning ACT.

    Compute per training step (cfg_lsa shape): forward 2 x (2 x 4 + 4) = 24 block applications, backward
    2 x (4 + 4) = 16, the Q-continue target's no-grad forward 24: 64, against TRM's 70.
    """

    CYCLE_FIELDS = ("H_cycles", "L_cycles")

    name: Literal["hrm"] = "hrm"
    H_layers: int = pydantic.Field(4, ge=1, le=MAX_LAYERS, description="blocks in the high-level module")
    L_layers: int = pydantic.Field(4, ge=1, le=MAX_LAYERS, description="blocks in the low-level module")
    H_cycles: int = pydantic.Field(2, ge=1, le=MAX_CYCLES, description="high-level updates per ACT step (N in the paper)")
    L_cycles: int = pydantic.Field(2, ge=1, le=MAX_CYCLES, description="low-level updates per high-level update (T in the paper)")
    no_act_continue: bool = pydantic.Field(
        False, description="false (HRM): halt when q_halt > q_continue, q_continue trained towards the next "
        "step's value; true: halt on sigmoid(q_halt) > 0.5 alone (TRM)")

    def block_applications(self) -> tuple[int, int]:
        return self.H_cycles * (self.L_cycles * self.L_layers + self.H_layers), self.L_layers + self.H_layers

    def num_blocks(self) -> int:
        return self.H_layers + self.L_layers

    def depth_text(self) -> str:
        return (f"H_cycles={self.H_cycles} x (L_cycles={self.L_cycles} x L_layers={self.L_layers} + "
                f"H_layers={self.H_layers})")


class HRM(ACTModel):
    """The carry holds the high- and low-level states, each (B, P+L, D)."""

    STATES = {"z_high": "high_init", "z_low": "low_init"}

    def build_core(self) -> None:
        self.high_blocks = self.make_blocks(self.cfg.H_layers)
        self.low_blocks = self.make_blocks(self.cfg.L_layers)

    def low(self, z_low: torch.Tensor, z_high: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        return self.run_blocks(self.low_blocks, z_low + z_high + x, self.rotary_tables())  # (B, P+L, D)

    def high(self, z_high: torch.Tensor, z_low: torch.Tensor) -> torch.Tensor:
        return self.run_blocks(self.high_blocks, z_high + z_low, self.rotary_tables())  # (B, P+L, D)

    def core(self, states, x):
        h_cycles, l_cycles = self.cycles("H_cycles"), self.cycles("L_cycles")  # the config's or the curriculum's
        z_high, z_low = states
        with torch.no_grad():  # all but the last L- and H-update: no gradients (one-step gradient)
            for h in range(h_cycles):
                last_h = h == h_cycles - 1
                for _ in range(l_cycles - 1 if last_h else l_cycles):
                    z_low = self.low(z_low, z_high, x)
                if not last_h:
                    z_high = self.high(z_high, z_low)
        z_low = self.low(z_low, z_high, x)
        z_high = self.high(z_high, z_low)
        return (z_high, z_low), z_high
