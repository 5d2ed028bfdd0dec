"""Hostile input, round three: sizes that would make a step endless or a model too large, from
an override, a checkpoint's config.json or an export's config.json; the answer policy; damaged
RNG states. Same contract as tests/test_hostile_inputs.py (whose helpers this reuses): exit 2,
one line naming the culprit, nothing that existed changed, nothing new where nothing may be.

Also: a SIGTERM during evaluation stops it between batches and a resume redoes it first;
evaluate.py interrupted leaves no partial predictions; under torchrun a rank with no
evaluation example takes part in the evaluation with padding only."""

import json
import os
import shutil
import signal

import numpy as np
import pytest
import torch

from conftest import CPU_PROJECT, REPO, lsa_world_with_export, run_in_process, run_module, tiny_config
from test_hostile_inputs import (
    case_config, check_case, ckpt_of, copy_data, copy_run, digest, edit_json, edit_pt, never_touch_real_places, pretrain,
)

PROJECT = CPU_PROJECT


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """A dataset, a finished tiny run with checkpoints, and an export of it, built once."""
    return lsa_world_with_export(tmp_path_factory.mktemp("hostile-r3"))


# ---------------------------------------------------------------------------------------------
# Building blocks: each setup(world, tmp_path) -> (argv, watched paths, paths that must not exist)


case_override = case_config  # a run of the shared dataset with these overrides


def case_build(*extra):
    """A run whose dataset is missing, so that it would be built (it must not even start)."""
    def setup(w, t):
        return pretrain(t / "nodata" / "x", t, *extra), [], [t / "nodata", t / "runs" / PROJECT / "new"]
    return setup


def checkpoint_config(fn):
    """The base run with its latest checkpoint's config.json edited by fn(config)."""
    def make(w, t):
        run = copy_run(w, t)
        edit_json(ckpt_of(run) / "config.json", fn)
        return run
    return make


def arch_set(**values):
    return lambda config: config["arch"].update(values)


def case_evaluate(make_run, *flags):
    def setup(w, t):
        run = make_run(w, t)
        out = t / "predictions"
        return ["scripts/evaluate.py", "--no-progress", "--checkpoint", str(run), "--save-predictions", str(out),
                *flags], [run], [out]
    return setup


def lsa_input(t):
    path = t / "costs.npy"
    np.save(path, np.arange(1, 17, dtype=np.int64).reshape(1, 4, 4) % 9 + 1)
    return path


def case_solve_checkpoint(make_run):
    def setup(w, t):
        run = make_run(w, t)
        return ["scripts/solve.py", "--checkpoint", str(run), "--input", str(lsa_input(t))], [run], []
    return setup


def case_solve_export(fn):
    """solve.py on a copy of the export whose config.json fn(config) edited."""
    def setup(w, t):
        export = t / "export"
        shutil.copytree(w["export"], export)
        edit_json(export / "config.json", fn)
        return ["scripts/solve.py", "--checkpoint", str(export), "--input", str(lsa_input(t))], [export], []
    return setup


def case_resume(mutate, *extra):
    def setup(w, t):
        run = copy_run(w, t)
        mutate(run)
        data = copy_data(w, t)
        return pretrain(data, t, "logging.run_name=base", "train.resume=true", "train.max_steps=9", *extra), \
            [run, data], []
    return setup


def rng_edit(fn):
    return lambda run: edit_pt(ckpt_of(run) / "state.pt", lambda state: fn(state["rng"]))


def zero_python(rng):
    version, keys, gauss = rng["python"]
    rng["python"] = (version, (0,) * 624 + (keys[624],), gauss)


def zero_numpy(rng):
    rng["numpy"]["keys"] = torch.zeros_like(rng["numpy"]["keys"])


def zero_torch(rng):
    rng["torch"] = torch.zeros_like(rng["torch"])


# Individually legal sizes whose product is not: hidden 8192 with H 64 x L 64 (8320 block
# applications per ACT step, each ~5e10 FLOPs) for 8 steps is 3.5e15 FLOPs per example.
COSTLY = dict(hidden_size=8192, num_heads=8, H_cycles=64, L_cycles=64, halt_max_steps=8)
COSTLY_CLI = [f"arch.{k}={v}" for k, v in COSTLY.items()]
# Each example cheap enough, but one training step of 65536 of them is ~5e17 FLOPs.
WIDE_CLI = ["arch.hidden_size=4096", "arch.num_heads=8", "arch.H_cycles=16", "arch.L_cycles=16"]

