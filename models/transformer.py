"""A plain, non-recursive transformer baseline over the same input as TRM and HRM.

The puzzle-embedding prefix and the tokens go through `num_layers` blocks once; the output is
the answer. There is no latent state to carry, so with the default `halt_max_steps: 1` every
example is one pass in training and in evaluation. It presents the same ACT interface (an
empty carry of latent states, a Q head that learns "is this answer right") so the loss head,
the loop, the evaluators and checkpoints treat it like the recursive models. With
`halt_max_steps` > 1 each ACT step recomputes the same pass on the same examples: it only
repeats their supervision (the evaluation's extra steps then cost time and change nothing).
"""

from __future__ import annotations

from typing import Any, Literal

import pydantic

from models.act import MAX_HALT_STEPS, MAX_LAYERS, ACTModel, ModelConfig
from models.layers import rms_norm


class TransformerConfig(ModelConfig):
    """A plain transformer: the same input (puzzle-embedding prefix + tokens) through num_layers blocks once; no
    recursion, no carried state, one pass per example (halt_max_steps 1; its ACT settings matter only above 1).

    The default depth matches TRM's default training compute (2 layers, H_cycles 3, L_cycles 6): TRM applies
    its 2-layer net 3 x (6 + 1) = 21 times per ACT step, 42 block applications forward, and back-propagates
    through the last H cycle only, (6 + 1) x 2 = 14 blocks, at twice the forward's cost: 42 + 2 x 14 = 70 block
    applications per training step. A transformer of N layers costs N + 2N = 3N: N = 23 gives 69, so a
    training step costs the same within 2% (attention and the LM head scale alike). Other matches:
    arch.num_layers=2 (TRM's parameters), 14 (TRM's depth with gradients).
    """

    name: Literal["transformer"] = "transformer"
    num_layers: int = pydantic.Field(23, ge=1, le=MAX_LAYERS, description="blocks, applied once (23: TRM's training FLOPs per step)")
    halt_max_steps: int = pydantic.Field(1, ge=1, le=MAX_HALT_STEPS, description="1: one pass per example (no state is carried)")
    norm: Literal["post", "pre"] = pydantic.Field(
        "post", description="post: TRM's post-norm block, x = norm(x + f(x)); pre: x = x + f(norm(x)), the output "
        "normalised once (a deep post-norm stack starts with every position's output alike: docs/USAGE.md)")

    @pydantic.model_validator(mode="before")
    @classmethod
    def _no_recursion_fields(cls, raw: Any) -> Any:
        if isinstance(raw, dict):
            foreign = [k for k in ("H_cycles", "L_cycles", "H_layers", "L_layers") if k in raw]
            if foreign:
                raise ValueError(
                    f"{', arch.'.join(foreign)}: the transformer does not recurse, its depth is num_layers "
                    f"(drop a task preset's TRM sizes with {' '.join('~arch.' + k for k in foreign)})")
        return raw

    def block_applications(self) -> tuple[int, int]:
        return self.num_layers, self.num_layers

    def num_blocks(self) -> int:
        return self.num_layers

    def depth_text(self) -> str:
        return f"num_layers={self.num_layers}"


class Transformer(ACTModel):
    """No carried states: core() is one pass of the blocks over the embedded input."""

    STATES: dict[str, str] = {}

    def build_core(self) -> None:
        self.blocks = self.make_blocks(self.cfg.num_layers, prenorm=self.cfg.norm == "pre")

    def core(self, states, x):
        hidden = self.run_blocks(self.blocks, x, self.rotary_tables())  # (B, P+L, D)
        return (), rms_norm(hidden, self.cfg.rms_norm_eps) if self.cfg.norm == "pre" else hidden
