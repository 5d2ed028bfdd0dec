import io
import math

import pytest
import torch

from training.engine.ema import EMA
from training.engine.optim import AdamATan2, SignSGD, lr_at


def reference_adam_atan2(p, grads, lr, betas, wd):
    """The AdamATan2 update written out in float64, one step at a time, in the reference
    kernel's form: the first bias correction scales the step, the second the denominator."""
    p = p.double().clone()
    m = torch.zeros_like(p)
    v = torch.zeros_like(p)
    b1, b2 = betas
    for t, g in enumerate(grads, start=1):
        g = g.double()
        p = p * (1 - lr * wd)
        m = b1 * m + (1 - b1) * g
        v = b2 * v + (1 - b2) * g * g
        p = p - lr / (1 - b1**t) * torch.atan2(m, (v / (1 - b2**t)).sqrt())
    return p


def test_adam_atan2_matches_formula():
    torch.manual_seed(0)
    init = torch.randn(7, 5)
    grads = [torch.randn(7, 5) * 10 ** (k - 2) for k in range(5)]
    p = torch.nn.Parameter(init.clone())
    opt = AdamATan2([p], lr=3e-2, betas=(0.9, 0.95), weight_decay=0.1)
    for g in grads:
        p.grad = g.clone()
        opt.step()
    expected = reference_adam_atan2(init, grads, 3e-2, (0.9, 0.95), 0.1)
    torch.testing.assert_close(p.detach().double(), expected, rtol=1e-5, atol=1e-6)


def test_adam_atan2_is_gradient_scale_invariant_and_bounded():
    torch.manual_seed(1)
    init = torch.randn(10)
    g = torch.randn(10)
    results = []
    for scale in (1e-6, 1.0, 1e6):
        p = torch.nn.Parameter(init.clone())
        opt = AdamATan2([p], lr=0.1)
        p.grad = g * scale
        opt.step()
        results.append(p.detach().clone())
    torch.testing.assert_close(results[0], results[1])
    torch.testing.assert_close(results[2], results[1])
    assert torch.all((results[1] - init).abs() <= 0.1 * math.pi / 2 / (1 - 0.9) + 1e-6)


def test_adam_atan2_state_round_trip():
    p = torch.nn.Parameter(torch.ones(3))
    opt = AdamATan2([p], lr=0.1)
    p.grad = torch.ones(3)
    opt.step()
    clone = torch.nn.Parameter(p.detach().clone())
    opt2 = AdamATan2([clone], lr=0.1)
    buffer = io.BytesIO()
    torch.save(opt.state_dict(), buffer)
    buffer.seek(0)
    opt2.load_state_dict(torch.load(buffer, weights_only=True))
    for o, q in ((opt, p), (opt2, clone)):
        q.grad = torch.full((3,), -2.0)
        o.step()
    torch.testing.assert_close(p, clone)
    assert opt2.param_groups[0]["step"] == 2


def test_sign_sgd_updates_only_rows_with_gradient():
    w = torch.nn.Parameter(torch.ones(4, 3))
    opt = SignSGD([w], lr=0.1, weight_decay=0.5)
    grad = torch.zeros(4, 3)
    grad[1] = torch.tensor([2.0, -3.0, 0.5])
    grad[3] = torch.tensor([-1e-9, 0.0, 1e3])
    w.grad = grad
    opt.step()
    expected = torch.ones(4, 3)
    expected[1] = 1 * (1 - 0.05) - 0.1 * torch.tensor([1.0, -1.0, 1.0])
    expected[3] = 1 * (1 - 0.05) - 0.1 * torch.tensor([-1.0, 0.0, 1.0])
    torch.testing.assert_close(w.detach(), expected)


def test_lr_schedule_warmup_and_cosine():
    assert lr_at(0, 1.0, 10, 110, 0.1) == 0.0
    assert lr_at(5, 1.0, 10, 110, 0.1) == pytest.approx(0.5)
    assert lr_at(10, 1.0, 10, 110, 0.1) == pytest.approx(1.0)
    assert lr_at(60, 1.0, 10, 110, 0.1) == pytest.approx(0.55)
    assert lr_at(110, 1.0, 10, 110, 0.1) == pytest.approx(0.1)
    assert lr_at(500, 1.0, 10, 110, 0.1) == pytest.approx(0.1)
    assert lr_at(60, 1.0, 10, 110, 1.0) == pytest.approx(1.0)  # min_ratio 1 = constant


def test_ema_update_and_swap():
    model = torch.nn.Linear(3, 2)
    original = [p.detach().clone() for p in model.parameters()]
    ema = EMA(model, rate=0.9)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(1.0)
    ema.update()
    trained = [p.detach().clone() for p in model.parameters()]
    for s, o in zip(ema.shadow, original):
        torch.testing.assert_close(s, o + 0.1)
    with ema.swapped():
        for p, o in zip(model.parameters(), original):
            torch.testing.assert_close(p.detach(), o + 0.1)
    for p, t in zip(model.parameters(), trained):
        assert torch.equal(p.detach(), t)  # bit-exact restore
    with pytest.raises(RuntimeError):
        with ema.swapped():
            raise RuntimeError("evaluation failed")
    for p, t in zip(model.parameters(), trained):
        assert torch.equal(p.detach(), t)  # restored even when evaluation raises


def test_guarded_steps_match_plain_steps_and_skip_exactly():
    torch.manual_seed(3)
    init = torch.randn(6, 4)
    grads = [torch.randn(6, 4) for _ in range(4)]
    plain, guarded = torch.nn.Parameter(init.clone()), torch.nn.Parameter(init.clone())
    opt_plain = AdamATan2([plain], lr=0.05, weight_decay=0.1)
    opt_guarded = AdamATan2([guarded], lr=0.05, weight_decay=0.1)
    for g in grads:
        plain.grad, guarded.grad = g.clone(), g.clone()
        opt_plain.step()
        opt_guarded.step(ok=torch.tensor(True))
    torch.testing.assert_close(guarded, plain, rtol=1e-6, atol=1e-7)
    before = guarded.detach().clone()
    moments = {k: v.clone() for k, v in opt_guarded.state[guarded].items()}
    guarded.grad = torch.full((6, 4), float("nan"))
    opt_guarded.step(ok=torch.tensor(False))
    assert torch.equal(guarded.detach(), before)  # skipped: parameters and moments untouched
    for k, v in opt_guarded.state[guarded].items():
        assert torch.equal(v, moments[k])


def test_guarded_sign_sgd_and_ema_skip():
    w = torch.nn.Parameter(torch.ones(3, 2))
    opt = SignSGD([w], lr=0.1, weight_decay=0.5)
    w.grad = torch.ones(3, 2)
    opt.step(ok=torch.tensor(False))
    assert torch.equal(w.detach(), torch.ones(3, 2))
    opt.step(ok=torch.tensor(True))
    assert not torch.equal(w.detach(), torch.ones(3, 2))

    model = torch.nn.Linear(2, 2)
    ema = EMA(model, 0.5)
    with torch.no_grad():
        model.weight.add_(1.0)
    shadow = [s.clone() for s in ema.shadow]
    ema.update(ok=torch.tensor(False))
    assert all(torch.equal(a, b) for a, b in zip(ema.shadow, shadow))
    ema.update(ok=torch.tensor(True))
    torch.testing.assert_close(ema.shadow[0], shadow[0] + 0.5)
