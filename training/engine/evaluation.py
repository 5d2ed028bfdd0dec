"""Evaluation: run every test example through the ACT loop, then score its answers.

Which answer counts (`train.eval_halting`):
  max_steps  every example runs `halt_max_steps` steps and its last answer counts (the
             reference's protocol, and the TRM paper's);
  q_head     each example's answer is the one of the first step at which the Q head says
             "halt" (as in training); a batch stops early once every example has halted.
Both modes also report the other view of the same run where it is free:
`eval/halt_exact_accuracy` (answers at the Q head's halt step) and `eval/halt_steps` (its mean
step). A model trained to halt after one or two steps can drift when iterated far past them;
halt_exact_accuracy well above exact_accuracy shows it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable, Optional, Sequence

import torch
from torch import nn
from tqdm import tqdm

from dataset.loader import IGNORE_LABEL_ID, DeviceArrays, eval_batches
from evaluators.base import Evaluator
from models.losses import token_losses
from training.engine.distributed import World, all_reduce_

EVAL_HALTING = ("max_steps", "q_head")


class EvaluationInterrupted(RuntimeError):
    """A stop was requested (SIGTERM/SIGINT) in the middle of an evaluation."""


METRIC_KEYS = ("count", "accuracy", "exact_accuracy", "q_halt_accuracy", "steps", "lm_loss",
               "halt_exact_accuracy", "halt_steps")
# What `evaluate` reports itself, as eval/<name> (evaluators add eval/<evaluator>/<name>).
METRIC_NAMES = ("accuracy", "exact_accuracy", "q_halt_accuracy", "lm_loss", "steps", "halt_exact_accuracy",
                "halt_steps", "examples")


def even_batch_size(num_examples: int, max_batch: int, world_size: int = 1, multiple: int = 8) -> int:
    """The batch size, at most `max_batch`, that splits each rank's share into the fewest
    batches with the least padding (rounded up to a multiple of 8 for the GPU's tiles):
    1000 examples at up to 768 per batch run as 2 x 504, not 768 + 768 (35% padding)."""
    per_rank = max(1, -(-num_examples // world_size))
    batches = -(-per_rank // max_batch)
    size = -(-per_rank // batches)
    return min(max_batch, -(-size // multiple) * multiple)


def _pick(mask: torch.Tensor, new: dict[str, torch.Tensor], old: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Rows where `mask` holds take `new`, the others keep `old`."""
    return {k: torch.where(mask.reshape((-1,) + (1,) * (v.ndim - 1)), v, old[k]) for k, v in new.items()}


def _batch_sums(answers: dict[str, torch.Tensor], steps: torch.Tensor, halt_correct: torch.Tensor,
                halt_steps: torch.Tensor, labels: torch.Tensor, num_valid: int, loss_kind: str) -> torch.Tensor:
    mask = labels != IGNORE_LABEL_ID
    counts = mask.sum(-1)
    rows = (torch.arange(labels.shape[0], device=labels.device) < num_valid) & (counts > 0)
    divisor = counts.clamp_min(1)
    correct = mask & (answers["preds"] == labels)
    seq_correct = correct.sum(-1) == counts
    token_loss = token_losses(answers["logits"], labels, loss_kind).sum(-1) / divisor
    per_row = torch.stack([
        torch.ones_like(token_loss),
        correct.sum(-1) / divisor,
        seq_correct.float(),
        ((answers["q_halt_logits"] >= 0) == seq_correct).float(),
        steps.float(),
        token_loss,
        halt_correct.float(),
        halt_steps.float(),
    ])
    return torch.where(rows, per_row, 0.0).sum(-1)


@torch.no_grad()
def evaluate(
    step_fn: Callable,
    model: nn.Module,
    arrays: DeviceArrays,
    num_examples: int,
    batch_size: int,
    evaluators: Sequence[Evaluator],
    save_path: Optional[Path] = None,
    rank: int = 0,
    world_size: int = 1,
    progress: bool = False,
    should_stop: Callable[[], bool] = lambda: False,
    halting: str = "max_steps",
) -> dict[str, float]:
    """Returns {"eval/<metric>": value, "eval/<evaluator>/<metric>": value}.

    `batch_size` is the largest batch; see even_batch_size. Sums stay on the device until the
    end: one host sync per evaluation in max_steps mode (q_head mode also reads one flag per
    step to stop a batch early).

    `should_stop` is asked before every batch and, in one process, after every ACT step: when it
    says yes, EvaluationInterrupted is raised and nothing is scored. With several ranks the
    ranks agree on it before every batch (one small all-reduce: a rank that was signalled stops
    them all at the same batch, and every rank runs the same number of batches).
    """
    if halting not in EVAL_HALTING:
        raise ValueError(f"train.eval_halting={halting!r}: expected one of {', '.join(EVAL_HALTING)}")
    was_training = model.training
    model.eval()
    max_steps = model.cfg.halt_max_steps
    keep = {"preds", "logits", "q_halt_logits"}.union(*(ev.required_outputs for ev in evaluators))
    for ev in evaluators:
        ev.begin_eval()
    sums = None
    batch_size = even_batch_size(num_examples, batch_size, world_size)
    per_rank = -(-num_examples // world_size)
    num_batches = -(-per_rank // batch_size)  # on every rank the same (eval_batches)
    world = World(rank, world_size)

    def stop_now(device: torch.device) -> bool:
        if world_size == 1:
            return should_stop()
        flag = torch.tensor([float(should_stop())], device=device)
        return bool(all_reduce_(flag, world, "max").item())

    try:
        for batch, valid in tqdm(
            eval_batches(arrays, num_examples, batch_size, rank, world_size),
            total=num_batches, desc="eval", leave=False, disable=not progress,
        ):
            if stop_now(batch["labels"].device):
                raise EvaluationInterrupted("evaluation interrupted by a stop request")
            carry = model.initial_carry(batch)
            labels = batch["labels"]
            # Per example: the first step at which the Q head halts (or the cap) and whether
            # that step's answer was right; in q_head mode also that step's outputs.
            halted = torch.zeros_like(labels[:, 0], dtype=torch.bool)
            halt_step = torch.full_like(labels[:, 0], max_steps)
            halt_correct = torch.zeros_like(halted)
            at_halt = None
            for step in range(1, max_steps + 1):
                carry, _, _, outputs = step_fn(carry, batch)
                if world_size == 1 and step < max_steps and should_stop():
                    raise EvaluationInterrupted("evaluation interrupted by a stop request")
                # (q_continue_logits too where the model has them: halt_decision may compare the two.)
                outputs = {k: outputs[k] for k in keep | ({"q_continue_logits"} & outputs.keys())}
                now = (model.halt_decision(outputs) | (step == max_steps)) & ~halted
                right = ((outputs["preds"] == labels) | (labels == IGNORE_LABEL_ID)).all(-1)
                halt_step = torch.where(now, step, halt_step)
                halt_correct = torch.where(now, right, halt_correct)
                halted = halted | now
                if halting == "q_head":
                    at_halt = outputs if at_halt is None else _pick(now, outputs, at_halt)
                    if step < max_steps and bool(halted.all()):
                        break
            if halting == "q_head":
                answers, answer_steps = at_halt, halt_step
            else:
                answers, answer_steps = outputs, torch.full_like(halt_step, max_steps)
            batch_sums = _batch_sums(answers, answer_steps, halt_correct, halt_step, labels, valid, model.cfg.loss)
            sums = batch_sums if sums is None else sums + batch_sums
            if evaluators:
                real_batch = {k: v[:valid] for k, v in batch.items()}
                real_outputs = {k: answers[k][:valid] for k in keep}
                for ev in evaluators:
                    ev.update_batch(real_batch, real_outputs)
    finally:
        model.train(was_training)
    if sums is None:
        raise ValueError("evaluation: the test split yielded no batches")
    all_reduce_(sums, world)
    totals = dict(zip(METRIC_KEYS, sums.tolist()))
    count = max(totals["count"], 1.0)
    result = {
        "eval/accuracy": totals["accuracy"] / count,
        "eval/exact_accuracy": totals["exact_accuracy"] / count,
        "eval/q_halt_accuracy": totals["q_halt_accuracy"] / count,
        "eval/lm_loss": totals["lm_loss"] / count,
        "eval/steps": totals["steps"] / count,
        "eval/halt_exact_accuracy": totals["halt_exact_accuracy"] / count,
        "eval/halt_steps": totals["halt_steps"] / count,
        "eval/examples": totals["count"],
    }
    for ev in evaluators:
        for key, value in ev.result(save_path, rank=rank, world_size=world_size).items():
            result[f"eval/{ev.name}/{key}"] = float(value)
    return result
