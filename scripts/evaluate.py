"""Score a saved checkpoint on a dataset's test split (or, with --split val, its validation split).

    python scripts/evaluate.py --checkpoint runs/trm-lsa/<run>            # latest checkpoint of a run
    python scripts/evaluate.py --checkpoint <run name or wandb id>        # the same, looked up under --runs-dir
    python scripts/evaluate.py --checkpoint runs/trm-lsa/<run>/checkpoints/step_0004000 --data data/other
    python scripts/evaluate.py --checkpoint <run> --split val             # a recipe search scores val/, not test/

The config is read from the checkpoint; the EMA weights are used when present (as in
training's evaluation). The last line printed is one JSON object of metrics.

A test-time budget (training/voting.py; README "Test-time compute"):

    python scripts/evaluate.py --checkpoint <run> --act-steps 64                      # more ACT steps than trained
    python scripts/evaluate.py --checkpoint <run> --vote 8 --vote-policy check        # 8 answers per instance

With --vote K > 1 every test instance is answered K times (itself and K-1 copies under the task's
symmetries), each answer mapped back and one chosen without the labels; the metrics then add
test_time/* (who chose: test_time/chosen_by_<policy>, the candidates' agreement, the plain
answer's exact accuracy) and lm_loss/q_halt_accuracy are not reported (no logits are voted).
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Literal, Optional

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a file from anywhere
if __name__ == "__main__":  # before the heavy imports: a signal now is one line, not a traceback
    from core.early_signals import exit_on_signals  # noqa: E402

    exit_on_signals()

import torch  # noqa: E402
from pydantic import BaseModel, Field  # noqa: E402

from core.cli import CLI, GivenPath, OptionalGivenPath, run_cli  # noqa: E402
from core.errors import InputError  # noqa: E402
from core.paths import refuse_broken_link  # noqa: E402
from dataset.common import _umask  # noqa: E402
from dataset.loader import DeviceArrays, PuzzleDataset  # noqa: E402
from evaluators import build_evaluators  # noqa: E402
from evaluators.tasks import get_task  # noqa: E402
from models import build_model, validate_arch  # noqa: E402
from models.act import check_model_cost, check_step_cost  # noqa: E402
from models.losses import ACTLossHead  # noqa: E402
from training.engine.checkpoint import (  # noqa: E402
    CheckpointError, check_data_compatible, load_config, load_meta, load_weights, resolve_checkpoint,
)
from training.config import MAX_BATCH_SIZE, ConfigError, check_inductor_options, validate_config  # noqa: E402
from training.engine.evaluation import evaluate  # noqa: E402
from training.bookkeeping.runs import locate_run  # noqa: E402
from training.engine.setup import apply_inductor_options, compile_step, resolve_device  # noqa: E402
from training.voting import (  # noqa: E402
    BudgetError, answer_candidates, candidate_symmetries, check_act_steps, check_votes, evaluate_votes, with_act_steps,
)
from training.engine.threads import apply_threads  # noqa: E402


class EvaluateArgs(BaseModel):
    checkpoint: GivenPath = Field(description="checkpoint directory, or a run (directory, name or wandb id: its latest checkpoint)")
    runs_dir: GivenPath = Field(Path("runs"), description="where a run name or wandb id given as --checkpoint is looked up")
    data: OptionalGivenPath = Field(None, description="dataset directory (default: the one the run trained on)")
    split: Literal["test", "val"] = Field("test", description="the split to score: test, or val (a dataset built with "
                                          "--val-size)")
    device: str = Field("auto", description="auto, cpu, cuda, cuda:N")
    ema: bool = Field(True, description="use the EMA weights when the checkpoint has them")
    batch_size: Optional[int] = Field(None, ge=1, le=MAX_BATCH_SIZE, description="default: the run's eval batch size")
    compile: bool = Field(False, description="torch.compile the model (worth it for large test sets on a GPU)")
    inductor: Optional[str] = Field(
        None, description="with --compile: Inductor tuning options, e.g. coordinate_descent_tuning=true,max_fusion_size=32 "
        "(a run's own train.inductor is never applied from its checkpoint: pass it here)")
    save_predictions: OptionalGivenPath = Field(None, description="directory for the evaluators' prediction files")
    halting: Optional[Literal["max_steps", "q_head"]] = Field(
        None, description="which answer counts (default: the run's train.eval_halting)")
    progress: bool = True
    act_steps: Optional[int] = Field(
        None, description="ACT steps per answer at test time (default: the run's arch.halt_max_steps); "
        "--halting still says which step's answer counts")
    vote: int = Field(1, description="answers per instance from the task's symmetries, one chosen by --vote-policy "
                      "(1 = the plain answer; at most 64)")
    vote_policy: str = Field("majority", description="majority (the most common answer), confidence (the Q head's "
                             "surest), check (the task's label-free check, else majority)")
    vote_seed: int = Field(0, ge=0, description="seed of the symmetries drawn for --vote")


def parse_inductor_options(text: str) -> dict:
    """'a=true,b=32' -> {'a': True, 'b': 32}, checked against the allow-list."""
    options = {}
    for item in text.split(","):
        name, sep, value = item.strip().partition("=")
        if not sep or not name:
            raise ConfigError(f"--inductor: {item!r} is not NAME=VALUE")
        lowered = value.strip().lower()
        options[name] = {"true": True, "false": False}.get(lowered, int(lowered) if lowered.lstrip("-").isdigit() else value)
    try:
        return check_inductor_options(options)
    except ValueError as exc:
        raise ConfigError(f"--inductor: {exc}") from exc


def evaluate_checkpoint(args: EvaluateArgs) -> dict[str, float]:
    check_act_steps(args.act_steps)
    votes, policy = check_votes(args.vote, args.vote_policy)
    options = parse_inductor_options(args.inductor) if args.inductor else {}
    if options and not args.compile:
        raise ConfigError("--inductor: only applies with --compile")
    out = args.save_predictions
    if out is not None:
        refuse_broken_link(out, "--save-predictions")
    if out is not None and (out.is_symlink() or (out.exists() and (not out.is_dir() or any(out.iterdir())))):
        raise ConfigError(f"--save-predictions {out}: exists and is not an empty directory; give a new one (nothing "
                          "is overwritten)")
    ckpt = resolve_checkpoint(locate_run(args.checkpoint, args.runs_dir))  # a path, a run name or a wandb id
    try:
        cfg = validate_config(load_config(ckpt))
    except ConfigError as exc:
        raise CheckpointError(f"{ckpt / 'config.json'}: {str(exc).removeprefix('config: ')}") from exc
    apply_threads(cfg.train.num_threads)  # the run's setting (auto: training/engine/threads.py)
    data_path = args.data or Path(cfg.data.path)
    data = PuzzleDataset.load(data_path)
    check_data_compatible(ckpt, load_meta(ckpt), data.meta, data_path)
    eval_meta, eval_arrays = data.split(args.split)  # a missing val/ is one line naming it
    evaluators = build_evaluators(cfg.evaluators, data, args.split)  # each fits this split, checked before the model runs
    batch_size = args.batch_size or cfg.train.eval_batch_size or cfg.train.global_batch_size
    device = resolve_device(args.device)
    arch = cfg.arch
    if args.act_steps is not None:
        try:
            arch = validate_arch(with_act_steps(cfg.arch.model_dump(), args.act_steps))
            check_model_cost(arch, data.meta.vocab_size, data.meta.seq_len, data.meta.num_puzzle_identifiers)
        except ValueError as exc:
            raise BudgetError(f"--act-steps {args.act_steps}: {exc}") from exc
    task = get_task(getattr(data.meta, "task", None), where=f"{data_path}: task") if votes > 1 else None
    if task is not None and task.symmetries is None:  # refused before the model is built
        raise BudgetError(f"--vote {votes}: task {task.name!r} declares no symmetries; only --vote 1 applies")
    try:
        check_step_cost(arch, data.meta.vocab_size, data.meta.seq_len, batch_size, False,
                        f"--batch-size {args.batch_size}" if args.batch_size else f"the run's eval batch size {batch_size}")
        model = build_model(arch, data.meta, device)
    except (ValueError, InputError) as exc:
        raise CheckpointError(f"{ckpt / 'config.json'}: {exc}") from exc
    weights = load_weights(model, ckpt, use_ema=args.ema)
    halting = args.halting or cfg.train.eval_halting
    budget = {"test_time/act_steps": arch.halt_max_steps, "test_time/trained_act_steps": cfg.arch.halt_max_steps,
              "test_time/votes": 1, "test_time/votes_asked": votes} if args.act_steps is not None or votes > 1 else {}
    if votes > 1:
        if args.compile:  # each block compiled alone (the ACT loop stays eager, as in compile_scope=blocks)
            apply_inductor_options(options)
            compile_step(ACTLossHead(model), "blocks")
        metrics = _evaluate_votes(args, model, data, evaluators, task, halting, votes, policy, batch_size, weights, ckpt, out)
        return {**budget, **metrics, "checkpoint": str(ckpt), "weights": weights, "data": str(data_path),
                "split": args.split}
    step_fn = ACTLossHead(model)
    if args.compile:
        if cfg.train.inductor and not options:
            print(f"note: the run trained with train.inductor={cfg.train.inductor}; options are not taken from a "
                  "checkpoint (pass --inductor to use them)", file=sys.stderr)
        apply_inductor_options(options)
        step_fn = compile_step(step_fn, cfg.train.compile_scope)
    arrays = DeviceArrays(eval_arrays, eval_meta, device, resident=True)
    # Prediction files are written aside and renamed into place at the end: an evaluation that
    # fails or is interrupted (SIGTERM, Ctrl-C) leaves no partial result behind.
    if out is not None:
        out.parent.mkdir(parents=True, exist_ok=True)
    aside = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.parent)) if out is not None else None
    try:
        metrics = evaluate(step_fn, model, arrays, eval_arrays.num_examples, batch_size, evaluators, save_path=aside,
                           progress=args.progress, halting=halting)
        if out is not None:
            os.chmod(aside, 0o777 & ~_umask())  # mkdtemp made it private
            os.replace(aside, out)  # `out` is absent or an empty directory
    finally:
        if aside is not None and aside.exists():
            shutil.rmtree(aside)
    return {**metrics, **budget, "checkpoint": str(ckpt), "weights": weights, "data": str(data_path), "split": args.split}


def _evaluate_votes(args: EvaluateArgs, model, data, evaluators, task, halting: str, votes: int, policy: str,
                    batch_size: int, weights: str, ckpt: Path, out: Optional[Path]) -> dict:
    """--vote K > 1: the test split answered through ReadyModel (the same ACT loop as solve.py)
    once per candidate, then voted without the labels and scored (training/voting.py)."""
    import numpy as np

    from training.inference import ReadyModel, task_facts

    meta, split = data.split(args.split)
    facts = {**task_facts(meta), "vocab_size": meta.vocab_size, "seq_len": meta.seq_len,
             "num_puzzle_identifiers": meta.num_puzzle_identifiers}
    ready = ReadyModel(model, facts, halting, str(ckpt), weights)
    puzzle_of_example = np.repeat(np.arange(split.num_puzzles), np.diff(split.puzzle_indices.astype(np.int64)))
    ids = split.puzzle_identifiers[puzzle_of_example]
    inputs = split.inputs.astype(np.int64)
    symmetries = candidate_symmetries(task, facts, votes, args.vote_seed)
    candidates = answer_candidates(lambda x: ready.answer(x, batch_size, ids, keep_logits=False), inputs, symmetries)
    if out is not None:
        out.parent.mkdir(parents=True, exist_ok=True)
    aside = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.parent)) if out is not None else None
    try:
        metrics = evaluate_votes(candidates, task, facts, inputs, split.labels, meta.ignore_label_id, evaluators, policy,
                                 ready.act_steps, save_path=aside)
        if out is not None:
            os.chmod(aside, 0o777 & ~_umask())
            os.replace(aside, out)
    finally:
        if aside is not None and aside.exists():
            shutil.rmtree(aside)
    metrics["test_time/answer_seconds"] = float(sum(candidates.seconds))
    return metrics


cli = CLI(name="evaluate", description="Score a saved checkpoint; prints one JSON object last.")


@cli.command(singleton=True)
def main(args: EvaluateArgs) -> None:
    print(json.dumps(evaluate_checkpoint(args)))


if __name__ == "__main__":
    run_cli(cli)
