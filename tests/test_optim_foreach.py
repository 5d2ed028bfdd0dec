"""The multi-tensor (foreach) guarded AdamATan2 and EMA updates, the default since issue 18,
against the per-tensor eager functions they replace (which train.compile_optimizer=true still
compiles). Tolerance for float32, 1e-6 relative (see below for values near 0): the foreach update
computes atan2(m, d) as atan(m / d) (no foreach atan2 in torch 2.4), one more rounding, and
the moments as b m + (1 - b) g where the eager function lerps (m + (1 - b)(g - m); for the EMA
the same lerp arithmetic, but the CPU's vectorised lerp fuses a multiply-add). A few ulps
(float32's ulp: 6e-8 relative) of the update or moment, which for a value near 0 is more than
1e-6 of the value itself: so each element must lie within 1e-6 of its own size plus 1e-6 of the
tensor's largest element (25 steps, gradients from 1e-3 to 1e3, measured: 3.2e-7 of the largest).
A skipped step must leave everything bit for bit."""

import math

import pytest
import torch

from training.engine.ema import EMA, foreach_guarded_ema_, guarded_ema_
from training.engine.optim import AdamATan2, foreach_guarded_adam_atan2_, guarded_adam_atan2_

SHAPES = [(7, 5), (3,), (4, 2, 3), (1,), (130,)]
BETAS = (0.9, 0.95)


def scalars(lr, wd, t):
    return (torch.tensor(1.0 - lr * wd), torch.tensor(lr / (1.0 - BETAS[0] ** t)),
            torch.tensor(1.0 / math.sqrt(1.0 - BETAS[1] ** t)))


def tensors(seed, scale=1.0):
    gen = torch.Generator().manual_seed(seed)
    return [torch.randn(s, generator=gen) * scale for s in SHAPES]


def run_both(steps, oks, grad_scales):
    """Both updates over the same parameter lists for `steps` steps; their (params, m, v)."""
    init = tensors(0)
    results = []
    for update in (guarded_adam_atan2_, foreach_guarded_adam_atan2_):
        params = [p.clone() for p in init]
        m = [torch.zeros_like(p) for p in params]
        v = [torch.zeros_like(p) for p in params]
        for t in range(1, steps + 1):
            grads = tensors(100 + t, grad_scales[t - 1])
            update(params, grads, m, v, torch.tensor(oks[t - 1]), *scalars(0.03, 0.1, t), *BETAS)
        results.append((params, m, v))
    return results


def close(got, expected):
    for g, e in zip(got, expected):
        torch.testing.assert_close(g, e, rtol=1e-6, atol=1e-6 * e.abs().max().item())


def test_foreach_adam_matches_eager_over_many_steps():
    scales = [10.0 ** (k % 7 - 3) for k in range(25)]  # gradients from 1e-3 to 1e3: atan2 far from 0 and pi/2
    eager, foreach = run_both(25, [True] * 25, scales)
    for got, expected in zip(foreach, eager):
        close(got, expected)
    assert not torch.equal(foreach[0][0], tensors(0)[0])  # it did move the parameters


def test_foreach_adam_skips_bit_for_bit_and_matches_eager_around_skips():
    oks = [True, True, False, True, False, False, True]
    eager, foreach = run_both(len(oks), oks, [1.0] * len(oks))
    for got, expected in zip(foreach, eager):
        close(got, expected)
    params = [p.clone() for p in tensors(0)]
    m, v = [torch.randn_like(p) for p in params], [torch.rand_like(p) for p in params]
    before = [[x.clone() for x in xs] for xs in (params, m, v)]
    bad = [torch.full_like(p, float("nan")) for p in params]
    bad[1][0] = float("inf")
    foreach_guarded_adam_atan2_(params, bad, m, v, torch.tensor(False), *scalars(0.03, 0.1, 3), *BETAS)
    for now, then in zip((params, m, v), before):
        assert all(torch.equal(a, b) for a, b in zip(now, then))


def test_foreach_adam_zero_denominator_is_atan2s():
    """v = 0 (zero gradients so far): atan2(m, 0) is +-pi/2 for m != 0 and 0 for m = 0."""
    m = [torch.tensor([1e-30, -2e-3, 0.0, 5.0])]
    for update in (guarded_adam_atan2_, foreach_guarded_adam_atan2_):
        p, mm, vv = [torch.zeros(4)], [m[0].clone() / 0.9], [torch.zeros(4)]
        update(p, [torch.zeros(4)], mm, vv, torch.tensor(True), torch.tensor(1.0), torch.tensor(1.0),
               torch.tensor(1.0), 0.9, 0.95)
        assert torch.equal(p[0], torch.tensor([-math.pi / 2, math.pi / 2, 0.0, -math.pi / 2]))


def test_optimizer_default_is_foreach_and_compiled_path_on_request():
    p = torch.nn.Parameter(torch.ones(3))
    assert AdamATan2([p])._update is foreach_guarded_adam_atan2_
    compiled = AdamATan2([p], compile_update=True)._update
    assert compiled is not guarded_adam_atan2_ and compiled is not foreach_guarded_adam_atan2_
    model = torch.nn.Linear(2, 2)
    assert EMA(model, 0.9)._update is foreach_guarded_ema_
    assert EMA(model, 0.9, compile_update=True)._update is not foreach_guarded_ema_


@pytest.mark.parametrize("rate", [0.999, 0.9])
def test_foreach_ema_matches_eager_and_skips(rate):
    params = tensors(1)
    shadows = [[p.clone() + 0.5 for p in params] for _ in range(2)]
    for step, ok in enumerate([True, False, True, True]):
        params = [p + 0.1 * step for p in params]
        guarded_ema_(shadows[0], params, torch.tensor(ok), 1.0 - rate)
        before = [s.clone() for s in shadows[1]]
        foreach_guarded_ema_(shadows[1], params, torch.tensor(ok), 1.0 - rate)
        if not ok:
            assert all(torch.equal(a, b) for a, b in zip(shadows[1], before))
    close(shadows[1], shadows[0])
    assert not torch.equal(shadows[1][0], params[0] + 0.5)


def test_compile_optimizer_config(tmp_path):
    from conftest import tiny_config
    from training.engine.setup import build_train_state

    assert tiny_config(tmp_path).train.compile_optimizer is False
    updates = {}
    for flags in [("train.compile=on",), ("train.compile=on", "train.compile_optimizer=true"),
                  ("train.compile=off", "train.compile_optimizer=true")]:
        state = build_train_state(tiny_config(tmp_path, *flags), progress=False)  # torch.compile is lazy: no compile here
        updates[flags] = (state.adam._update, state.ema._update)
        torch._dynamo.reset()
    assert updates[("train.compile=on",)] == (foreach_guarded_adam_atan2_, foreach_guarded_ema_)
    compiled = updates[("train.compile=on", "train.compile_optimizer=true")]
    assert compiled[0] is not foreach_guarded_adam_atan2_ and compiled[1] is not foreach_guarded_ema_
    assert updates[("train.compile=off", "train.compile_optimizer=true")] == (foreach_guarded_adam_atan2_,
                                                                              foreach_guarded_ema_)