CASES = {
    # --- overrides -------------------------------------------------------------------------
    "override halt_max_steps=1e9": (case_override("arch.halt_max_steps=1e9"), "arch.halt_max_steps"),
    "override H_cycles=1e6": (case_override("arch.H_cycles=1e6"), "arch.H_cycles"),
    "override L_cycles=1e5": (case_override("arch.L_cycles=100000"), "arch.L_cycles"),
    "override num_layers=1e5": (case_override("arch.num_layers=100000"), "arch.num_layers"),
    "override hidden_size=1e6": (case_override("arch.hidden_size=1000000"), "arch.hidden_size"),
    "override num_heads=1e5": (case_override("arch.num_heads=100000"), "arch.num_heads"),
    "override puzzle_emb_len=1e6": (case_override("arch.puzzle_emb_len=1000000"), "arch.puzzle_emb_len"),
    "override q_loss_weight<0": (case_override("arch.q_loss_weight=-1"), "arch.q_loss_weight"),
    "override cycles product": (case_override("arch.H_cycles=500", "arch.L_cycles=500"), "MAX_BLOCK_APPLICATIONS"),
    "override FLOPs per example": (case_override(*COSTLY_CLI), "MAX_EXAMPLE_FLOPS"),
    "override FLOPs per training step": (case_override(*WIDE_CLI, "train.global_batch_size=65536"),
                                         "train.global_batch_size=65536"),
    "override FLOPs per eval step": (case_override(*WIDE_CLI, "train.eval_batch_size=1048576"),
                                     "train.eval_batch_size=1048576"),
    "override global_batch_size=1e9": (case_override("train.global_batch_size=1000000000"), "train.global_batch_size"),
    "override eval_interval=1e13": (case_override("train.eval_interval=10000000000000"), "train.eval_interval"),
    "override max_steps=1e13": (case_override("train.max_steps=10000000000000"), "train.max_steps"),
    "override lr_warmup_steps=1e13": (case_override("optim.lr_warmup_steps=10000000000000"), "optim.lr_warmup_steps"),
    "override dist_timeout_s=1e300": (case_override("train.dist_timeout_s=1e300"), "train.dist_timeout_s"),
    "override wandb_examples=1e6": (case_override("logging.wandb_examples=1000000"), "logging.wandb_examples"),
    "override eval_halting=bogus": (case_override("train.eval_halting=bogus"), "train.eval_halting"),
    "override build num_train=1e12": (case_build("data.build_args={n: 3, num_train: 1000000000000}"), "num_train"),
    # --- a checkpoint's config.json --------------------------------------------------------
    "checkpoint halt_max_steps=1e9 (evaluate)": (case_evaluate(checkpoint_config(arch_set(halt_max_steps=10**9))),
                                                 "halt_max_steps"),
    "checkpoint H_cycles=1e6 (evaluate)": (case_evaluate(checkpoint_config(arch_set(H_cycles=10**6))), "H_cycles"),
    "checkpoint FLOPs per example (evaluate)": (case_evaluate(checkpoint_config(arch_set(**COSTLY))),
                                                "MAX_EXAMPLE_FLOPS"),
    "checkpoint eval_halting=bogus (evaluate)": (case_evaluate(checkpoint_config(
        lambda c: c["train"].update(eval_halting="bogus"))), "eval_halting"),
    "checkpoint halt_max_steps=1e9 (solve)": (case_solve_checkpoint(checkpoint_config(arch_set(halt_max_steps=10**9))),
                                              "halt_max_steps"),
    "checkpoint H_cycles=1e6 (solve)": (case_solve_checkpoint(checkpoint_config(arch_set(H_cycles=10**6))), "H_cycles"),
    "checkpoint FLOPs per example (solve)": (case_solve_checkpoint(checkpoint_config(arch_set(**COSTLY))),
                                             "MAX_EXAMPLE_FLOPS"),
    "checkpoint halt_max_steps=1e9 (resume)": (case_resume(lambda run: edit_json(
        ckpt_of(run) / "config.json", arch_set(halt_max_steps=10**9))), "halt_max_steps"),
    "evaluate --batch-size 1e9": (case_evaluate(lambda w, t: copy_run(w, t), "--batch-size", "1000000000"),
                                  "--batch-size"),
    # --- an export's config.json -------------------------------------------------------------
    "export halt_max_steps=1e9": (case_solve_export(arch_set(halt_max_steps=10**9)), "halt_max_steps"),
    "export H_cycles=1e6": (case_solve_export(arch_set(H_cycles=10**6)), "H_cycles"),
    "export FLOPs per example": (case_solve_export(arch_set(**COSTLY)), "MAX_EXAMPLE_FLOPS"),
    "export seq_len=1e9": (case_solve_export(lambda c: c["data"].update(seq_len=10**9)), "seq_len"),
    "export vocab_size=2^30": (case_solve_export(lambda c: c["data"].update(vocab_size=1 << 30)), "vocab_size"),
    "export num_puzzle_identifiers=2^40": (case_solve_export(lambda c: c["data"].update(
        num_puzzle_identifiers=1 << 40)), "num_puzzle_identifiers"),
    "export eval_halting=bogus": (case_solve_export(lambda c: c.update(eval_halting="bogus")), "eval_halting"),
    # --- state.pt and meta.json --------------------------------------------------------------
    "rng torch zeroed": (case_resume(rng_edit(zero_torch)), "rng.torch"),
    "rng python zeroed": (case_resume(rng_edit(zero_python)), "rng.python"),
    "rng numpy zeroed": (case_resume(rng_edit(zero_numpy)), "rng.numpy"),
    "meta eval_pending not a bool": (case_resume(lambda run: edit_json(
        ckpt_of(run) / "meta.json", lambda m: m.update(eval_pending="yes"))), "eval_pending"),
}


