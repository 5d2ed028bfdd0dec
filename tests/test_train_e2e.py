"""A tiny end-to-end run through the real Hydra config: it must learn, checkpoint, and be
scoreable by scripts/evaluate.py with the same numbers."""

import json

import pytest
from conftest import assert_one_line_error, run_in_process, run_module, tiny_config
from training.loop import train

pytestmark = pytest.mark.slow  # not in the fast subset (pytest -m "not slow")


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("e2e")
    result = train(tiny_config(tmp, "train.max_steps=240", "train.eval_interval=120", "train.log_every=20",
                               "train.eval_at_start=true", "logging.run_name=tiny"))
    return tmp, result


def read_metrics(run_dir):
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def test_tiny_run_learns(tiny_run):
    tmp, result = tiny_run
    records = read_metrics(tmp / "runs" / "trm-lsa-cpu" / "tiny")
    train_losses = [r["train/lm_loss"] for r in records if "train/lm_loss" in r]
    evals = [r for r in records if "eval/lsa/optimal_cost_rate" in r]
    assert len(train_losses) == 12 and len(evals) == 3  # eval at start, at 120 and at 240
    assert train_losses[-1] < 0.6 * train_losses[0]
    # Chance for a random 4x4 permutation is 1/24 (a little more with ties); the untrained
    # model's scores decode to optimal assignments rarely, the trained one's mostly.
    before, after = evals[0]["eval/lsa/projected_optimal_cost_rate"], result["eval/lsa/projected_optimal_cost_rate"]
    assert after > 0.6 and after > before + 0.4
    assert result["eval/accuracy"] > 0.78  # per cell; all-"unassigned" scores 0.75
    assert result["step"] == 240


def test_checkpoint_layout(tiny_run):
    tmp, _ = tiny_run
    ckpts = tmp / "runs" / "trm-lsa-cpu" / "tiny" / "checkpoints"
    assert (ckpts / "latest").read_text() == "step_0000240"
    assert sorted(p.name for p in ckpts.iterdir() if p.is_dir()) == ["step_0000120", "step_0000240"]  # keep 2
    for name in ("model.pt", "ema.pt", "optim.pt", "state.pt", "config.json", "meta.json"):
        assert (ckpts / "step_0000240" / name).is_file()
    meta = json.loads((ckpts / "step_0000240" / "meta.json").read_text())
    assert meta["step"] == 240 and meta["dataset"]["seq_len"] == 16


def test_evaluate_script_reproduces_training_eval(tiny_run):
    tmp, result = tiny_run
    run_dir = tmp / "runs" / "trm-lsa-cpu" / "tiny"
    out = run_in_process("scripts/evaluate.py", "--checkpoint", str(run_dir), "--no-progress")
    assert out.returncode == 0, out.stderr
    metrics = json.loads(out.stdout.strip().splitlines()[-1])
    assert metrics["weights"] == "ema"
    for key in ("eval/accuracy", "eval/lsa/optimal_cost_rate", "eval/lsa/projected_optimal_cost_rate"):
        assert metrics[key] == pytest.approx(result[key], abs=1e-6), key
    # The other answer policy: the Q head's halt step. Its exact accuracy is the halted view
    # training's (max_steps) evaluation reported, and it never takes more steps.
    out = run_in_process("scripts/evaluate.py", "--checkpoint", str(run_dir), "--no-progress", "--halting", "q_head")
    assert out.returncode == 0, out.stderr
    halted = json.loads(out.stdout.strip().splitlines()[-1])
    assert halted["eval/exact_accuracy"] == pytest.approx(result["eval/halt_exact_accuracy"], abs=1e-6)
    assert halted["eval/steps"] == pytest.approx(result["eval/halt_steps"], abs=1e-6)
    assert 1 <= halted["eval/steps"] <= result["eval/steps"] == 2  # cfg_lsa_cpu's tiny halt_max_steps


def test_evaluate_script_errors(tiny_run, tmp_path):
    tmp, _ = tiny_run
    run_dir = tmp / "runs" / "trm-lsa-cpu" / "tiny"
    missing = run_module("scripts/evaluate.py", "--checkpoint", str(tmp_path / "nope"))  # the real command line
    assert_one_line_error(missing, "nope")
    from conftest import build_lsa

    other = build_lsa(tmp_path / "lsa3", n=3)
    wrong = run_in_process("scripts/evaluate.py", "--checkpoint", str(run_dir), "--data", str(other))
    assert_one_line_error(wrong, "seq_len=9")


def test_pretrain_entry_point(tmp_path):
    """pretrain.py's command line (in-process: test_config.py and test_resilience.py run the real
    one), shrunk: builds its dataset, trains, prints a JSON line."""
    result = run_in_process(
        "pretrain.py", "--config-name", "cfg_lsa_cpu", f"data.path={tmp_path / 'data'}",
        "data.build_args.num_train=50", "data.build_args.num_test=20", "train.max_steps=6", "train.eval_interval=3",
        "train.global_batch_size=16", f"logging.runs_dir={tmp_path / 'runs'}", "logging.progress=false",
    )
    assert result.returncode == 0, result.stderr
    final = json.loads(result.stdout.strip().splitlines()[-1])
    assert final["step"] == 6 and "eval/lsa/optimal_cost_rate" in final
    assert (tmp_path / "data" / "train" / "dataset.json").is_file()


