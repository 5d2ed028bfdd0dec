"""What every model family shares: the common config fields, the input embedding (tokens, a
puzzle-embedding prefix, positions), the output and Q heads, the ACT carry and its bookkeeping
(restarting halted examples, halting, exploration, the Q-continue bootstrap target) and FLOP
counting. ACTLossHead (models/losses.py) and training/engine/evaluation.py see only this interface.

A family subclasses `ACTModel`: it names its carried latent states in `STATES`, builds its
blocks in `build_core`, and implements `core(states, x) -> (states, answer)`, one ACT step's
computation (keeping gradients only where the family wants them); its config says how many
block applications one step makes (`block_applications`, for FLOP counts and the bounds below).
"""

from __future__ import annotations

import math
from typing import ClassVar, Literal, Optional

import pydantic
import torch
from torch import nn

from models.layers import Block, CastedEmbedding, CastedLinear, RotaryEmbedding, find_multiple, trunc_normal_

Carry = dict[str, torch.Tensor]

# Bounds that keep one step finite in time and memory, whatever a config, a checkpoint's
# config.json or an export's config.json says (`halt_max_steps: 1e9` would spin for days).
# Generous: 10-100x beyond the published setups (TRM: hidden 512, 2 layers, H 3, L 6, 16 steps).
MAX_HIDDEN_SIZE = 16384
MAX_NUM_HEADS = 1024
MAX_LAYERS = 256  # blocks in one stack: num_layers, H_layers, L_layers
MAX_CYCLES = 1024  # H_cycles, L_cycles
MAX_HALT_STEPS = 1024  # halt_max_steps: ACT steps to answer one example
MAX_PUZZLE_EMB_LEN = 1024  # prefix positions
MAX_SEQ_MLP_ALIGN = 1024
MAX_ROPE_THETA = 1e12
MAX_Q_LOSS_WEIGHT = 1e3
# Block applications to answer one example (per ACT step x halt_max_steps); TRM's setup: 42 x 16 = 672.
MAX_BLOCK_APPLICATIONS = 1 << 17
# The dataset facts a model is shaped by (from dataset.json, a checkpoint's meta.json or an export).
MAX_VOCAB_SIZE = 1 << 20
MAX_SEQ_LEN = 1 << 16
MAX_PUZZLE_IDENTIFIERS = 1 << 28
MAX_PARAMETERS = 1 << 33  # 32 GiB of float32 weights
# Matrix FLOPs to answer one example (halt_max_steps forward ACT steps): about a second of an H200
# at its peak; TRM's Sudoku setup needs 4e11, a 30x30 maze 5e12.
MAX_EXAMPLE_FLOPS = 1e15
# Matrix FLOPs of one ACT step over a whole batch (training: with its backward; evaluation: the
# eval batch): about 100 s of an H200 at its peak; TRM's reference training step is 3.7e13.
MAX_STEP_FLOPS = 1e17
DATA_KEYS = ("inputs", "labels", "puzzle_identifiers")
Rotary = Optional[tuple[torch.Tensor, torch.Tensor]]


