"""train.compile_scope: "blocks" compiles each block alone (one graph per gradient mode, reused
by every block), "region" makes each block application a nested compile region of the step's
one graph; either step must compute what the eager step computes, and the block must really be
compiled once and reused (not 2 x H x L inlined copies). On the CPU,
AOTAutograd with the eager backend stands in for Inductor: the tracing, regions and autograd
are the same; only the kernels differ (the H200 check is tests/test_gpu.py)."""

import pytest
import torch

from models.act import block_region
from models.losses import ACTLossHead
from models import build_model, validate_arch
from test_model import META, SMALL, batch
from models.layers import Block
from training.engine.setup import compile_step

pytestmark = pytest.mark.slow  # not in the fast subset (pytest -m "not slow")

NO_REGIONS = pytest.mark.skipif(block_region is None, reason="torch < 2.8 has no nested_compile_region")

# Each family at test_model's tiny sizes; TRM's own fields are swapped for each family's.
COMMON = {k: v for k, v in SMALL.items() if k not in ("name", "num_layers", "H_cycles", "L_cycles")}
FAMILIES = {
    "trm": dict(SMALL),
    "trm_mlp": dict(SMALL, mixer="mlp"),
    "hrm": dict(COMMON, name="hrm", H_layers=2, L_layers=1, H_cycles=2, L_cycles=2),
    "transformer": dict(COMMON, name="transformer", num_layers=3, halt_max_steps=1),
}


def family(name: str):
    torch.manual_seed(0)
    return build_model(validate_arch(FAMILIES[name]), META, torch.device("cpu"))


def compiled_with(monkeypatch, head, scope):
    """compile_step's result with aot_eager, and the Dynamo graphs it produced."""
    graphs = []
    real_compile = torch.compile

    def backend(gm, example_inputs):
        graphs.append(gm)
        return torch._dynamo.lookup_backend("aot_eager")(gm, example_inputs)

    monkeypatch.setattr(torch, "compile", lambda fn, *args, **kw: real_compile(fn, backend=backend,
                                                                                dynamic=kw.get("dynamic")))
    return compile_step(head, scope), graphs


def step_results(fn, model, seed=3):
    b = batch(6, seed=seed)
    carry, _, _, _ = ACTLossHead(model)(model.initial_carry(b), b)  # a mid-run carry: one eager step in
    torch.manual_seed(7)
    new_carry, loss, metrics, outputs = fn(carry, b)
    loss.backward()
    grads = {name: p.grad.clone() for name, p in model.named_parameters() if p.grad is not None}
    model.zero_grad(set_to_none=True)
    return new_carry, loss.detach(), outputs, grads


@pytest.mark.parametrize("name", sorted(FAMILIES))
@pytest.mark.parametrize("scope", ["blocks", pytest.param("region", marks=NO_REGIONS)])
def test_compiled_step_matches_eager(scope, name, monkeypatch):
    torch._dynamo.reset()
    model = family(name).train()
    eager = step_results(ACTLossHead(model), model)
    fn, graphs = compiled_with(monkeypatch, ACTLossHead(model), scope)
    try:
        got = step_results(fn, model)
        step_results(fn, model, seed=4)  # another batch and carry: no new graphs
    finally:
        torch._dynamo.reset()
    forward, _ = model.block_applications()
    if scope == "region":
        assert model.block_regions
        assert len(graphs) == 1  # one graph for the step: no graph break at the regions
        regions = [n for n in graphs[0].graph.nodes if n.op == "call_function" and "invoke_subgraph" in str(n.target)]
        assert len(regions) == forward * (2 if model.bootstraps_q_continue else 1)  # every application, once each
        assert len({n.args[0].target for n in regions}) <= 2  # two traced: with and without gradients
    else:  # one graph of one block per gradient mode, reused by every block and application
        assert not model.block_regions
        assert len(graphs) == (1 if name == "transformer" else 2)
        assert all(not [n for n in g.graph.nodes if n.op == "call_module" and "blocks" in str(n.target)] for g in graphs)
    torch.testing.assert_close(got[1], eager[1], rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(got[2]["logits"], eager[2]["logits"], rtol=1e-5, atol=1e-5)
    for key in model.STATES:
        torch.testing.assert_close(got[0][key], eager[0][key], rtol=1e-5, atol=1e-5)
    assert got[3].keys() == eager[3].keys() and got[3]
    for key in eager[3]:
        torch.testing.assert_close(got[3][key], eager[3][key], rtol=1e-4, atol=1e-5)


def test_step_scope_unrolls_the_blocks(monkeypatch):
    torch._dynamo.reset()
    model = family("trm").train()
    fn, graphs = compiled_with(monkeypatch, ACTLossHead(model), "step")
    try:
        step_results(fn, model)
    finally:
        torch._dynamo.reset()
    assert not model.block_regions and len(graphs) == 1
    assert not [n for n in graphs[0].graph.nodes if "invoke_subgraph" in str(n.target)]


def test_config_default_and_choices(tmp_path):
    from conftest import tiny_config
    from training.config import ConfigError

    assert tiny_config(tmp_path).train.compile_scope == "blocks"
    assert tiny_config(tmp_path, "train.compile_scope=step").train.compile_scope == "step"
    with pytest.raises(ConfigError, match="compile_scope"):
        tiny_config(tmp_path, "train.compile_scope=layers")


@pytest.mark.parametrize("name", ["trm", "hrm", "transformer"])
def test_blocks_compile_once_per_gradient_mode_not_per_instance(name, monkeypatch):
    """More block instances than Dynamo's recompile limit (8): were the graphs guarded on each
    instance, the ninth block on would recompile or fall back to eager. Dynamo's own frame
    counter: one compiled frame per gradient mode (the transformer has one), no recompiles."""
    from torch._dynamo.utils import counters

    torch._dynamo.reset()
    counters.clear()
    FAMILIES["deep"] = {"trm": dict(SMALL, num_layers=10), "hrm": dict(FAMILIES["hrm"], H_layers=5, L_layers=5),
                        "transformer": dict(FAMILIES["transformer"], num_layers=10)}[name]
    try:
        model = family("deep").train()
    finally:
        del FAMILIES["deep"]
    assert sum(isinstance(m, Block) for m in model.modules()) >= 10 > torch._dynamo.config.cache_size_limit
    fn, graphs = compiled_with(monkeypatch, ACTLossHead(model), "blocks")
    try:
        step_results(fn, model)
        step_results(fn, model, seed=4)
        frames, recompiles = dict(counters["frames"]), sum(counters["recompiles"].values())
    finally:
        torch._dynamo.reset()
    expected = 1 if name == "transformer" else 2
    assert len(graphs) == expected and frames.get("ok") == expected and frames.get("total") == expected, frames
    assert recompiles == 0