@pytest.mark.parametrize("name", list(CASES))
def test_bad_input_fails_cleanly(world, tmp_path, monkeypatch, name):
    setup, culprit = CASES[name]
    argv, watched, absent = setup(world, tmp_path)
    before = [digest(p) for p in watched]
    monkeypatch.chdir(REPO)
    never_touch_real_places(monkeypatch)
    result = run_in_process(*argv)
    check_case(result, (argv, watched, absent), culprit, before)
    assert not list(tmp_path.rglob(".*.tmp-*")), "a temporary directory was left behind"


def test_the_table_covers_each_source_of_a_config():
    assert len(CASES) >= 20
    for source in ("override", "checkpoint", "export", "rng"):
        assert sum(name.startswith(source) for name in CASES) >= 3, source


def test_the_bounds_leave_the_published_setups_legal():
    """The reference TRM (Sudoku, maze) and HRM sizes stay well inside every bound."""
    from models import validate_arch
    from models.act import MAX_EXAMPLE_FLOPS, MAX_STEP_FLOPS, check_model_cost, check_step_cost

    for raw, seq_len in ((dict(name="trm"), 81), (dict(name="trm"), 900), (dict(name="hrm"), 900),
                         (dict(name="transformer"), 900)):
        arch = validate_arch(raw)
        check_model_cost(arch, 12, seq_len, 1_000_001)
        check_step_cost(arch, 12, seq_len, 768, True, "train.global_batch_size=768")
    assert MAX_EXAMPLE_FLOPS >= 100 * 5e12 and MAX_STEP_FLOPS >= 1000 * 3.7e13


# ---------------------------------------------------------------------------------------------
# A stop during evaluation


class SignalInEvaluation:
    """Wraps training.loop.evaluate: counts the model's evaluation steps and, when armed,
    sends this process SIGTERM from inside the first one (as a real signal arriving mid-batch)."""

    def __init__(self, monkeypatch, armed: bool):
        import training.loop as loop

        self.armed, self.calls, self.original = armed, 0, loop.evaluate
        monkeypatch.setattr(loop, "evaluate", self)

    def __call__(self, step_fn, *args, **kwargs):
        def step(carry, batch):
            self.calls += 1
            if self.armed and self.calls == 1:
                os.kill(os.getpid(), signal.SIGTERM)
            return step_fn(carry, batch)
        return self.original(step, *args, **kwargs)


def records(run_dir):
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


