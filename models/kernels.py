"""Triton kernels for the CUDA fast path (used when `arch.fused_kernels` is on and Triton is
installed; the plain torch path otherwise).

`swiglu_gate_up(x, w)`: the SwiGLU's first matrix multiply fused with its activation,
h = silu(x @ w_gate^T) * (x @ w_up^T), w = [w_gate; w_up] stacked as (2N, K) like
`SwiGLU.gate_up_proj`. The unfused path writes the (M, 2N) product, then reads it back to
write (M, N); here each tile keeps both accumulators in registers and writes only h. Where it
pays: gradient-free passes (the H_cycles - 1 warm-up cycles and all of evaluation), where
nothing has to be kept for a backward. Numerics: the activation is applied to the float32
accumulators (the unfused path first rounds them to bf16): the same sums, one rounding fewer.
"""

from __future__ import annotations

import torch

try:
    import triton
    import triton.language as tl
except ImportError:  # CPU-only installs: the plain path is used
    triton = None

AVAILABLE = triton is not None


if AVAILABLE:

    @triton.jit
    def _swiglu_gate_up_kernel(x_ptr, w_ptr, h_ptr, M, N, K, stride_xm, stride_xk, stride_wn, stride_wk,
                               stride_hm, stride_hn, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
                               BLOCK_K: tl.constexpr, GROUP_M: tl.constexpr):
        # Tiles in groups of GROUP_M rows so neighbouring programs share x rows in L2.
        pid = tl.program_id(0)
        tiles_m, tiles_n = tl.cdiv(M, BLOCK_M), tl.cdiv(N, BLOCK_N)
        per_group = GROUP_M * tiles_n
        first_m = (pid // per_group) * GROUP_M
        rows_in_group = tl.minimum(tiles_m - first_m, GROUP_M)
        pid_m = first_m + (pid % per_group) % rows_in_group
        pid_n = (pid % per_group) // rows_in_group

        rm = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
        rn = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
        rk = tl.arange(0, BLOCK_K)
        m_ok, n_ok = rm < M, rn < N
        x_tile = x_ptr + rm[:, None] * stride_xm + rk[None, :] * stride_xk  # (BM, BK)
        g_tile = w_ptr + rn[None, :] * stride_wn + rk[:, None] * stride_wk  # (BK, BN), gate rows
        u_tile = g_tile + N * stride_wn  # up rows follow the gate rows
        acc_g = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
        acc_u = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
        for k in range(0, tl.cdiv(K, BLOCK_K)):
            k_ok = rk < K - k * BLOCK_K
            a = tl.load(x_tile, mask=m_ok[:, None] & k_ok[None, :], other=0.0)
            g = tl.load(g_tile, mask=k_ok[:, None] & n_ok[None, :], other=0.0)
            u = tl.load(u_tile, mask=k_ok[:, None] & n_ok[None, :], other=0.0)
            acc_g = tl.dot(a, g, acc_g)
            acc_u = tl.dot(a, u, acc_u)
            x_tile += BLOCK_K * stride_xk
            g_tile += BLOCK_K * stride_wk
            u_tile += BLOCK_K * stride_wk
        h = acc_g * tl.sigmoid(acc_g) * acc_u
        h_out = h_ptr + rm[:, None] * stride_hm + rn[None, :] * stride_hn
        tl.store(h_out, h.to(h_ptr.dtype.element_ty), mask=m_ok[:, None] & n_ok[None, :])

    # Hopper-sized candidates (two fp32 accumulators per tile); the autotuner times them once per shape.
    CONFIGS = [
        triton.Config({"BLOCK_M": bm, "BLOCK_N": bn, "BLOCK_K": bk, "GROUP_M": 8}, num_warps=w, num_stages=s)
        for bm, bn, bk, w, s in [
            (128, 128, 64, 8, 3), (128, 128, 64, 8, 4), (128, 64, 64, 4, 4), (64, 128, 64, 4, 4),
            (128, 128, 32, 8, 4), (256, 64, 64, 8, 3), (64, 64, 64, 4, 5),
        ]
    ]
    _tuned_kernel = triton.autotune(configs=CONFIGS, key=["M", "N", "K"])(_swiglu_gate_up_kernel)


def swiglu_gate_up_triton(x: torch.Tensor, w: torch.Tensor, config: dict | None = None) -> torch.Tensor:
    """x (M, K), w (2N, K) -> (M, N) in x's dtype. `config` fixes the tile sizes (BLOCK_M, BLOCK_N,
    BLOCK_K, GROUP_M, num_warps, num_stages) instead of autotuning (tests, the interpreter)."""
    if not AVAILABLE:
        raise RuntimeError("swiglu_gate_up_triton needs Triton, which is not installed")
    if x.ndim != 2 or w.ndim != 2 or w.shape[1] != x.shape[1] or w.shape[0] % 2:
        raise ValueError(f"swiglu_gate_up: x {tuple(x.shape)} and w {tuple(w.shape)} do not make (M, K) @ (2N, K)^T")
    (m, k), n = x.shape, w.shape[0] // 2
    h = torch.empty((m, n), dtype=x.dtype, device=x.device)

    def grid(meta):
        return (triton.cdiv(m, meta["BLOCK_M"]) * triton.cdiv(n, meta["BLOCK_N"]),)

    args = (x, w, h, m, n, k, x.stride(0), x.stride(1), w.stride(0), w.stride(1), h.stride(0), h.stride(1))
    if config is None:
        _tuned_kernel[grid](*args)
    else:
        _swiglu_gate_up_kernel[grid](*args, **config)
    return h


@torch.library.custom_op("tinyrecursion::swiglu_gate_up", mutates_args=(), device_types="cuda")
def swiglu_gate_up(x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """Opaque to torch.compile (Inductor calls the kernel; it fuses the ops around it)."""
    return swiglu_gate_up_triton(x, w)


@swiglu_gate_up.register_fake
def _(x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    return x.new_empty((x.shape[0], w.shape[0] // 2))


def swiglu_reference(x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """The unfused computation (what SwiGLU does without the kernel), for tests."""
    gate, up = torch.nn.functional.linear(x, w).chunk(2, dim=-1)
    return torch.nn.functional.silu(gate) * up
