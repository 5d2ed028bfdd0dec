"""Run scripts/benchmark.py or scripts/profile_step.py with experimental variants patched in.

    python docs/benchmarks/2026-11-22-speed3/variants.py VARIANTS scripts/benchmark.py [its args]

VARIANTS, joined by '+' ('base' for none):
  split   SwiGLU's gate and up as two matmuls over row slices of the same gate_up weight (the
          backward then writes d_gate and d_up as two buffers instead of one concatenated one).
          It became the model's own SwiGLU at 82be0b2, so the name is kept only for the
          scripts that used it and patches nothing
  fused   the former SwiGLU: one matmul for gate and up, its output chunked in two
  qkvsplit attention's Q, K and V as three matmuls over row slices of the qkv weight (no stack
          of dq, dk, dv in the backward)
  bhld    attention's Q, K, V permuted to (B, H, L, Dh) before the rotary, not after it
  concat  Inductor lowers two-input cats/stacks as ConcatKernel (producers write into slices)
          instead of one pointwise kernel that recomputes every input per output half
  ropecat rotary written as cat(x1 c - x2 s, x2 c + x1 s) (the same products and sums as
          x cos + rotate_half(x) sin, without the rotate_half cat of the input)
"""

import runpy
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[3]
sys.path.insert(0, str(REPO))

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from models import layers  # noqa: E402


def fused_forward(self, x):
    w_in = self.gate_up_proj.weight.to(x.dtype)
    w_out = self.down_proj.weight.to(x.dtype)
    if self.pad:
        w_in, x_in = F.pad(w_in, (0, self.pad)), F.pad(x, (0, self.pad))
        w_out = F.pad(w_out, (0, 0, 0, self.pad))
    else:
        x_in = x
    gate, up = F.linear(x_in, w_in).chunk(2, dim=-1)
    out = F.linear(F.silu(gate) * up, w_out)
    return out[..., : x.shape[-1]] if self.pad else out


def qkvsplit_forward(self, x, rotary):
    batch, length, dim = x.shape
    w = self.qkv_proj.weight.to(x.dtype)
    q, k, v = (F.linear(x, w[i * dim:(i + 1) * dim]).reshape(batch, length, self.num_heads, self.head_dim)
               for i in range(3))
    if rotary is not None:
        q, k = layers.apply_rotary(q, *rotary), layers.apply_rotary(k, *rotary)
    out = F.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), is_causal=False)
    return self.o_proj(out.transpose(1, 2).reshape(batch, length, -1))


def bhld_forward(self, x, rotary):
    batch, length, _ = x.shape
    qkv = self.qkv_proj(x).reshape(batch, length, 3, self.num_heads, self.head_dim)
    q, k, v = qkv.permute(2, 0, 3, 1, 4).unbind(0)  # each (B, H, L, Dh)
    if rotary is not None:
        cos, sin = (t.to(x.dtype) for t in rotary)  # (L, Dh) broadcasts over (B, H)
        q, k = (t * cos + layers._rotate_half(t) * sin for t in (q, k))
    out = F.scaled_dot_product_attention(q, k, v, is_causal=False)
    return self.o_proj(out.transpose(1, 2).reshape(batch, length, -1))


def ropecat_apply(x, cos, sin):
    half = x.shape[-1] // 2
    c = cos[:, None, :half].to(x.dtype)
    s = sin[:, None, :half].to(x.dtype)
    x1, x2 = x[..., :half], x[..., half:]
    return torch.cat([x1 * c - x2 * s, x2 * c + x1 * s], dim=-1)


def main():
    # The patches must live in a real module: runpy replaces __main__, and Dynamo's guards
    # look the patched functions' globals up by module name.
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    import variants as patches

    variants, script = sys.argv[1].split("+"), sys.argv[2]
    unknown = set(variants) - {"base", "split", "fused", "qkvsplit", "bhld", "concat", "ropecat"}
    if unknown:
        sys.exit(f"error: unknown variant {sorted(unknown)[0]!r}")
    if "fused" in variants:
        layers.SwiGLU.forward = patches.fused_forward
    if "qkvsplit" in variants:
        layers.Attention.forward = patches.qkvsplit_forward
    if "bhld" in variants:
        layers.Attention.forward = patches.bhld_forward
    if "ropecat" in variants:
        layers.apply_rotary = patches.ropecat_apply
    if "concat" in variants:
        import torch._inductor.config as ic
        for name in ("max_pointwise_cat_inputs", "max_complex_pointwise_cat_inputs"):
            if hasattr(ic, name):
                setattr(ic, name, 1)
                print(f"variants: inductor {name}=1")
    print(f"variants: {variants}", flush=True)
    sys.argv = [script] + sys.argv[3:]
    runpy.run_path(str(REPO / script), run_name="__main__")


if __name__ == "__main__":
    main()
