"""Where a training step's GPU time goes: kernels grouped by family, and the top kernels.

    python scripts/profile_step.py --config-name cfg_lsa                    # attention
    python scripts/profile_step.py --config-name cfg_lsa arch=trm_mlp --steps 3 --trace /tmp/trace.json

Runs the real `train_step` (compiled as training compiles it), warms up, then profiles a few
steps with torch.profiler. Families: matrix multiplies (cuBLAS/CUTLASS), attention kernels,
Inductor's fused Triton kernels (elementwise, norms, reductions, the compiled optimizer),
copies and fills, other. "Idle" is wall time per step minus the GPU's busy time (launch gaps,
host work the GPU waited for); the profiler itself adds some of it.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections import defaultdict
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402
from torch.profiler import ProfilerActivity, profile  # noqa: E402

from core.cli import path_arg  # noqa: E402
from training.config import validate_config  # noqa: E402
from training.hydra_guard import compose_config  # noqa: E402
from training.loop import train_step
from training.engine.setup import build_train_state  # noqa: E402

# Checked in order: Inductor's kernels first (their names quote the ops they fused, e.g.
# "..._scaled_dot_product_cudnn_attention_..."), then fused attention (cuDNN's SDPA kernels
# carry "sm90" and "wgmma" like GEMMs do), then matrix multiplies.
FAMILIES = (
    ("triton (fused)", ("triton_",)),
    ("attention", ("sdpa", "flash", "fmha", "attention", "attn")),
    ("matmul", ("gemm", "sm90_", "sm80_", "cutlass", "nvjet", "xmma", "ampere_", "hopper")),
    ("copy/fill", ("memcpy", "memset", "copy_", "fill")),
)


def family(name: str) -> str:
    lowered = name.lower()
    if lowered.startswith("triton_"):
        return "triton (fused)"
    for fam, keys in FAMILIES[1:]:
        if any(k in lowered for k in keys):
            return fam
    return "other"


def device_time_us(event) -> float:
    for attr in ("self_device_time_total", "self_cuda_time_total"):
        if hasattr(event, attr):
            return float(getattr(event, attr))
    return 0.0


def is_kernel(event) -> bool:
    """Device-side kernel rows only: not CPU ops (aten::mm also reports its kernels' time), not
    the GPU-side copies of user annotations (Inductor names them like its kernels), not
    profiler markers."""
    return (
        device_time_us(event) > 0
        and event.device_type == torch.autograd.DeviceType.CUDA
        and not getattr(event, "is_user_annotation", False)
        and not event.key.startswith("aten::")
        and event.key != "Command Buffer Full"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config-name", default="cfg_lsa")
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--warmup", type=int, default=8)
    parser.add_argument("--top", type=int, default=15)
    parser.add_argument("--trace", type=path_arg, default=None, help="also write a Chrome trace here")
    args, overrides = parser.parse_known_args()
    raw = compose_config(args.config_name, overrides)
    raw["train"]["save_checkpoints"] = False
    state = build_train_state(validate_config(raw), progress=False)
    if state.device.type != "cuda":
        sys.exit("error: profile_step.py needs a CUDA device")
    for _ in range(args.warmup):
        train_step(state)
    torch.cuda.synchronize()

    with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
        t0 = time.perf_counter()
        for _ in range(args.steps):
            train_step(state)
        torch.cuda.synchronize()
        wall_ms = (time.perf_counter() - t0) * 1e3 / args.steps
    if args.trace:
        prof.export_chrome_trace(str(args.trace))

    kernels = [e for e in prof.key_averages() if is_kernel(e)]
    by_family: dict[str, float] = defaultdict(float)
    for e in kernels:
        by_family[family(e.key)] += device_time_us(e) / 1e3 / args.steps
    busy = sum(by_family.values())
    print(f"step wall {wall_ms:.1f} ms (profiled), GPU busy {busy:.1f} ms, idle {wall_ms - busy:.1f} ms")
    for fam, ms in sorted(by_family.items(), key=lambda kv: -kv[1]):
        print(f"  {fam:<16} {ms:8.2f} ms  {100 * ms / busy:5.1f}%")
    print(f"top {args.top} kernels (ms per step, calls per step):")
    for e in sorted(kernels, key=lambda e: -device_time_us(e))[: args.top]:
        print(f"  {device_time_us(e) / 1e3 / args.steps:8.2f}  {e.count / args.steps:6.0f}  [{family(e.key)}] {e.key[:110]}")


if __name__ == "__main__":
    main()