@pytest.mark.slow
def test_sigterm_during_evaluation_stops_it_and_a_resume_redoes_it_first(world, tmp_path, monkeypatch):
    from training.loop import train

    # 20 test examples in batches of 8: 3 batches x 2 ACT steps when it runs to the end.
    common = ["train.max_steps=6", "train.eval_interval=3", "train.eval_batch_size=8", "logging.run_name=stopped",
              "train.global_batch_size=32"]
    signalled = SignalInEvaluation(monkeypatch, armed=True)
    result = train(tiny_config(tmp_path, *common, data=world["data"]))
    run = tmp_path / "runs" / PROJECT / "stopped"
    assert result["preempted"] and result["step"] == 3
    assert signalled.calls == 1  # stopped after the ACT step the signal arrived in, not at the evaluation's end
    meta = json.loads((ckpt_of(run) / "meta.json").read_text())
    assert meta["step"] == 3 and meta["eval_pending"] is True and meta["preempted"] is True
    assert not any("eval/examples" in r for r in records(run))  # no partial figures were logged
    assert not (run / "eval").exists() or not any((run / "eval").iterdir())

    counted = SignalInEvaluation(monkeypatch, armed=False)
    resumed = train(tiny_config(tmp_path, *common, "train.resume=true", data=world["data"]))
    assert not resumed["preempted"] and resumed["step"] == 6
    assert counted.calls == 2 * 3 * 2  # the redone evaluation at step 3 and the one at step 6, whole
    after = records(run)
    evals = [r["step"] for r in after if "eval/examples" in r]
    assert evals == [3, 6] and all(r["eval/examples"] == 20 for r in after if "eval/examples" in r)
    first_train_after = next(i for i, r in enumerate(after) if r["step"] > 3)
    assert next(i for i, r in enumerate(after) if "eval/examples" in r) < first_train_after  # redone before training
    assert not json.loads((ckpt_of(run) / "meta.json").read_text()).get("eval_pending")


@pytest.mark.slow
def test_a_stop_in_a_step_with_an_evaluation_due_leaves_it_pending(world, tmp_path, monkeypatch):
    """The signal arrives during step 3, whose evaluation is due: the loop checkpoints without
    evaluating, and the resume evaluates step 3 before training on."""
    from conftest import sigterm_after_step
    from training.loop import train

    common = ["train.max_steps=6", "train.eval_interval=3", "logging.run_name=due", "train.global_batch_size=32"]
    with sigterm_after_step(monkeypatch, 3):
        first = train(tiny_config(tmp_path, *common, data=world["data"]))
    run = tmp_path / "runs" / PROJECT / "due"
    assert first["preempted"] and first["step"] == 3
    assert json.loads((ckpt_of(run) / "meta.json").read_text())["eval_pending"] is True
    train(tiny_config(tmp_path, *common, "train.resume=true", data=world["data"]))
    assert [r["step"] for r in records(run) if "eval/examples" in r] == [3, 6]


def test_evaluate_script_interrupted_leaves_no_predictions(world, tmp_path, monkeypatch):
    from models.losses import ACTLossHead

    original = ACTLossHead.forward

    def forward_then_signal(self, *args, **kwargs):
        os.kill(os.getpid(), signal.SIGTERM)
        return original(self, *args, **kwargs)

    monkeypatch.setattr(ACTLossHead, "forward", forward_then_signal)
    run = copy_run(world, tmp_path)
    before = digest(run)
    out = tmp_path / "predictions"
    result = run_in_process("scripts/evaluate.py", "--no-progress", "--checkpoint", str(run),
                            "--save-predictions", str(out))
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 128 + signal.SIGTERM and len(lines) == 1 and "SIGTERM" in lines[0], result.stderr
    assert not out.exists() and not list(tmp_path.glob(".predictions.tmp-*"))
    assert digest(run) == before

    monkeypatch.setattr(ACTLossHead, "forward", original)  # uninterrupted, the files land in place
    result = run_in_process("scripts/evaluate.py", "--no-progress", "--checkpoint", str(run),
                            "--save-predictions", str(out))
    assert result.returncode == 0, result.stderr
    assert [p.name for p in out.iterdir()] == ["lsa_predictions.npz"]
    assert not list(tmp_path.glob(".predictions.tmp-*"))


# ---------------------------------------------------------------------------------------------
# torchrun: a rank without evaluation examples


