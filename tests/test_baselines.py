"""The baselines (arch=hrm, arch=transformer) at the model level: shapes from non-contiguous
inputs, HRM's one-step gradient, the transformer's single stateless pass, configs, counts."""

import pytest
import torch

from models import MODELS, build_model, count_parameters, validate_arch
from models.losses import ACTLossHead
from test_model import META, assert_noncontiguous_step_matches, batch, graph_size

COMMON = dict(hidden_size=32, num_heads=4, puzzle_emb_len=2, forward_dtype="float32")
SMALL = {
    "hrm": dict(name="hrm", H_layers=2, L_layers=1, H_cycles=2, L_cycles=3, halt_max_steps=3, **COMMON),
    "transformer": dict(name="transformer", num_layers=3, **COMMON),
}
VARIANTS = [
    ("hrm", {}),
    ("hrm", dict(mixer="mlp")),
    ("hrm", dict(pos_encodings="learned")),
    ("hrm", dict(puzzle_emb_ndim=0)),
    ("hrm", dict(no_act_continue=True)),
    ("transformer", {}),
    ("transformer", dict(mixer="mlp")),
    ("transformer", dict(pos_encodings="none", puzzle_emb_ndim=48)),
    ("transformer", dict(halt_max_steps=3, loss="softmax")),
    ("transformer", dict(norm="pre")),
    ("transformer", dict(norm="pre", mixer="mlp")),
]


def make(arch, **overrides):
    torch.manual_seed(0)
    return build_model(validate_arch({**SMALL[arch], **overrides}), META, torch.device("cpu"))


def variant_id(v):
    arch, overrides = v
    return ",".join([arch] + [f"{k}={x}" for k, x in overrides.items()])


@pytest.mark.parametrize("arch, overrides", VARIANTS, ids=[variant_id(v) for v in VARIANTS])
def test_shapes_and_noncontiguous_inputs(arch, overrides):
    model = make(arch, **overrides)
    head = ACTLossHead(model)
    b = batch()
    carry = model.initial_carry(b)
    new_carry, loss, metrics, outputs = head(carry, b)
    assert outputs["logits"].shape == (5, 9, 12)
    assert outputs["q_halt_logits"].shape == outputs["q_continue_logits"].shape == (5,)
    for key in model.STATES:
        assert new_carry[key].shape == (5, model.prefix_len + 9, 32)
    assert torch.all(new_carry["steps"] == 1)
    assert torch.isfinite(loss)
    loss.backward()
    grads = {n: p.grad for n, p in model.named_parameters() if p.grad is not None}
    assert all(torch.isfinite(g).all() for g in grads.values())
    assert any(n.startswith(("low_blocks", "blocks")) for n in grads) and any(n.startswith("lm_head") for n in grads)

    # The same step from non-contiguous carry and batch tensors gives the same numbers.
    model.zero_grad()
    assert_noncontiguous_step_matches(head, new_carry, b, model.STATES)


# ---------------------------------------------------------------------------------------------
# HRM


def hrm_reference(model, b, detach_early: bool):
    """HRM's step written out from the paper: H_cycles x (L_cycles L-updates, then one
    H-update). With `detach_early`, every update but the last L- and H-update runs without
    gradients (the one-step gradient); without it, full backpropagation through time."""
    cfg = model.cfg
    x = model.embed(b["inputs"], b["puzzle_identifiers"])
    z_high = model.high_init.expand_as(x)
    z_low = model.low_init.expand_as(x)
    updates = [u for h in range(cfg.H_cycles) for u in [("L", h)] * cfg.L_cycles + [("H", h)]]
    for i, (module, _) in enumerate(updates):
        grad = not detach_early or i >= len(updates) - 2
        with torch.set_grad_enabled(grad):
            if module == "L":
                z_low = model.low(z_low, z_high, x)
            else:
                z_high = model.high(z_high, z_low)
    return model.heads(z_high)


