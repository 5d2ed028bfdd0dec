"""Building blocks shared by the model families.

Weights are stored in float32 and cast to the activations' dtype at use ("casted" layers), so
bf16 training needs no autocast and the optimizer and EMA always see float32. Every reshape of
an activation uses `.reshape()`: attention outputs after a transpose are not contiguous, and
`.view()` on them fails (or, under compile, fails only on some backends).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


def trunc_normal_(tensor: torch.Tensor, std: float, bound: float = 2.0) -> torch.Tensor:
    """Truncated normal on [-bound*std, bound*std] whose standard deviation is exactly `std`
    (torch's version truncates a N(0, std) and so comes out narrower)."""
    if std == 0:
        return tensor.zero_()
    # Variance of a standard normal truncated to [-b, b]: 1 - 2 b phi(b) / (2 Phi(b) - 1).
    phi = math.exp(-0.5 * bound * bound) / math.sqrt(2 * math.pi)
    mass = math.erf(bound / math.sqrt(2))
    corrected = std / math.sqrt(1 - 2 * bound * phi / mass)
    with torch.no_grad():
        return nn.init.trunc_normal_(tensor, mean=0.0, std=corrected, a=-bound * corrected, b=bound * corrected)


def find_multiple(value: float, multiple: int) -> int:
    return int(-(-round(value) // multiple) * multiple)


def rms_norm(x: torch.Tensor, eps: float) -> torch.Tensor:
    """Parameter-free RMSNorm computed in float32, returned in x's dtype."""
    x32 = x.float()
    return (x32 * torch.rsqrt(x32.square().mean(-1, keepdim=True) + eps)).to(x.dtype)


class CastedLinear(nn.Module):
    def __init__(self, in_features: int, out_features: int, bias: bool = False, init_std: float | None = None):
        super().__init__()
        self.weight = nn.Parameter(torch.empty(out_features, in_features))
        trunc_normal_(self.weight, std=1.0 / math.sqrt(in_features) if init_std is None else init_std)
        self.bias = nn.Parameter(torch.zeros(out_features)) if bias else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        bias = None if self.bias is None else self.bias.to(x.dtype)
        return F.linear(x, self.weight.to(x.dtype), bias)


class CastedEmbedding(nn.Module):
    def __init__(self, num_embeddings: int, dim: int, init_std: float, cast_to: torch.dtype):
        super().__init__()
        self.cast_to = cast_to
        self.weight = nn.Parameter(trunc_normal_(torch.empty(num_embeddings, dim), std=init_std))

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return F.embedding(ids, self.weight.to(self.cast_to))


class RotaryEmbedding(nn.Module):
    """cos/sin tables for rotary position embedding, shape (L, head_dim)."""

    def __init__(self, head_dim: int, max_positions: int, base: float):
        super().__init__()
        inv_freq = 1.0 / (base ** (torch.arange(0, head_dim, 2, dtype=torch.float32) / head_dim))
        freqs = torch.outer(torch.arange(max_positions, dtype=torch.float32), inv_freq)  # (L, D/2)
        emb = torch.cat([freqs, freqs], dim=-1)  # (L, D)
        self.register_buffer("cos", emb.cos(), persistent=False)
        self.register_buffer("sin", emb.sin(), persistent=False)

    def forward(self) -> tuple[torch.Tensor, torch.Tensor]:
        return self.cos, self.sin


def _rotate_half(x: torch.Tensor) -> torch.Tensor:
    half = x.shape[-1] // 2
    return torch.cat([-x[..., half:], x[..., :half]], dim=-1)


def apply_rotary(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """x (B, L, H, D) batch-first, sequence second; cos/sin (L, D)."""
    cos = cos[:, None, :].to(x.dtype)  # (L, 1, D) broadcasts over heads
    sin = sin[:, None, :].to(x.dtype)
    return x * cos + _rotate_half(x) * sin


class Attention(nn.Module):
    """Bidirectional multi-head self-attention with a fused QKV projection, batch-first."""

    def __init__(self, hidden_size: int, num_heads: int):
        super().__init__()
        if hidden_size % num_heads:
            raise ValueError(f"arch.hidden_size={hidden_size} is not divisible by arch.num_heads={num_heads}")
        self.num_heads = num_heads
        self.head_dim = hidden_size // num_heads
        self.qkv_proj = CastedLinear(hidden_size, 3 * hidden_size)
        self.o_proj = CastedLinear(hidden_size, hidden_size)

    def forward(self, x: torch.Tensor, rotary: tuple[torch.Tensor, torch.Tensor] | None) -> torch.Tensor:
        batch, length, _ = x.shape  # (B, L, D)
        qkv = self.qkv_proj(x).reshape(batch, length, 3, self.num_heads, self.head_dim)
        q, k, v = qkv.unbind(dim=2)  # each (B, L, H, Dh), non-contiguous views
        if rotary is not None:
            q, k = apply_rotary(q, *rotary), apply_rotary(k, *rotary)
        # SDPA wants (B, H, L, Dh).
        out = F.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), is_causal=False)
        return self.o_proj(out.transpose(1, 2).reshape(batch, length, -1))  # (B, L, D)


class SwiGLU(nn.Module):
    """SwiGLU over the last dimension. `align` > 1 zero-pads that dimension (inputs and the
    matching weight columns/rows) to a multiple of `align` inside the layer: the same sums, but
    GEMM rows a GPU can load aligned (the sequence MLP's 97 positions are 194 bytes in bf16).
    Parameters keep their unpadded shapes.

    The gate and up projections are stored as one weight but applied as two matmuls over its
    row halves: the backward then writes d_gate and d_up as two buffers in one pass, where the
    gradient of a split product is a concatenation that Inductor builds by reading every input
    twice (measured on an H200: +1.1% attention / +2.9% MLP-mixer steps/s, 0.2 GiB less peak
    memory; docs/BENCHMARKS.md)."""

    def __init__(self, hidden_size: int, expansion: float, align: int = 1):
        super().__init__()
        inter = find_multiple(expansion * hidden_size * 2 / 3, 256)
        self.inter = inter
        self.gate_up_proj = CastedLinear(hidden_size, 2 * inter)
        self.down_proj = CastedLinear(inter, hidden_size)
        self.pad = -hidden_size % align

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        w_in = self.gate_up_proj.weight.to(x.dtype)
        w_out = self.down_proj.weight.to(x.dtype)
        if self.pad:
            x_in = F.pad(x, (0, self.pad))
            w_in = F.pad(w_in, (0, self.pad))  # zero columns meet zero inputs
            w_out = F.pad(w_out, (0, 0, 0, self.pad))  # padded outputs are zero
        else:
            x_in = x
        hidden = F.silu(F.linear(x_in, w_in[: self.inter])) * F.linear(x_in, w_in[self.inter :])
        out = F.linear(hidden, w_out)
        return out[..., : x.shape[-1]] if self.pad else out


class Block(nn.Module):
    """A sequence mixer (attention, or an MLP across positions) then a channel SwiGLU, each added
    to the residual stream. Post-norm (TRM's and HRM's block): the sum is RMS-normalised,
    x = norm(x + f(x)). Pre-norm (`prenorm`, for a deep one-pass stack): f reads the normalised
    stream and the sum is left as it is, x = x + f(norm(x)); the stack's owner normalises its output.
    The norm is always over the channels: with the MLP mixer post-norm normalises the transposed
    sum (over positions, TRM's way), pre-norm the stream before it is transposed."""

    def __init__(self, hidden_size: int, num_heads: int, expansion: float, mixer: str, seq_len: int, eps: float,
                 seq_align: int = 1, prenorm: bool = False):
        super().__init__()
        self.mixer = mixer
        self.eps = eps
        self.prenorm = prenorm
        if mixer == "attention":
            self.attn = Attention(hidden_size, num_heads)
        elif mixer == "mlp":
            self.seq_mlp = SwiGLU(seq_len, expansion, align=seq_align)
        else:
            raise ValueError(f"arch.mixer={mixer!r}: expected 'attention' or 'mlp'")
        self.mlp = SwiGLU(hidden_size, expansion)

    def forward(self, x: torch.Tensor, rotary: tuple[torch.Tensor, torch.Tensor] | None) -> torch.Tensor:
        if self.prenorm:
            if self.mixer == "attention":
                x = x + self.attn(rms_norm(x, self.eps), rotary)
            else:
                x = x + self.seq_mlp(rms_norm(x, self.eps).transpose(1, 2)).transpose(1, 2)
            return x + self.mlp(rms_norm(x, self.eps))
        if self.mixer == "attention":
            x = rms_norm(x + self.attn(x, rotary), self.eps)
        else:  # mix along the sequence: (B, L, D) -> (B, D, L) -> MLP over L -> back
            x_t = x.transpose(1, 2)
            x = rms_norm(x_t + self.seq_mlp(x_t), self.eps).transpose(1, 2)
        return rms_norm(x + self.mlp(x), self.eps)