@pytest.mark.slow
def test_a_rank_with_no_evaluation_example_pads_and_the_gather_works(world, tmp_path):
    """train.eval_max_examples=1 on 2 ranks: rank 1's shard is empty; it runs padding batches,
    contributes nothing, and the evaluation reports the one example."""
    from test_distributed import PROJECT as DDP_PROJECT, evals, launch

    runs = tmp_path / "runs"
    result = launch(2, world["data"], runs, "logging.run_name=empty", "train.max_steps=4", "train.eval_interval=2",
                    "train.eval_max_examples=1", timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "Traceback" not in result.stderr
    records_ = evals(runs / DDP_PROJECT / "empty")
    assert [r["step"] for r in records_] == [2, 4] and all(r["eval/examples"] == 1 for r in records_)
    predictions = np.load(runs / DDP_PROJECT / "empty" / "eval" / "step_0000004" / "lsa_predictions.npz")
    assert predictions["costs"].shape[0] == 1


def test_eval_batches_give_every_rank_the_same_number_of_batches(world):
    from dataset.loader import DeviceArrays, PuzzleDataset, eval_batches

    data = PuzzleDataset.load(world["data"])
    arrays = DeviceArrays(data.test, data.test_meta, torch.device("cpu"), resident=True)
    for num_examples, size, ranks in ((1, 8, 2), (20, 4, 3), (5, 1, 4)):
        shards = [list(eval_batches(arrays, num_examples, size, rank, ranks)) for rank in range(ranks)]
        assert len({len(s) for s in shards}) == 1, (num_examples, size, ranks)
        assert sum(valid for s in shards for _, valid in s) == num_examples
        for shard in shards:
            for batch, valid in shard:
                assert batch["inputs"].shape[0] == size and (batch["labels"][valid:] == -100).all()


# Run by torchrun in place of pretrain.py: rank 1 sends itself SIGTERM from inside its first
# evaluation step, then pretrain.py runs as usual.
SIGNAL_RANK_ONE = '''
import os, runpy, signal, sys
sys.path.insert(0, {repo!r})
import training.loop as loop
original, fired = loop.evaluate, []
def evaluate(step_fn, *args, **kwargs):
    def step(carry, batch):
        if os.environ.get("RANK") == "1" and not fired:
            fired.append(1)
            os.kill(os.getpid(), signal.SIGTERM)
        return step_fn(carry, batch)
    return original(step, *args, **kwargs)
loop.evaluate = evaluate
sys.argv[0] = {pretrain!r}
runpy.run_path({pretrain!r}, run_name="__main__")
'''


@pytest.mark.slow
def test_a_signal_to_one_rank_during_evaluation_stops_every_rank_at_the_next_batch(world, tmp_path):
    """The ranks agree on a stop before every evaluation batch: rank 1 alone is signalled, both
    leave the evaluation at the next batch, write one checkpoint marked eval_pending and exit
    0; a resume on 2 ranks redoes that evaluation first."""
    import subprocess
    import sys

    from test_distributed import COMMON, PROJECT as DDP_PROJECT, env, evals, launch

    wrapper = tmp_path / "signal_rank_one.py"
    wrapper.write_text(SIGNAL_RANK_ONE.format(repo=str(REPO), pretrain=str(REPO / "pretrain.py")))
    runs = tmp_path / "runs"
    # 20 test examples, 10 per rank, 4 per batch: 3 batches on each rank.
    extra = ["logging.run_name=sig", "train.max_steps=4", "train.eval_interval=2", "train.eval_batch_size=8"]
    first = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node=2",
                            str(wrapper), "--config-name", "cfg_lsa_cpu", f"data.path={world['data']}",
                            f"logging.runs_dir={runs}", *COMMON, *extra], cwd=REPO, env=env(), capture_output=True,
                           text=True, timeout=600)
    assert first.returncode == 0, first.stderr[-3000:]
    assert "during evaluation" in first.stdout, first.stdout[-2000:]
    run = runs / DDP_PROJECT / "sig"
    meta = json.loads((ckpt_of(run) / "meta.json").read_text())
    assert meta["step"] == 2 and meta["eval_pending"] is True and meta["world_size"] == 2
    assert evals(run) == []
    resumed = launch(2, world["data"], runs, *extra, "train.resume=true", timeout=600)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert [r["step"] for r in evals(run)] == [2, 4] and all(r["eval/examples"] == 20 for r in evals(run))
