"""Tiny Recursive Model (TRM, arXiv 2510.04871) with adaptive computation time (ACT).

One small network is applied recursively: `L_cycles` times it refines a latent state from the
current answer and the input, then once it refines the answer from the latent; this repeats
`H_cycles` times, only the last repetition keeping gradients. That is one ACT step. The
answer and latent (the "carry") persist across training batches; a Q head on the first
position decides when an example halts, and halted examples are replaced by fresh ones.
"""

from __future__ import annotations

import math
from typing import Literal, Optional

import pydantic
import torch
from torch import nn

from models.layers import Block, CastedEmbedding, CastedLinear, RotaryEmbedding, trunc_normal_

Carry = dict[str, torch.Tensor]
DATA_KEYS = ("inputs", "labels", "puzzle_identifiers")


class TRMConfig(pydantic.BaseModel):
    model_config = pydantic.ConfigDict(extra="forbid")

    name: Literal["trm"] = "trm"
    hidden_size: int = pydantic.Field(512, ge=1)
    num_heads: int = pydantic.Field(8, ge=1)
    expansion: float = pydantic.Field(4.0, gt=0)
    num_layers: int = pydantic.Field(2, ge=1, description="blocks in the shared network (L_layers)")
    H_cycles: int = pydantic.Field(3, ge=1, description="answer refinements per ACT step")
    L_cycles: int = pydantic.Field(6, ge=1, description="latent refinements per answer refinement")
    mixer: Literal["attention", "mlp"] = "attention"
    seq_mlp_align: int = pydantic.Field(
        8, ge=1, description="mlp mixer: zero-pad the sequence inside the sequence MLP to a multiple of this "
        "(same sums; aligned GEMM rows on GPUs); 1 = no padding")
    pos_encodings: Literal["rope", "learned", "none"] = "rope"
    rope_theta: float = 10000.0
    puzzle_emb_ndim: Optional[int] = pydantic.Field(None, ge=0, description="None = hidden_size; 0 = no puzzle embedding")
    puzzle_emb_len: int = pydantic.Field(16, ge=0, description="prefix positions for the puzzle embedding (0 = derive)")
    halt_max_steps: int = pydantic.Field(16, ge=1)
    halt_exploration_prob: float = pydantic.Field(0.1, ge=0, le=1)
    no_act_continue: bool = pydantic.Field(True, description="halt on sigmoid(q_halt) > 0.5 alone (TRM default)")
    act_halting: bool = pydantic.Field(
        True, description="let the Q head halt examples early in training; false = every example trains for "
        "halt_max_steps steps (deep supervision at every depth that evaluation uses)")
    forward_dtype: Literal["auto", "bfloat16", "float16", "float32"] = "auto"
    rms_norm_eps: float = 1e-5
    loss: Literal["stablemax", "softmax"] = "stablemax"
    q_loss_weight: float = 0.5

    @pydantic.model_validator(mode="after")
    def _check(self) -> "TRMConfig":
        if self.mixer == "attention" and self.hidden_size % self.num_heads:
            raise ValueError(f"hidden_size={self.hidden_size} must be divisible by num_heads={self.num_heads}")
        if self.pos_encodings == "rope" and self.mixer == "attention" and (self.hidden_size // self.num_heads) % 2:
            raise ValueError("rope needs an even head dimension (hidden_size / num_heads)")
        if self.emb_ndim > self.prefix_len * self.hidden_size:
            raise ValueError(
                f"puzzle_emb_ndim={self.emb_ndim} does not fit in puzzle_emb_len={self.puzzle_emb_len} x hidden_size={self.hidden_size}"
            )
        return self

    @property
    def emb_ndim(self) -> int:
        return self.hidden_size if self.puzzle_emb_ndim is None else self.puzzle_emb_ndim

    @property
    def prefix_len(self) -> int:
        if self.emb_ndim == 0:
            return 0
        return self.puzzle_emb_len or -(-self.emb_ndim // self.hidden_size)


def resolve_dtype(name: str, device: torch.device) -> torch.dtype:
    if name == "auto":
        return torch.bfloat16 if device.type == "cuda" else torch.float32
    return getattr(torch, name)


class TRM(nn.Module):
    """forward(carry, batch) -> (new carry, outputs). Shapes: tokens (B, L); states (B, P+L, D)."""

    def __init__(self, cfg: TRMConfig, vocab_size: int, seq_len: int, num_puzzle_identifiers: int, dtype: torch.dtype):
        super().__init__()
        self.cfg = cfg
        self.dtype = dtype
        self.seq_len = seq_len
        self.prefix_len = cfg.prefix_len
        total_len = self.prefix_len + seq_len
        hidden = cfg.hidden_size
        self.embed_scale = math.sqrt(hidden)
        self.embed_tokens = CastedEmbedding(vocab_size, hidden, init_std=1.0 / self.embed_scale, cast_to=dtype)
        # Puzzle embedding: zero-initialised, trained with sign-SGD (see training/optim.py).
        self.puzzle_emb = nn.Parameter(torch.zeros(num_puzzle_identifiers, cfg.emb_ndim)) if cfg.emb_ndim else None
        self.rotary = None
        if cfg.pos_encodings == "rope" and cfg.mixer == "attention":
            self.rotary = RotaryEmbedding(hidden // cfg.num_heads, total_len, cfg.rope_theta)
        self.embed_pos = None
        if cfg.pos_encodings == "learned":
            self.embed_pos = CastedEmbedding(total_len, hidden, init_std=1.0 / self.embed_scale, cast_to=dtype)
        self.blocks = nn.ModuleList(
            Block(hidden, cfg.num_heads, cfg.expansion, cfg.mixer, total_len, cfg.rms_norm_eps, cfg.seq_mlp_align)
            for _ in range(cfg.num_layers)
        )
        self.lm_head = CastedLinear(hidden, vocab_size)
        self.q_head = CastedLinear(hidden, 2, bias=True)
        with torch.no_grad():  # start by never halting early: sigmoid(-5) ~ 0.007
            self.q_head.weight.zero_()
            self.q_head.bias.fill_(-5.0)
        self.register_buffer("answer_init", trunc_normal_(torch.empty(hidden), std=1.0))
        self.register_buffer("latent_init", trunc_normal_(torch.empty(hidden), std=1.0))

    # ----- pieces -------------------------------------------------------------------------

    def embed(self, inputs: torch.Tensor, puzzle_identifiers: torch.Tensor) -> torch.Tensor:
        x = self.embed_tokens(inputs)  # (B, L, D)
        if self.puzzle_emb is not None:
            prefix = self.puzzle_emb.index_select(0, puzzle_identifiers.long()).to(self.dtype)  # (B, E)
            pad = self.prefix_len * self.cfg.hidden_size - prefix.shape[-1]
            prefix = nn.functional.pad(prefix, (0, pad)).reshape(-1, self.prefix_len, self.cfg.hidden_size)
            x = torch.cat([prefix, x], dim=1)  # (B, P+L, D)
        if self.embed_pos is not None:
            x = 0.707106781 * (x + self.embed_pos.weight.to(self.dtype))
        return self.embed_scale * x

    def net(self, hidden: torch.Tensor, injection: torch.Tensor) -> torch.Tensor:
        """The one shared network: add the injection, then the blocks. (B, P+L, D) -> same."""
        rotary = self.rotary() if self.rotary is not None else None
        hidden = hidden + injection
        for block in self.blocks:
            hidden = block(hidden, rotary)
        return hidden

    def recurse(self, z_answer: torch.Tensor, z_latent: torch.Tensor, x: torch.Tensor):
        """H_cycles x (L_cycles latent updates + 1 answer update); gradients only in the last."""
        cfg = self.cfg
        with torch.no_grad():
            for _ in range(cfg.H_cycles - 1):
                for _ in range(cfg.L_cycles):
                    z_latent = self.net(z_latent, z_answer + x)
                z_answer = self.net(z_answer, z_latent)
        for _ in range(cfg.L_cycles):
            z_latent = self.net(z_latent, z_answer + x)
        z_answer = self.net(z_answer, z_latent)
        return z_answer, z_latent

    def heads(self, z_answer: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        logits = self.lm_head(z_answer[:, self.prefix_len :])  # (B, L, V)
        q_logits = self.q_head(z_answer[:, 0]).float()  # (B, 2): halt, continue
        return logits, q_logits

    def step_flops(self, batch_size: int, training: bool = True) -> float:
        """Matrix FLOPs of one ACT step (2 per multiply-add), counting only matmuls and attention.

        One application of the shared network on T = B * (P + L) tokens costs, per block,
          attention mixer: 2T(4D^2 + 3DI) + 4 B (P+L)^2 D     (QKV, O, SwiGLU; scores and values)
          MLP mixer:       2T(3DI) + 2 B D (3 (P+L) I_seq)     (channel and sequence SwiGLU)
        A step applies the network H_cycles (L_cycles + 1) times; training adds the backward of
        the last cycle at twice the forward: (L_cycles + 1) * 2 more. The LM head adds 2TDV
        (times 3 with its backward). The reference setup (B 768, P+L 97, D 512, 2 blocks, H 3,
        L 6) comes to 3.66e13, the 70 block-applications quoted for it.
        """
        cfg = self.cfg
        length = self.prefix_len + self.seq_len
        tokens = batch_size * length
        dim = cfg.hidden_size
        block = self.blocks[0]
        inter = block.mlp.down_proj.weight.shape[1]
        per_block = 2 * tokens * 3 * dim * inter
        if cfg.mixer == "attention":
            per_block += 2 * tokens * 4 * dim * dim + 4 * batch_size * length * length * dim
        else:
            seq_inter = block.seq_mlp.down_proj.weight.shape[1]
            per_block += 2 * batch_size * dim * 3 * length * seq_inter
        applications = cfg.H_cycles * (cfg.L_cycles + 1) + (2 * (cfg.L_cycles + 1) if training else 0)
        head = 2 * batch_size * self.seq_len * dim * self.lm_head.weight.shape[0] * (3 if training else 1)
        return float(per_block * cfg.num_layers * applications + head)

    # ----- ACT ----------------------------------------------------------------------------

    def initial_carry(self, batch: dict[str, torch.Tensor]) -> Carry:
        """All examples 'halted', so the first step loads a fresh batch everywhere."""
        size, device = batch["inputs"].shape[0], batch["inputs"].device
        shape = (size, self.prefix_len + self.seq_len, self.cfg.hidden_size)
        carry = {
            "z_answer": torch.zeros(shape, dtype=self.dtype, device=device),
            "z_latent": torch.zeros(shape, dtype=self.dtype, device=device),
            "steps": torch.zeros(size, dtype=torch.int32, device=device),
            "halted": torch.ones(size, dtype=torch.bool, device=device),
        }
        carry.update({k: torch.zeros_like(batch[k]) for k in DATA_KEYS})
        return carry

    def halt_decision(self, outputs: dict[str, torch.Tensor]) -> torch.Tensor:
        """(B,) bool: where the Q head says "halt" (training's rule, without exploration)."""
        if self.cfg.no_act_continue:
            return outputs["q_halt_logits"] > 0
        return outputs["q_halt_logits"] > outputs["q_continue_logits"]

    def forward(self, carry: Carry, batch: dict[str, torch.Tensor]) -> tuple[Carry, dict[str, torch.Tensor]]:
        cfg = self.cfg
        halted = carry["halted"]
        # Halted examples restart from the initial state on the new batch's data.
        data = {k: torch.where(halted.reshape((-1,) + (1,) * (batch[k].ndim - 1)), batch[k], carry[k]) for k in DATA_KEYS}
        z_answer = torch.where(halted[:, None, None], self.answer_init.to(self.dtype), carry["z_answer"])
        z_latent = torch.where(halted[:, None, None], self.latent_init.to(self.dtype), carry["z_latent"])
        steps = torch.where(halted, 0, carry["steps"]) + 1

        x = self.embed(data["inputs"], data["puzzle_identifiers"])
        z_answer, z_latent = self.recurse(z_answer, z_latent, x)
        logits, q_logits = self.heads(z_answer)
        outputs = {"logits": logits, "q_halt_logits": q_logits[:, 0], "q_continue_logits": q_logits[:, 1]}

        with torch.no_grad():
            new_halted = steps >= cfg.halt_max_steps
            if self.training and cfg.halt_max_steps > 1 and cfg.act_halting:
                new_halted = new_halted | self.halt_decision(outputs)
                # Exploration: sometimes force a random minimum number of steps.
                explore = torch.rand_like(outputs["q_halt_logits"]) < cfg.halt_exploration_prob
                min_steps = torch.randint_like(steps, 2, cfg.halt_max_steps + 1)
                new_halted = new_halted & (steps >= explore * min_steps)
                if not cfg.no_act_continue:
                    # Q-learning target for "continue": the next step's value (one more recursion).
                    next_answer, _ = self.recurse(z_answer, z_latent, x)
                    _, next_q = self.heads(next_answer)
                    last = steps >= cfg.halt_max_steps
                    outputs["target_q_continue"] = torch.sigmoid(
                        torch.where(last, next_q[:, 0], torch.maximum(next_q[:, 0], next_q[:, 1]))
                    )

        new_carry = {"z_answer": z_answer.detach(), "z_latent": z_latent.detach(), "steps": steps, "halted": new_halted}
        new_carry.update(data)
        return new_carry, outputs
