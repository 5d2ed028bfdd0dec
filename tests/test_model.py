import pytest
import torch

from dataset.common import DatasetMetadata
from models import build_model, validate_arch
from models.losses import ACTLossHead, stablemax_log_probs, token_losses

META = DatasetMetadata(pad_id=0, ignore_label_id=0, blank_identifier_id=0, vocab_size=12, seq_len=9,
                       num_puzzle_identifiers=3, total_groups=1, mean_puzzle_examples=1.0, total_puzzles=1, sets=["all"])
SMALL = dict(name="trm", hidden_size=32, num_heads=4, num_layers=2, H_cycles=2, L_cycles=2, halt_max_steps=3,
             puzzle_emb_len=2, forward_dtype="float32")
VARIANTS = [
    dict(),
    dict(mixer="mlp"),
    dict(pos_encodings="learned"),
    dict(pos_encodings="none"),
    dict(puzzle_emb_ndim=0),
    dict(puzzle_emb_ndim=48),  # spans two prefix positions
    dict(no_act_continue=False),
    dict(loss="softmax"),
]


def make(**overrides):
    torch.manual_seed(0)
    return build_model(validate_arch({**SMALL, **overrides}), META, torch.device("cpu"))


def batch(size=5, seed=0):
    g = torch.Generator().manual_seed(seed)
    return {
        "inputs": torch.randint(1, 12, (size, 9), generator=g, dtype=torch.int32),
        "labels": torch.randint(1, 12, (size, 9), generator=g),
        "puzzle_identifiers": torch.randint(0, 3, (size,), generator=g, dtype=torch.int32),
    }


def non_contiguous(t):
    """Same values, non-contiguous layout (a transposed copy transposed back)."""
    if t.ndim < 2:
        return t.repeat_interleave(2)[::2]
    out = t.transpose(0, 1).contiguous().transpose(0, 1)
    assert not out.is_contiguous()
    return out


def assert_noncontiguous_step_matches(head, carry: dict, batch: dict, keys) -> None:
    """One ACT step from non-contiguous carry and batch tensors gives the same numbers as from
    contiguous ones; `keys`: the carry entries to compare."""
    torch.manual_seed(1)
    ref_carry, ref_loss, _, ref_out = head(carry, batch)
    torch.manual_seed(1)
    got_carry, got_loss, _, got_out = head({k: non_contiguous(v) for k, v in carry.items()},
                                           {k: non_contiguous(v) for k, v in batch.items()})
    torch.testing.assert_close(got_out["logits"], ref_out["logits"])
    torch.testing.assert_close(got_loss, ref_loss)
    for key in keys:
        torch.testing.assert_close(got_carry[key], ref_carry[key])


@pytest.mark.parametrize("overrides", VARIANTS, ids=lambda o: ",".join(f"{k}={v}" for k, v in o.items()) or "default")
def test_shapes_and_noncontiguous_inputs(overrides):
    model = make(**overrides)
    head = ACTLossHead(model)
    b = batch()
    carry = model.initial_carry(b)
    new_carry, loss, metrics, outputs = head(carry, b)
    prefix = model.prefix_len
    assert outputs["logits"].shape == (5, 9, 12)
    assert outputs["q_halt_logits"].shape == (5,)
    assert new_carry["z_answer"].shape == (5, prefix + 9, 32)
    assert torch.all(new_carry["steps"] == 1)
    assert torch.isfinite(loss)
    loss.backward()
    grads = [p.grad for p in model.parameters() if p.grad is not None]
    assert grads and all(torch.isfinite(g).all() for g in grads)

    # The same step from non-contiguous carry and batch tensors gives the same numbers.
    model.zero_grad()
    assert_noncontiguous_step_matches(head, new_carry, b, ["z_latent"])


def test_eval_mode_halts_only_at_max_steps_and_keeps_data():
    model = make().eval()
    head = ACTLossHead(model)
    b = batch()
    carry = model.initial_carry(b)
    with torch.no_grad():
        for step in range(1, 4):
            # The first step loads `b`; later batches must be ignored until the examples halt.
            carry, _, metrics, _ = head(carry, b if step == 1 else batch(seed=step))
            assert torch.all(carry["steps"] == step)
            assert torch.equal(carry["inputs"], b["inputs"])
            assert bool(carry["halted"].all()) == (step == 3)
            assert int(metrics["count"]) == (5 if step == 3 else 0)


def test_halted_examples_restart_on_new_data():
    model = make()
    head = ACTLossHead(model)
    b0, b1 = batch(seed=0), batch(seed=1)
    carry = model.initial_carry(b0)
    carry, *_ = head(carry, b0)
    carry["halted"] = torch.tensor([True, False, True, False, False])
    before = {k: v.clone() for k, v in carry.items()}
    new, *_ = head(carry, b1)
    for i in range(5):
        source = b1 if before["halted"][i] else before
        assert torch.equal(new["inputs"][i], source["inputs"][i])
        assert new["steps"][i] == (1 if before["halted"][i] else 2)


