"""Time the fused SwiGLU kernel against the unfused path at the reference model's shapes (CUDA).

    python scripts/bench_kernels.py

Unfused: cuBLAS for x @ w^T, then Inductor's fused activation (torch.compile of the plain
code), as the compiled model runs it. Fused: models/kernels.py (autotuned on first use).
Prints ms per call (median of CUDA-event timings) and the speed-up, then one JSON line.
"""

from __future__ import annotations

import json
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

from models import kernels  # noqa: E402

SHAPES = {"channel SwiGLU (768 x 97 tokens, 512 -> 1536)": (768 * 97, 512, 1536),
          "sequence SwiGLU (768 x 512 channels, 104 -> 512)": (768 * 512, 104, 512)}


def time_ms(fn, repeats: int = 50) -> float:
    for _ in range(5):
        fn()
    times = []
    for _ in range(repeats):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end))
    return statistics.median(times)


def main() -> None:
    if not torch.cuda.is_available() or not kernels.AVAILABLE:
        sys.exit("error: bench_kernels.py needs CUDA and Triton")
    plain = torch.compile(kernels.swiglu_reference, dynamic=False)
    results = {}
    for name, (m, k, n) in SHAPES.items():
        x = torch.randn(m, k, device="cuda").bfloat16()
        w = (torch.randn(2 * n, k, device="cuda") / k ** 0.5).bfloat16()
        fused_ms = time_ms(lambda: kernels.swiglu_gate_up(x, w))
        plain_ms = time_ms(lambda: plain(x, w))
        flops = 2 * m * k * 2 * n
        results[name] = {"fused_ms": fused_ms, "unfused_ms": plain_ms, "speedup": plain_ms / fused_ms,
                         "fused_tflops": flops / fused_ms / 1e9, "unfused_tflops": flops / plain_ms / 1e9}
        print(f"{name}: fused {fused_ms:.3f} ms ({flops / fused_ms / 1e9:.0f} TFLOP/s), unfused {plain_ms:.3f} ms "
              f"({flops / plain_ms / 1e9:.0f} TFLOP/s), x{plain_ms / fused_ms:.2f}")
    best = getattr(kernels._tuned_kernel, "cache", {})
    print(json.dumps({"device": torch.cuda.get_device_name(), "results": results,
                      "tuned": {str(k): str(v) for k, v in best.items()}}))


if __name__ == "__main__":
    main()