def weighted_loss(logits, q_logits):
    weights = torch.linspace(-1, 1, logits.numel(), dtype=logits.dtype).reshape(logits.shape)
    return (logits * weights).sum() + (q_logits * torch.tensor([0.3, -0.7], dtype=q_logits.dtype)).sum()


def test_hrm_one_step_gradient_matches_the_detached_reference():
    """The model's gradients equal those of the paper's step with every update but the final L-
    and H-update detached, and differ from full backpropagation through the same step (so the
    comparison can tell them apart). The same operations in the same order: equal to rounding."""
    model = make("hrm", H_cycles=2, L_cycles=3).eval()
    b = batch()
    _, outputs = model(model.initial_carry(b), b)
    loss = weighted_loss(outputs["logits"], torch.stack([outputs["q_halt_logits"], outputs["q_continue_logits"]], -1))
    got = torch.autograd.grad(loss, list(model.parameters()))
    names = [n for n, _ in model.named_parameters()]

    for detach_early in (True, False):
        logits, q_logits = hrm_reference(model, b, detach_early)
        torch.testing.assert_close(logits, outputs["logits"], rtol=1e-6, atol=1e-6)  # same schedule
        expected = torch.autograd.grad(weighted_loss(logits, q_logits), list(model.parameters()))
        same = {n: torch.allclose(g, e, rtol=1e-5, atol=1e-7) for n, g, e in zip(names, got, expected)}
        if detach_early:
            assert all(same.values()), [n for n, ok in same.items() if not ok]
        else:  # full BPTT reaches the low module through earlier updates too
            assert not all(same[n] for n in names if n.startswith("low_blocks"))


def test_hrm_backward_graph_does_not_grow_with_the_cycles():
    """One L- and one H-update's graph whatever H_cycles and L_cycles (training mode, with the
    Q-continue bootstrap on: that extra step must not add to the graph either)."""
    sizes = []
    for h_cycles, l_cycles in ((1, 1), (2, 2), (3, 5)):
        model = make("hrm", H_cycles=h_cycles, L_cycles=l_cycles, halt_max_steps=4).train()
        assert model.bootstraps_q_continue
        b = batch()
        _, loss, _, outputs = ACTLossHead(model)(model.initial_carry(b), b)
        assert "target_q_continue" in outputs and not outputs["target_q_continue"].requires_grad
        sizes.append(graph_size(loss))
    assert sizes[0] == sizes[1] == sizes[2]


def test_hrm_q_continue_target_is_the_next_steps_value():
    """The bootstrap target: sigmoid of max(next q_halt, next q_continue), where 'next' is one
    more ACT step from the new states, and the plain next q_halt at the last step."""
    model = make("hrm", halt_max_steps=2, halt_exploration_prob=0.0).train()
    with torch.no_grad():
        model.q_head.weight.normal_()  # make halt and continue logits differ
    b = batch()
    carry, outputs = model(model.initial_carry(b), b)
    carry["halted"][:] = False  # continue every example (the Q head may have halted some)
    next_carry, next_outputs = model.eval()(carry, b)
    next_carry["halted"][:] = False
    expected = torch.sigmoid(torch.maximum(next_outputs["q_halt_logits"], next_outputs["q_continue_logits"]))
    torch.testing.assert_close(outputs["target_q_continue"], expected)
    model.train()
    _, last = model(carry, b)  # step 2 = halt_max_steps: the target is the next q_halt alone
    step3 = model.eval()(next_carry, b)[1]
    torch.testing.assert_close(last["target_q_continue"], torch.sigmoid(step3["q_halt_logits"]))


# ---------------------------------------------------------------------------------------------
# Transformer


