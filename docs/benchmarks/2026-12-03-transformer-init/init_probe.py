"""At initialisation: does a stack of the project's blocks keep its positions apart, and how large
are the gradients at its bottom? For 2 and 23 blocks, post-norm (TRM's block, the transformer
baseline's default) and pre-norm (arch.norm=pre), hidden 64 and 512, with and without RoPE.
Random Sudoku-sized inputs (81 positions, tokens 1..10, batch 8), unit-scale embeddings (as the
model's scaled embedding is), a random linear read-out with a cross-entropy to random labels.
CPU, float32, seed 0:
    python docs/benchmarks/2026-12-03-transformer-init/init_probe.py
Columns: mean cosine between the positions of one example at the top (1.000: every position the
same vector); the relative change at the top between two inputs that differ in every other
position, at the changed and at the unchanged positions (equal: the top no longer knows which
position changed); gradient norms at the input, the first and the last block.
"""
import math
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[3]))
from models.layers import Block, RotaryEmbedding, rms_norm  # noqa: E402

B, L, EPS = 8, 81, 1e-5
torch.manual_seed(0)
print("norm width rope depth | cosine between positions | top change: changed / unchanged positions | "
      "grad norm: input, first block, last block")
for norm in ("post", "pre"):
    for width, heads in ((64, 4), (512, 8)):
        for rope in (False, True):
            rotary = RotaryEmbedding(width // heads, L, 10000.0)() if rope else None
            for depth in (2, 23):
                blocks = [Block(width, heads, 4, "attention", L, EPS, prenorm=norm == "pre") for _ in range(depth)]
                table = torch.randn(11, width)
                tokens_a = torch.randint(1, 11, (B, L))
                tokens_b = tokens_a.clone()
                tokens_b[:, ::2] = torch.randint(1, 11, (B, (L + 1) // 2))
                tops = []
                for tokens in (tokens_a, tokens_b):
                    x = table[tokens].requires_grad_(True)
                    h = x
                    for block in blocks:
                        h = block(h, rotary)
                    tops.append((x, rms_norm(h, EPS) if norm == "pre" else h))
                (x_a, top_a), (_, top_b) = tops
                changed = tokens_a != tokens_b
                change = (top_a - top_b).norm(dim=-1) / top_a.norm(dim=-1)
                unit = torch.nn.functional.normalize(top_a, dim=-1)
                cosine = (unit @ unit.transpose(1, 2)).mean().item()
                readout = torch.randn(width, 10) / math.sqrt(width)
                torch.nn.functional.cross_entropy((top_a @ readout).reshape(-1, 10),
                                                  torch.randint(0, 10, (B * L,))).backward()
                grad = [x_a.grad.norm().item()] + [
                    math.sqrt(sum(p.grad.norm().item() ** 2 for p in blocks[i].parameters())) for i in (0, -1)]
                print(f"{norm:4s} {width:5d} {int(rope):4d} {depth:5d} | {cosine:.4f} | "
                      f"{change[changed].mean():.3f} / {change[~changed].mean():.3f} | "
                      + ", ".join(f"{g:.2e}" for g in grad))
