"""arch=hrm and arch=transformer through the real Hydra config, the loop, the LSA evaluator,
checkpoints and scripts/evaluate.py, as TRM goes in test_train_e2e.py; HRM resumes bit for bit."""

import json

import pytest
from conftest import build_lsa, run_in_process, sigterm_after_step, tiny_config
from test_resilience import assert_same_tensors, final_state, losses
from training.loop import train

pytestmark = pytest.mark.slow  # not in the fast subset (pytest -m "not slow")

PROJECT = "trm-lsa-cpu"
# The tiny preset's TRM sizes carry over to HRM (one block per module); the transformer drops
# the recursion fields and makes one pass per example.
ARCH = {
    "hrm": ["arch=hrm", "arch.H_layers=1", "arch.L_layers=1"],
    "transformer": ["arch=transformer", "~arch.H_cycles", "~arch.L_cycles", "arch.halt_max_steps=1",
                    "arch.num_layers=2"],
}
# The tiny runs also train the pre-norm transformer (arch.norm=pre) end to end.
RUNS = {**ARCH, "transformer-pre": [*ARCH["transformer"], "arch.norm=pre"]}


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    return build_lsa(tmp_path_factory.mktemp("data") / "lsa4", num_train=300, num_test=100, num_aug=4)


@pytest.fixture(scope="module", params=sorted(RUNS))
def tiny_run(request, tmp_path_factory, data_dir):
    tmp = tmp_path_factory.mktemp(f"e2e-{request.param}")
    result = train(tiny_config(tmp, *RUNS[request.param], "train.max_steps=150", "train.eval_interval=75",
                               "train.log_every=20", "train.eval_at_start=true", "logging.run_name=tiny", data=data_dir))
    return request.param.split("-")[0], tmp / "runs" / PROJECT / "tiny", result


def test_tiny_run_learns(tiny_run):
    arch, run_dir, result = tiny_run
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    config = json.loads((run_dir / "config.json").read_text())
    assert config["arch"]["name"] == arch
    train_losses = [r["train/lm_loss"] for r in records if "train/lm_loss" in r]
    evals = [r for r in records if "eval/lsa/optimal_cost_rate" in r]
    assert len(evals) == 3  # at the start, at 75 and at 150
    assert train_losses[-1] < 0.7 * train_losses[0]
    before, after = evals[0]["eval/lsa/projected_optimal_cost_rate"], result["eval/lsa/projected_optimal_cost_rate"]
    assert after > before + 0.2, (before, after)  # chance for a 4x4 permutation is about 1/24
    for key in ("eval/accuracy", "eval/exact_accuracy", "eval/lsa/valid_permutation_rate", "eval/q_halt_accuracy"):
        assert key in result, key
    assert result["eval/steps"] == (1 if arch == "transformer" else 2)
    assert result["step"] == 150


def test_checkpoint_and_evaluate_script_reproduce_training_eval(tiny_run):
    arch, run_dir, result = tiny_run
    ckpt = run_dir / "checkpoints" / "step_0000150"
    assert (run_dir / "checkpoints" / "latest").read_text() == ckpt.name
    for name in ("model.pt", "ema.pt", "optim.pt", "state.pt", "config.json", "meta.json"):
        assert (ckpt / name).is_file()
    # in-process: evaluate.py's real command line is test_train_e2e's
    out = run_in_process("scripts/evaluate.py", "--checkpoint", str(run_dir), "--no-progress")
    assert out.returncode == 0, out.stderr
    metrics = json.loads(out.stdout.strip().splitlines()[-1])
    assert metrics["weights"] == "ema"
    for key in ("eval/accuracy", "eval/exact_accuracy", "eval/lsa/optimal_cost_rate"):
        assert metrics[key] == pytest.approx(result[key], abs=1e-6), key


def test_hrm_stop_and_resume_is_bit_exact_on_cpu(tmp_path, data_dir, monkeypatch):
    """As test_resilience.py's TRM test: the carry (z_high, z_low), the optimizers, the EMA and
    the RNGs (exploration, the Q-continue target's step) all come back."""
    common = [*ARCH["hrm"], "arch.halt_exploration_prob=0.5", "train.max_steps=30", "train.eval_interval=15",
              "train.log_every=1", "train.keep_checkpoints=5"]
    straight = train(tiny_config(tmp_path, *common, "logging.run_name=straight", data=data_dir))
    with sigterm_after_step(monkeypatch, 11):
        first = train(tiny_config(tmp_path, *common, "logging.run_name=split", data=data_dir))
    assert first["preempted"] and first["step"] == 11
    second = train(tiny_config(tmp_path, *common, "logging.run_name=split", "train.resume=true", data=data_dir))
    assert second["step"] == 30 and not second["preempted"]

    runs = tmp_path / "runs" / PROJECT
    assert losses(runs / "split") == losses(runs / "straight")
    assert_same_tensors(final_state(runs / "split"), final_state(runs / "straight"))
    assert second["eval/lsa/optimal_cost_rate"] == straight["eval/lsa/optimal_cost_rate"]


@pytest.mark.parametrize("arch", sorted(ARCH))
def test_compiled_step_and_evaluation_do_not_recompile(arch, tmp_path, data_dir, monkeypatch):
    """torch.compile traces HRM's and the transformer's step whole and keeps one graph as the
    batch composition and train/eval mode change (AOTAutograd's eager backend stands in for
    Inductor on the CPU, as in test_train_e2e.py)."""
    import torch
    import torch._dynamo
    from training.loop import run_evaluation, train_step
    from training.engine.setup import build_train_state

    real_compile = torch.compile
    monkeypatch.setattr(torch, "compile", lambda fn, **kw: real_compile(fn, backend="aot_eager", dynamic=kw.get("dynamic")))
    torch._dynamo.reset()
    cfg = tiny_config(tmp_path, *ARCH[arch], "train.compile=on", "arch.halt_exploration_prob=0.5",
                      "train.eval_batch_size=48", "train.save_checkpoints=false", data=data_dir)
    state = build_train_state(cfg, progress=False)
    assert state.compiled
    train_step(state)
    run_evaluation(state, save_path=None)
    try:
        with torch._dynamo.config.patch(error_on_recompile=True):
            for _ in range(4):
                train_step(state)
            metrics = run_evaluation(state, save_path=None)
            train_step(state)
    finally:
        torch._dynamo.reset()
    assert metrics["eval/examples"] == 100