class ModelConfig(pydantic.BaseModel):
    """Fields every family has; a family's config adds its own and sets `name`."""

    model_config = pydantic.ConfigDict(extra="forbid")
    # The fields that set how deep one ACT step recurses, which training's depth curriculum may
    # lower (train.depth_curriculum; ACTModel.cycles); empty for a family that does not recurse.
    CYCLE_FIELDS: ClassVar[tuple[str, ...]] = ()

    name: str
    hidden_size: int = pydantic.Field(512, ge=1, le=MAX_HIDDEN_SIZE)
    num_heads: int = pydantic.Field(8, ge=1, le=MAX_NUM_HEADS)
    expansion: float = pydantic.Field(4.0, gt=0, le=64)
    mixer: Literal["attention", "mlp"] = "attention"
    seq_mlp_align: int = pydantic.Field(
        8, ge=1, le=MAX_SEQ_MLP_ALIGN, description="mlp mixer: zero-pad the sequence inside the sequence MLP to a multiple of this "
        "(same sums; aligned GEMM rows on GPUs); 1 = no padding")
    pos_encodings: Literal["rope", "learned", "none"] = "rope"
    rope_theta: float = pydantic.Field(10000.0, gt=0, le=MAX_ROPE_THETA)
    puzzle_emb_ndim: Optional[int] = pydantic.Field(None, ge=0, le=MAX_PUZZLE_EMB_LEN * MAX_HIDDEN_SIZE, description="None = hidden_size; 0 = no puzzle embedding")
    puzzle_emb_len: int = pydantic.Field(16, ge=0, le=MAX_PUZZLE_EMB_LEN, description="prefix positions for the puzzle embedding (0 = derive)")
    halt_max_steps: int = pydantic.Field(16, ge=1, le=MAX_HALT_STEPS)
    halt_exploration_prob: float = pydantic.Field(0.1, ge=0, le=1)
    no_act_continue: bool = pydantic.Field(
        True, description="true: halt on sigmoid(q_halt) > 0.5 alone (TRM); false: halt when q_halt > q_continue "
        "and train q_continue towards a bootstrapped target, the next step's value (HRM's Q-learning)")
    act_halting: bool = pydantic.Field(
        True, description="let the Q head halt examples early in training; false = every example trains for "
        "halt_max_steps steps (deep supervision at every depth that evaluation uses)")
    forward_dtype: Literal["auto", "bfloat16", "float16", "float32"] = "auto"
    rms_norm_eps: float = pydantic.Field(1e-5, gt=0, lt=1)
    loss: Literal["stablemax", "softmax"] = "stablemax"
    q_loss_weight: float = pydantic.Field(0.5, ge=0, le=MAX_Q_LOSS_WEIGHT)

    @pydantic.model_validator(mode="after")
    def _check_shapes(self) -> "ModelConfig":
        if self.puzzle_emb_ndim is None:  # recorded as the number it means: a run's config.json, then a resume,
            self.puzzle_emb_ndim = self.hidden_size  # compare the same value whether it was written or left out
        if round(self.expansion * self.hidden_size * 2 / 3) < 1:
            raise ValueError(f"expansion={self.expansion} x hidden_size={self.hidden_size} leaves the MLP no width")
        if self.mixer == "attention" and self.hidden_size % self.num_heads:
            raise ValueError(f"hidden_size={self.hidden_size} must be divisible by num_heads={self.num_heads}")
        if self.pos_encodings == "rope" and self.mixer == "attention" and (self.hidden_size // self.num_heads) % 2:
            raise ValueError("rope needs an even head dimension (hidden_size / num_heads)")
        if self.emb_ndim > self.prefix_len * self.hidden_size:
            raise ValueError(
                f"puzzle_emb_ndim={self.emb_ndim} does not fit in puzzle_emb_len={self.puzzle_emb_len} x hidden_size={self.hidden_size}"
            )
        forward = self.block_applications()[0] if type(self).block_applications is not ModelConfig.block_applications else 0
        if forward * self.halt_max_steps > MAX_BLOCK_APPLICATIONS:
            raise ValueError(f"{self.depth_text()} x halt_max_steps={self.halt_max_steps} = "
                             f"{forward * self.halt_max_steps} block applications per example, more than "
                             f"{MAX_BLOCK_APPLICATIONS} (models/act.py: MAX_BLOCK_APPLICATIONS)")
        return self

    def block_applications(self) -> tuple[int, int]:
        """Block applications in one ACT step: (forward, of which with gradients)."""
        raise NotImplementedError

    def num_blocks(self) -> int:
        """Blocks the family builds (for the parameter count before building)."""
        raise NotImplementedError

    def depth_text(self) -> str:
        """The fields behind block_applications, for messages ("H_cycles=3 x ...")."""
        raise NotImplementedError

    @property
    def emb_ndim(self) -> int:
        return self.hidden_size if self.puzzle_emb_ndim is None else self.puzzle_emb_ndim

    @property
    def prefix_len(self) -> int:
        if self.emb_ndim == 0:
            return 0
        return self.puzzle_emb_len or -(-self.emb_ndim // self.hidden_size)


def block_flops(cfg: ModelConfig, total_len: int) -> int:
    """Matrix FLOPs of one block application to one example of `total_len` positions (the
    formula of ACTModel.step_flops)."""
    dim, inter = cfg.hidden_size, find_multiple(cfg.expansion * cfg.hidden_size * 2 / 3, 256)
    flops = 2 * total_len * 3 * dim * inter
    if cfg.mixer == "attention":
        return flops + 2 * total_len * 4 * dim * dim + 4 * total_len * total_len * dim
    return flops + 2 * dim * 3 * total_len * find_multiple(cfg.expansion * total_len * 2 / 3, 256)


def model_cost(cfg: ModelConfig, vocab_size: int, seq_len: int, num_puzzle_identifiers: int) -> tuple[int, float]:
    """(parameters, forward matrix FLOPs of one ACT step for one example), from the config and
    the dataset facts alone, before anything is built; the parameters roughly (matrices only)."""
    dim, total_len = cfg.hidden_size, cfg.prefix_len + seq_len
    inter = find_multiple(cfg.expansion * dim * 2 / 3, 256)
    per_block = 3 * dim * inter + (4 * dim * dim if cfg.mixer == "attention" else
                                   3 * total_len * find_multiple(cfg.expansion * total_len * 2 / 3, 256))
    parameters = cfg.num_blocks() * per_block + 2 * vocab_size * dim + num_puzzle_identifiers * cfg.emb_ndim
    forward = cfg.block_applications()[0] * block_flops(cfg, total_len) + 2 * seq_len * dim * vocab_size
    return parameters, float(forward)


def check_model_cost(cfg: ModelConfig, vocab_size: int, seq_len: int, num_puzzle_identifiers: int) -> None:
    """Refuse (ValueError naming the fields and the bound) a model that would not fit in memory
    or would take too long per example: checked before it is built, wherever its config came from."""
    for name, value, bound, constant in (
            ("vocab_size", vocab_size, MAX_VOCAB_SIZE, "MAX_VOCAB_SIZE"), ("seq_len", seq_len, MAX_SEQ_LEN, "MAX_SEQ_LEN"),
            ("num_puzzle_identifiers", num_puzzle_identifiers, MAX_PUZZLE_IDENTIFIERS, "MAX_PUZZLE_IDENTIFIERS")):
        if value > bound:
            raise ValueError(f"data.{name}={value} is more than {bound} (models/act.py: {constant})")
    parameters, step = model_cost(cfg, vocab_size, seq_len, num_puzzle_identifiers)
    shape = f"hidden_size={cfg.hidden_size}, vocab_size={vocab_size}, seq_len={seq_len}"
    if parameters > MAX_PARAMETERS:
        raise ValueError(f"arch ({shape}, num_puzzle_identifiers={num_puzzle_identifiers}, puzzle_emb_ndim="
                         f"{cfg.emb_ndim}): about {parameters:.3g} parameters, more than {MAX_PARAMETERS:.3g} "
                         "(models/act.py: MAX_PARAMETERS)")
    if step * cfg.halt_max_steps > MAX_EXAMPLE_FLOPS:
        raise ValueError(f"arch ({shape}, {cfg.depth_text()}, halt_max_steps={cfg.halt_max_steps}): "
                         f"{step * cfg.halt_max_steps:.3g} FLOPs to answer one example, more than "
                         f"{MAX_EXAMPLE_FLOPS:.3g} (models/act.py: MAX_EXAMPLE_FLOPS)")


def check_step_cost(cfg: ModelConfig, vocab_size: int, seq_len: int, batch_size: int, training: bool, what: str) -> None:
    """Refuse a batch whose one ACT step (training: with its backward) would take longer than
    MAX_STEP_FLOPS allows; `what` names the batch size's field in the message."""
    forward, with_grad = cfg.block_applications()
    total_len = cfg.prefix_len + seq_len
    bootstrap = not cfg.no_act_continue and cfg.act_halting and cfg.halt_max_steps > 1
    applications = forward + (2 * with_grad + (forward if bootstrap else 0) if training else 0)
    head = 2 * seq_len * cfg.hidden_size * vocab_size * (3 if training else 1)
    flops = float(batch_size) * (applications * block_flops(cfg, total_len) + head)
    if flops > MAX_STEP_FLOPS:
        raise ValueError(f"{what} with arch (hidden_size={cfg.hidden_size}, {cfg.depth_text()}) and seq_len={seq_len}: "
                         f"{flops:.3g} FLOPs per {'training' if training else 'evaluation'} step, more than "
                         f"{MAX_STEP_FLOPS:.3g} (models/act.py: MAX_STEP_FLOPS)")


def resolve_dtype(name: str, device: torch.device) -> torch.dtype:
    if name == "auto":
        return torch.bfloat16 if device.type == "cuda" else torch.float32
    return getattr(torch, name)


def apply_block(block: nn.Module, hidden: torch.Tensor, rotary: Rotary) -> torch.Tensor:
    return block(hidden, rotary)


# One block application as a nested compile region (torch >= 2.8): torch.compile traces it once
# and stamps the compiled code out at every call (both blocks, every recursion, with and without
# gradients as two variants) instead of unrolling 42 copies into the step's graph. None on older
# torch, where the step is compiled unrolled (training/engine/setup.py: compile_step).
block_region = (torch.compiler.nested_compile_region(apply_block)
                if hasattr(torch, "compiler") and hasattr(torch.compiler, "nested_compile_region") else None)


class ACTModel(nn.Module):
    """forward(carry, batch) -> (new carry, outputs). Shapes: tokens (B, L); states (B, P+L, D).

    The parameters are registered in a fixed order (embeddings, the family's blocks, heads,
    state inits) so that the random initialisation and checkpoint layouts stay stable."""

    # carry key of each latent state -> name of the buffer holding its initial value (D,)
    STATES: dict[str, str] = {}
    # Apply each block as a nested compile region (set by training.engine.setup.compile_step).
    block_regions: bool = False
    # Training's depth curriculum (train.depth_curriculum, set before each step by training/loop.py):
    # cycle counts (CYCLE_FIELDS) a training step runs instead of the config's; None: the config's.
    # Eval mode always runs the config's depth (`cycles`).
    depth_override: Optional[dict[str, int]] = None

    def __init__(self, cfg: ModelConfig, vocab_size: int, seq_len: int, num_puzzle_identifiers: int, dtype: torch.dtype):
        super().__init__()
        self.cfg = cfg
        self.dtype = dtype
        self.seq_len = seq_len
        self.prefix_len = cfg.prefix_len
        self.total_len = self.prefix_len + seq_len
        hidden = cfg.hidden_size
        self.embed_scale = math.sqrt(hidden)
        self.embed_tokens = CastedEmbedding(vocab_size, hidden, init_std=1.0 / self.embed_scale, cast_to=dtype)
        # Puzzle embedding: a parameter (so it counts in parameter totals), zero-initialised,
        # trained with sign-SGD rather than AdamATan2 (training/loop.py, training/engine/optim.py).
        self.puzzle_emb = nn.Parameter(torch.zeros(num_puzzle_identifiers, cfg.emb_ndim)) if cfg.emb_ndim else None
        self.rotary = None
        if cfg.pos_encodings == "rope" and cfg.mixer == "attention":
            self.rotary = RotaryEmbedding(hidden // cfg.num_heads, self.total_len, cfg.rope_theta)
        self.embed_pos = None
        if cfg.pos_encodings == "learned":
            self.embed_pos = CastedEmbedding(self.total_len, hidden, init_std=1.0 / self.embed_scale, cast_to=dtype)
        self.build_core()
        self.lm_head = CastedLinear(hidden, vocab_size)
        self.q_head = CastedLinear(hidden, 2, bias=True)
        with torch.no_grad():  # start by never halting early: sigmoid(-5) ~ 0.007
            self.q_head.weight.zero_()
            self.q_head.bias.fill_(-5.0)
        for buffer in self.STATES.values():
            self.register_buffer(buffer, trunc_normal_(torch.empty(hidden), std=1.0))

    # ----- what a family provides -----------------------------------------------------------

    def build_core(self) -> None:
        """Create the family's blocks (called between the embeddings and the heads)."""
        raise NotImplementedError

    def core(self, states: tuple[torch.Tensor, ...], x: torch.Tensor) -> tuple[tuple[torch.Tensor, ...], torch.Tensor]:
        """One ACT step from the carried states and the input embedding x (B, P+L, D):
        returns the new states (in STATES order) and the hidden the heads read (B, P+L, D)."""
        raise NotImplementedError

    def block_applications(self) -> tuple[int, int]:
        """Block applications in one ACT step: (forward, of which with gradients)."""
        return self.cfg.block_applications()

    # ----- shared pieces --------------------------------------------------------------------

    def cycles(self, field: str) -> int:
        """The cycle count `field` (one of the config's CYCLE_FIELDS) this step runs: the
        curriculum's lower value in training mode while it has one, else the config's."""
        if self.training and self.depth_override is not None and field in self.depth_override:
            return self.depth_override[field]
        return getattr(self.cfg, field)

    def make_blocks(self, count: int, prenorm: bool = False) -> nn.ModuleList:
        cfg = self.cfg
        return nn.ModuleList(
            Block(cfg.hidden_size, cfg.num_heads, cfg.expansion, cfg.mixer, self.total_len, cfg.rms_norm_eps,
                  cfg.seq_mlp_align, prenorm)
            for _ in range(count)
        )

    def run_blocks(self, blocks: nn.ModuleList, hidden: torch.Tensor, rotary: Rotary) -> torch.Tensor:
        """A stack of blocks, (B, P+L, D) -> same."""
        apply = block_region if self.block_regions and block_region is not None else apply_block
        for block in blocks:
            hidden = apply(block, hidden, rotary)
        return hidden

    def rotary_tables(self) -> Rotary:
        return self.rotary() if self.rotary is not None else None

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

    def heads(self, hidden: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        logits = self.lm_head(hidden[:, self.prefix_len :])  # (B, L, V)
        q_logits = self.q_head(hidden[:, 0]).float()  # (B, 2): halt, continue
        return logits, q_logits

    def step_flops(self, batch_size: int, training: bool = True) -> float:
        """Matrix FLOPs of one ACT step (2 per multiply-add), counting only matmuls and attention.

        One block application on T = B * (P + L) tokens costs
          attention mixer: 2T(4D^2 + 3DI) + 4 B (P+L)^2 D     (QKV, O, SwiGLU; scores and values)
          MLP mixer:       2T(3DI) + 2 B D (3 (P+L) I_seq)     (channel and sequence SwiGLU)
        times the family's forward applications, plus twice those with gradients in training
        (the backward), plus in training the Q-continue target's extra forward where it is on.
        The LM head adds 2TDV (times 3 with its backward). TRM's reference setup (B 768,
        P+L 97, D 512, 2 blocks, H 3, L 6) comes to 3.66e13, the 70 block-applications quoted for it.
        """
        forward, with_grad = self.block_applications()
        applications = forward
        if training:
            applications += 2 * with_grad + (forward if self.bootstraps_q_continue else 0)
        head = 2 * self.seq_len * self.cfg.hidden_size * self.lm_head.weight.shape[0] * (3 if training else 1)
        return float(batch_size * (block_flops(self.cfg, self.total_len) * applications + head))

    # ----- ACT ----------------------------------------------------------------------------

    @property
    def bootstraps_q_continue(self) -> bool:
        """Whether training computes the Q-continue target (one more no-grad step)."""
        cfg = self.cfg
        return not cfg.no_act_continue and cfg.act_halting and cfg.halt_max_steps > 1

    def initial_carry(self, batch: dict[str, torch.Tensor]) -> Carry:
        """All examples 'halted', so the first step loads a fresh batch everywhere."""
        size, device = batch["inputs"].shape[0], batch["inputs"].device
        shape = (size, self.total_len, self.cfg.hidden_size)
        carry = {key: torch.zeros(shape, dtype=self.dtype, device=device) for key in self.STATES}
        carry["steps"] = torch.zeros(size, dtype=torch.int32, device=device)
        carry["halted"] = torch.ones(size, dtype=torch.bool, device=device)
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
        states = tuple(torch.where(halted[:, None, None], getattr(self, buffer).to(self.dtype), carry[key])
                       for key, buffer in self.STATES.items())
        steps = torch.where(halted, 0, carry["steps"]) + 1

        x = self.embed(data["inputs"], data["puzzle_identifiers"])
        states, answer = self.core(states, x)
        logits, q_logits = self.heads(answer)
        outputs = {"logits": logits, "q_halt_logits": q_logits[:, 0], "q_continue_logits": q_logits[:, 1]}

        with torch.no_grad():
            new_halted = steps >= cfg.halt_max_steps
            if self.training and cfg.halt_max_steps > 1 and cfg.act_halting:
                new_halted = new_halted | self.halt_decision(outputs)
                # Exploration: sometimes force a random minimum number of steps.
                explore = torch.rand_like(outputs["q_halt_logits"]) < cfg.halt_exploration_prob
                min_steps = torch.randint_like(steps, 2, cfg.halt_max_steps + 1)
                new_halted = new_halted & (steps >= explore * min_steps)
                if self.bootstraps_q_continue:
                    # Q-learning target for "continue": the next step's value (one more step).
                    _, next_answer = self.core(states, x)
                    _, next_q = self.heads(next_answer)
                    last = steps >= cfg.halt_max_steps
                    outputs["target_q_continue"] = torch.sigmoid(
                        torch.where(last, next_q[:, 0], torch.maximum(next_q[:, 0], next_q[:, 1]))
                    )

        new_carry = {key: state.detach() for key, state in zip(self.STATES, states)}
        new_carry.update({"steps": steps, "halted": new_halted})
        new_carry.update(data)
        return new_carry, outputs