def test_transformer_is_one_stateless_pass():
    model = make("transformer")
    head = ACTLossHead(model)
    b0, b1 = batch(seed=0), batch(seed=1)
    carry = model.initial_carry(b0)
    assert set(carry) == {"steps", "halted", "inputs", "labels", "puzzle_identifiers"}
    carry, _, metrics, out0 = head(carry, b0)
    assert bool(carry["halted"].all()) and int(metrics["count"]) == 5 and int(metrics["steps"]) == 5
    carry, _, _, out1 = head(carry, b1)  # every example halted after its one pass: b1 replaces b0
    assert torch.equal(carry["inputs"], b1["inputs"]) and torch.all(carry["steps"] == 1)
    fresh = head(model.initial_carry(b1), b1)[3]
    torch.testing.assert_close(out1["logits"], fresh["logits"])  # nothing carried over from b0


def test_transformer_refuses_recursion_fields_naming_them():
    with pytest.raises(ValueError, match=r"arch\.H_cycles, arch\.L_cycles: the transformer does not recurse"):
        validate_arch({**SMALL["transformer"], "H_cycles": 2, "L_cycles": 2})


@pytest.mark.parametrize("mixer", ["attention", "mlp"])
def test_a_pre_norm_block_adds_each_part_of_the_normalised_stream(mixer):
    """norm="pre": x + f(norm(x)) for the mixer, then the SwiGLU the same way; no norm after the sums."""
    from models.layers import Block, rms_norm

    torch.manual_seed(0)
    block = Block(16, 4, 2.0, mixer, 6, 1e-5, prenorm=True)
    x = 3 * torch.randn(2, 6, 16)
    if mixer == "attention":
        mixed = x + block.attn(rms_norm(x, 1e-5), None)
    else:
        mixed = x + block.seq_mlp(rms_norm(x, 1e-5).transpose(1, 2)).transpose(1, 2)
    expected = mixed + block.mlp(rms_norm(mixed, 1e-5))
    torch.testing.assert_close(block(x, None), expected)
    assert expected.pow(2).mean(-1).sqrt().mean() > 2  # the stream keeps its scale: not normalised


def top_position_similarity(norm):
    """At init, the mean cosine between the positions of one example at the top of a 23-layer
    transformer (hidden 64, RoPE), before the heads."""
    model = make("transformer", num_layers=23, hidden_size=64, norm=norm, pos_encodings="rope")
    b = batch(size=4)
    with torch.no_grad():
        _, hidden = model.core((), model.embed(b["inputs"], b["puzzle_identifiers"]))
    unit = torch.nn.functional.normalize(hidden[:, model.prefix_len:], dim=-1)
    return (unit @ unit.transpose(1, 2)).mean().item()


def test_a_deep_post_norm_stack_starts_with_its_positions_alike_and_a_pre_norm_one_does_not():
    """Why arch.norm exists: 23 post-norm blocks at init map every position to nearly the same vector
    (each sum's normalisation shrinks what a position carries of its own), so the heads cannot tell the
    cells apart until training undoes it (the Sudoku row of the equal-budget table never did); with
    pre-norm the input's per-position part stays in the residual stream."""
    post, pre = top_position_similarity("post"), top_position_similarity("pre")
    assert post > 0.99 and pre < 0.9, (post, pre)


def test_norm_is_the_transformers_alone():
    with pytest.raises(ValueError, match="norm is a field of arch transformer"):
        validate_arch({**SMALL["hrm"], "norm": "pre"})
    with pytest.raises(ValueError, match="norm"):
        validate_arch({**SMALL["transformer"], "norm": "sandwich"})