def test_evaluate_compile_takes_inductor_options_from_the_user_only(tiny_run, tmp_path, monkeypatch, capsys):
    """evaluate.py --compile never applies the train.inductor options stored in a checkpoint's
    config (a file must not choose what runs); --inductor passes them explicitly. torch.compile
    is stubbed here: compiling on the CPU would cost a minute."""
    import importlib.util
    import shutil
    import sys

    import torch
    import torch._inductor.config as inductor_config

    from conftest import REPO

    tmp, result = tiny_run
    ckpt = tmp_path / "step_0000240"
    shutil.copytree(tmp / "runs" / "trm-lsa-cpu" / "tiny" / "checkpoints" / "step_0000240", ckpt)
    config = json.loads((ckpt / "config.json").read_text())
    config["train"]["inductor"] = {"coordinate_descent_tuning": True}
    (ckpt / "config.json").write_text(json.dumps(config))
    spec = importlib.util.spec_from_file_location("evaluate_script", REPO / "scripts" / "evaluate.py")
    script = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, "evaluate_script", script)  # pydantic resolves annotations through it
    spec.loader.exec_module(script)
    compiled = []
    monkeypatch.setattr(torch, "compile", lambda fn, **kw: compiled.append(inductor_config.coordinate_descent_tuning) or fn)
    with inductor_config.patch(coordinate_descent_tuning=False):  # torch's own way to restore it afterwards
        metrics = script.evaluate_checkpoint(script.EvaluateArgs(checkpoint=ckpt, compile=True, progress=False))
        # one torch.compile per block (train.compile_scope=blocks), all without the stored options
        assert compiled and set(compiled) == {False} and "pass --inductor" in capsys.readouterr().err
        compiled.clear()
        assert metrics["eval/accuracy"] == pytest.approx(result["eval/accuracy"], abs=1e-6)
        script.evaluate_checkpoint(script.EvaluateArgs(checkpoint=ckpt, compile=True, progress=False,
                                                       inductor="coordinate_descent_tuning=true"))
        assert compiled and set(compiled) == {True}


@pytest.mark.parametrize("compile_optimizer", [False, True])
def test_compiled_loop_does_not_recompile_as_batches_change(compile_optimizer, tmp_path, monkeypatch):
    """Once the training step and the evaluation are compiled, a changing batch composition
    (examples halting and being replaced at different ACT steps, the LR warming up, the padded
    last evaluation batch, train/eval switches) must not trigger a recompile. AOTAutograd with the
    eager backend stands in for Inductor on the CPU (the block regions need AOTAutograd): guards
    and recompiles are Dynamo's either way. With train.compile_optimizer the optimizer's and
    EMA's updates are compiled too (the LR changes every step: no recompile either)."""
    import torch
    import torch._dynamo
    from training.loop import run_evaluation, train_step
    from training.engine.setup import build_train_state

    real_compile = torch.compile
    monkeypatch.setattr(torch, "compile", lambda fn, **kw: real_compile(fn, backend="aot_eager", dynamic=kw.get("dynamic")))
    torch._dynamo.reset()
    cfg = tiny_config(tmp_path, "train.compile=on", "arch.halt_max_steps=3", "arch.halt_exploration_prob=0.5",
                      "optim.lr_warmup_steps=5",
                      "data.build_args.num_test=21", "train.eval_batch_size=16", "train.save_checkpoints=false",
                      f"train.compile_optimizer={str(compile_optimizer).lower()}")
    state = build_train_state(cfg, progress=False)
    assert state.compiled
    from training.engine.optim import foreach_guarded_adam_atan2_
    assert (state.adam._update is not foreach_guarded_adam_atan2_) == compile_optimizer
    with torch.no_grad():  # the Q head says "halt": exploration then spreads the halting steps
        state.model.q_head.bias[0] = 5.0
    halted = []
    train_step(state)
    run_evaluation(state, save_path=None)
    try:
        with torch._dynamo.config.patch(error_on_recompile=True):
            for _ in range(8):
                train_step(state)
                halted.append(state.carry["halted"].clone())
            metrics = run_evaluation(state, save_path=None)
            train_step(state)
    finally:
        torch._dynamo.reset()
    mixed = [h for h in halted if 0 < h.float().mean() < 1]
    assert len(mixed) >= 4 and len({tuple(h.tolist()) for h in mixed}) == len(mixed)  # the composition did change
    assert metrics["eval/examples"] == 21 and metrics["eval/steps"] == 3  # padding rows left out; all run to halt_max_steps
