"""The fused SwiGLU kernel (models/kernels.py): its indexing on the CPU through Triton's
interpreter (float32; where Triton is installed), its bf16 numerics and its use inside the
compiled model on a GPU."""

import os
import subprocess
import sys

import pytest
import torch

from conftest import REPO
from models import kernels
from test_model import batch, make

INTERPRETED = r"""
import torch
from models.kernels import swiglu_gate_up_triton, swiglu_reference
torch.manual_seed(0)
tiles = dict(BLOCK_M=32, BLOCK_N=16, BLOCK_K=16, GROUP_M=2, num_warps=4, num_stages=1)
worst = 0.0
# remainders in every dimension; a strided (transposed) x; a K below one tile
for m, k, n, strided in [(70, 40, 36, False), (33, 104, 20, True), (16, 8, 16, False)]:
    x = torch.randn(k, m).t() if strided else torch.randn(m, k)
    w = torch.randn(2 * n, k) / k ** 0.5
    h = swiglu_gate_up_triton(x, w, config=tiles)
    ref = swiglu_reference(x.double(), w.double())
    assert h.shape == (m, n) and h.dtype == torch.float32
    worst = max(worst, float((h.double() - ref).norm() / ref.norm()))
print(worst)
"""


@pytest.mark.skipif(not kernels.AVAILABLE, reason="Triton is not installed")
def test_swiglu_kernel_indexing_in_the_interpreter():
    env = {**os.environ, "TRITON_INTERPRET": "1", "PYTHONPATH": str(REPO)}
    out = subprocess.run([sys.executable, "-c", INTERPRETED], cwd=REPO, env=env, capture_output=True, text=True,
                         timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert float(out.stdout.strip()) < 1e-6


@pytest.mark.skipif(not kernels.AVAILABLE, reason="Triton is not installed")
def test_swiglu_kernel_rejects_mismatched_shapes():
    with pytest.raises(ValueError, match=r"x \(4, 8\) and w \(6, 7\)"):
        kernels.swiglu_gate_up_triton(torch.zeros(4, 8), torch.zeros(6, 7))


def test_fused_flag_is_the_plain_path_on_cpu():
    """fused_kernels only changes CUDA gradient-free passes: on the CPU both models agree exactly."""
    b = batch()
    outs = []
    for fused in (False, True):
        model = make(mixer="mlp", fused_kernels=fused).eval()
        with torch.no_grad():
            _, out = model(model.initial_carry(b), b)
        outs.append(out["logits"])
    assert torch.equal(outs[0], outs[1])


@pytest.mark.gpu
@pytest.mark.skipif(not kernels.AVAILABLE, reason="Triton is not installed")
@pytest.mark.parametrize("m,k,n", [(768 * 97, 512, 1536), (768 * 512, 104, 512)], ids=["channel", "sequence"])
def test_swiglu_kernel_bf16_is_as_close_as_the_unfused_path(m, k, n):
    """At the reference model's shapes (channel SwiGLU over 768 x 97 tokens; the sequence SwiGLU
    over 768 x 512 channels, 97 positions padded to 104), the fused bf16 result is no further
    from a float64 reference than the unfused bf16 path is."""
    torch.manual_seed(0)
    x = torch.randn(m, k, device="cuda").bfloat16()
    w = (torch.randn(2 * n, k, device="cuda") / k ** 0.5).bfloat16()
    ref = kernels.swiglu_reference(x[:4096].double(), w.double())
    fused = kernels.swiglu_gate_up(x, w)
    plain = kernels.swiglu_reference(x, w)
    fused_err = float((fused[:4096].double() - ref).norm() / ref.norm())
    plain_err = float((plain[:4096].double() - ref).norm() / ref.norm())
    assert fused_err <= 1.05 * plain_err and fused_err < 5e-3, (fused_err, plain_err)
    assert float((fused.double() - plain.double()).norm() / plain.double().norm()) < 1e-2


@pytest.mark.gpu
@pytest.mark.skipif(not kernels.AVAILABLE, reason="Triton is not installed")
@pytest.mark.parametrize("mixer", ["attention", "mlp"])
def test_compiled_model_with_fused_kernels_matches_the_plain_one(mixer):
    """The compiled bf16 model with fused_kernels on: same carry and logits as with it off, to
    bf16 noise, for an evaluation step (all gradient-free) and a training step's loss."""
    from models.losses import ACTLossHead

    b = {k: v.cuda() for k, v in batch(64).items()}
    results = []
    for fused in (False, True):
        model = make(mixer=mixer, fused_kernels=fused, forward_dtype="bfloat16", hidden_size=128).cuda()
        head = torch.compile(ACTLossHead(model), dynamic=False)
        model.eval()
        with torch.no_grad():
            carry, _, _, out = head(model.initial_carry(b), b)
        model.train()
        _, loss, _, _ = head(model.initial_carry(b), b)
        loss.backward()
        results.append((carry["z_answer"].float(), out["logits"].float(), float(loss)))
    (z0, l0, loss0), (z1, l1, loss1) = results
    assert float((z1 - z0).norm() / z0.norm()) < 2e-2
    assert float((l1 - l0).norm() / l0.norm()) < 2e-2
    assert abs(loss1 - loss0) < 1e-2 * abs(loss0)