def test_a_transformer_checkpoint_saved_before_arch_norm_resumes_and_loads_as_post_norm(tmp_path):
    """A checkpoint whose config.json has no arch.norm (saved before the option) ran post-norm: it
    resumes (not "arch.norm='post' differs from the checkpoint's None") and loads as the same model."""
    import json

    from conftest import CPU_PROJECT, build_lsa, tiny_config
    from training.bookkeeping.run import check_resume_config
    from training.config import ConfigError
    from training.inference import load_checkpoint_model
    from training.loop import train

    data = build_lsa(tmp_path / "lsa4", num_train=20, num_test=10, num_aug=1)
    arch = ["arch=transformer", "~arch.H_cycles", "~arch.L_cycles", "arch.halt_max_steps=1", "arch.num_layers=2"]
    common = [*arch, "train.eval_interval=2", "logging.run_name=old", "train.global_batch_size=16"]
    train(tiny_config(tmp_path, *common, "train.max_steps=2", data=data))
    ckpt = tmp_path / "runs" / CPU_PROJECT / "old" / "checkpoints" / "step_0000002"
    before = load_checkpoint_model(ckpt)
    config = json.loads((ckpt / "config.json").read_text())
    assert config["arch"].pop("norm") == "post"
    (ckpt / "config.json").write_text(json.dumps(config))
    after = load_checkpoint_model(ckpt)
    assert after.model.cfg.norm == "post"
    for name, tensor in before.model.state_dict().items():
        assert torch.equal(tensor, after.model.state_dict()[name]), name
    resumed = tiny_config(tmp_path, *common, "train.max_steps=3", f"train.resume={ckpt}", data=data)
    assert check_resume_config(resumed, ckpt) == ["train.max_steps: 2 -> 3"]
    with pytest.raises(ConfigError, match="arch.norm='pre' differs from the checkpoint's 'post'"):
        check_resume_config(tiny_config(tmp_path, *common, "arch.norm=pre", f"train.resume={ckpt}", data=data), ckpt)
    train(resumed)
    assert (ckpt.parent / "step_0000003" / "model.pt").is_file()


def test_step_flops_count_block_applications_alike():
    """The FLOP count is shared: a transformer of 6 layers and a TRM whose step applies its 2
    layers 3 times (all with gradients) cost the same; HRM's Q-continue target adds one forward."""
    trm = build_model(validate_arch(dict(name="trm", num_layers=2, H_cycles=1, L_cycles=2, **COMMON)), META,
                      torch.device("cpu"))
    transformer = make("transformer", num_layers=6)
    for training in (True, False):
        assert trm.step_flops(64, training) == transformer.step_flops(64, training)
    hrm, hrm_plain = make("hrm"), make("hrm", no_act_continue=True)
    forward = hrm.step_flops(64, training=False) - hrm.lm_head.weight.numel() * 2 * 64 * 9
    assert hrm.step_flops(64) - hrm_plain.step_flops(64) == forward


# ---------------------------------------------------------------------------------------------
# Configs and counts


@pytest.mark.parametrize("arch", ["hrm", "transformer"])
def test_arch_option_is_the_typed_default(arch):
    """`arch=<name>` is generated from the family's typed config (training/config.py: register_configs)."""
    from training.config import arch_config

    config_cls = MODELS[arch][0]
    assert set(arch_config(arch)) == set(config_cls.model_fields)
    assert config_cls.model_validate(arch_config(arch)).model_dump() == config_cls().model_dump()
    assert config_cls().puzzle_emb_ndim == config_cls().hidden_size  # the default None means hidden_size


@pytest.mark.parametrize("arch", ["trm", "hrm", "transformer"])
def test_count_parameters_includes_the_puzzle_embedding(arch):
    raw = {**SMALL.get(arch, dict(name="trm", **COMMON)), "puzzle_emb_ndim": 48}
    model = build_model(validate_arch(raw), META, torch.device("cpu"))
    counts = count_parameters(model)
    assert counts["puzzle_emb"] == META.num_puzzle_identifiers * 48
    assert counts["total"] == sum(p.numel() for _, p in model.named_parameters())
    assert any(p is model.puzzle_emb for p in model.parameters())  # a parameter, not a buffer
    without = build_model(validate_arch({**raw, "puzzle_emb_ndim": 0}), META, torch.device("cpu"))
    assert count_parameters(without) == {"total": counts["total"] - counts["puzzle_emb"], "puzzle_emb": 0}
