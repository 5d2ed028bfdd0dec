"""Tiny Recursive Model (TRM, arXiv 2510.04871) with adaptive computation time (ACT).

One small network is applied recursively: `L_cycles` times it refines a latent state from the
current answer and the input, then once it refines the answer from the latent; this repeats
`H_cycles` times, only the last repetition keeping gradients. That is one ACT step. The
answer and latent (the "carry") persist across training batches; a Q head on the first
position decides when an example halts, and halted examples are replaced by fresh ones
(the ACT machinery, embeddings and heads: models/act.py).
"""

from __future__ import annotations

from typing import Literal

import pydantic
import torch

from models.act import MAX_CYCLES, MAX_LAYERS, ACTModel, ModelConfig, resolve_dtype

__all__ = ["TRM", "TRMConfig", "resolve_dtype"]


class TRMConfig(ModelConfig):
    """Tiny Recursive Model, attention mixer (the paper's default for fixed-size grids). `arch=trm_mlp`: an MLP
    across the sequence instead."""

    CYCLE_FIELDS = ("H_cycles", "L_cycles")

    name: Literal["trm"] = "trm"
    num_layers: int = pydantic.Field(2, ge=1, le=MAX_LAYERS, description="blocks in the shared network (L_layers)")
    H_cycles: int = pydantic.Field(3, ge=1, le=MAX_CYCLES, description="answer refinements per ACT step")
    L_cycles: int = pydantic.Field(6, ge=1, le=MAX_CYCLES, description="latent refinements per answer refinement")

    def block_applications(self) -> tuple[int, int]:
        return self.H_cycles * (self.L_cycles + 1) * self.num_layers, (self.L_cycles + 1) * self.num_layers

    def num_blocks(self) -> int:
        return self.num_layers

    def depth_text(self) -> str:
        return f"H_cycles={self.H_cycles} x (L_cycles={self.L_cycles} + 1) x num_layers={self.num_layers}"


class TRM(ACTModel):
    """The carry holds the answer and the latent state, each (B, P+L, D)."""

    STATES = {"z_answer": "answer_init", "z_latent": "latent_init"}

    def build_core(self) -> None:
        self.blocks = self.make_blocks(self.cfg.num_layers)

    def net(self, hidden: torch.Tensor, injection: torch.Tensor) -> torch.Tensor:
        """The one shared network: add the injection, then the blocks. (B, P+L, D) -> same."""
        return self.run_blocks(self.blocks, hidden + injection, self.rotary_tables())

    def recurse(self, z_answer: torch.Tensor, z_latent: torch.Tensor, x: torch.Tensor):
        """H_cycles x (L_cycles latent updates + 1 answer update); gradients only in the last.
        (The counts: `cycles`, the config's or, in training, the depth curriculum's.)"""
        h_cycles, l_cycles = self.cycles("H_cycles"), self.cycles("L_cycles")
        with torch.no_grad():
            for _ in range(h_cycles - 1):
                for _ in range(l_cycles):
                    z_latent = self.net(z_latent, z_answer + x)
                z_answer = self.net(z_answer, z_latent)
        for _ in range(l_cycles):
            z_latent = self.net(z_latent, z_answer + x)
        z_answer = self.net(z_answer, z_latent)
        return z_answer, z_latent

    def core(self, states, x):
        z_answer, z_latent = self.recurse(*states, x)
        return (z_answer, z_latent), z_answer