def graph_size(loss):
    """The number of autograd nodes behind `loss`: what one backward pass goes through."""
    seen, stack = set(), [loss.grad_fn]
    while stack:
        fn = stack.pop()
        if fn is None or fn in seen:
            continue
        seen.add(fn)
        stack.extend(f for f, _ in fn.next_functions)
    return len(seen)


def test_only_the_last_cycle_has_gradients():
    """The H_cycles - 1 warm-up cycles run without grad: one backward through a 3-cycle model
    costs about what a 1-cycle model costs, measured as autograd graph nodes."""

    def loss_of(h_cycles):
        model = make(H_cycles=h_cycles)
        return ACTLossHead(model)(model.initial_carry(batch()), batch())[1]

    assert graph_size(loss_of(3)) == graph_size(loss_of(1))


def test_stablemax_is_a_distribution_with_finite_gradients_everywhere():
    logits = torch.tensor([[1.0, 0.0, -1.0, 3.0], [1.0, 1.0, 1.0, 1.0]], requires_grad=True)
    probs = stablemax_log_probs(logits).exp()
    torch.testing.assert_close(probs.sum(-1), torch.ones(2))
    losses = token_losses(logits.unsqueeze(0), torch.tensor([[0, -100]]), "stablemax")
    assert losses[0, 1] == 0  # ignored position
    losses.sum().backward()
    assert torch.isfinite(logits.grad).all()  # x == 1 exactly: 1/(1-x) branch must not leak NaN


def test_arch_config_rejects_typos_and_bad_values():
    with pytest.raises(ValueError, match="arch.hidden_sise"):
        validate_arch({**SMALL, "hidden_sise": 3})
    with pytest.raises(ValueError, match="divisible"):
        validate_arch({**SMALL, "num_heads": 5})
    with pytest.raises(ValueError, match="unknown model name"):
        validate_arch({**SMALL, "name": "gpt"})


def test_swiglu_weight_layout_and_gradients():
    """SwiGLU applies gate_up's first half as the gate and the second as the up projection (the
    checkpoint layout), and its two-matmul form has the gradients of the textbook formula."""
    from models.layers import SwiGLU

    torch.manual_seed(0)
    layer = SwiGLU(24, 4).double()
    x = torch.randn(5, 7, 24, dtype=torch.float64, requires_grad=True)
    w, w_down = layer.gate_up_proj.weight, layer.down_proj.weight
    assert w.shape == (2 * layer.inter, 24) and layer.inter == 256

    def textbook(x):
        gate, up = (x @ w.T).chunk(2, dim=-1)
        return (gate * torch.sigmoid(gate) * up) @ w_down.T

    weights = torch.randn(5, 7, 24, dtype=torch.float64)
    ours, expected = layer(x), textbook(x)
    torch.testing.assert_close(ours, expected, rtol=1e-12, atol=1e-12)
    g_ours = torch.autograd.grad((ours * weights).sum(), [x, w, w_down])
    g_expected = torch.autograd.grad((expected * weights).sum(), [x, w, w_down])
    for a, b in zip(g_ours, g_expected):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)


def test_padded_sequence_mlp_computes_the_same_sums():
    """seq_mlp_align zero-pads the sequence inside the sequence MLP (11 positions -> 16): same
    outputs and gradients as without padding, and the parameters keep their shapes."""
    torch.set_default_dtype(torch.float64)
    try:
        padded, plain = make(mixer="mlp", seq_mlp_align=8), make(mixer="mlp", seq_mlp_align=1)
    finally:
        torch.set_default_dtype(torch.float32)
    assert padded.blocks[0].seq_mlp.pad == 5 and plain.blocks[0].seq_mlp.pad == 0
    assert {k: v.shape for k, v in padded.state_dict().items()} == {k: v.shape for k, v in plain.state_dict().items()}
    plain.load_state_dict(padded.state_dict())
    x = torch.randn(3, 11, 32, dtype=torch.float64, requires_grad=True)
    outs, grads = [], []
    for model in (padded, plain):
        out = model.blocks[0](x, None)
        (out * torch.linspace(-1, 1, out.numel(), dtype=torch.float64).reshape(out.shape)).sum().backward()
        outs.append(out.detach())
        grads.append([x.grad.clone()] + [p.grad.clone() for p in model.blocks[0].parameters()])
        x.grad = None
    torch.testing.assert_close(outs[0], outs[1], rtol=1e-12, atol=1e-12)
    for a, b in zip(*grads):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)
