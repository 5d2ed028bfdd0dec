"""Evaluation: every test example runs to `halt_max_steps`, then evaluators score the answers."""

from __future__ import annotations

from pathlib import Path
from typing import Callable, Optional, Sequence

import torch
from torch import nn
from tqdm import tqdm

from dataset.loader import DeviceArrays, eval_batches
from evaluators.base import Evaluator

class EvaluationInterrupted(RuntimeError):
    """A stop was requested (SIGTERM/SIGINT) in the middle of an evaluation."""


METRIC_KEYS = ("count", "accuracy", "exact_accuracy", "q_halt_accuracy", "steps", "lm_loss")


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
) -> dict[str, float]:
    """Returns {"eval/<metric>": value, "eval/<evaluator>/<metric>": value}.

    Metrics stay on the device until the end: one host sync per evaluation, not per step.
    """
    was_training = model.training
    model.eval()
    needed = set().union(*(ev.required_outputs for ev in evaluators)) if evaluators else set()
    for ev in evaluators:
        ev.begin_eval()
    sums = None
    num_batches = -(-num_examples // (batch_size * world_size))
    try:
        for batch, valid in tqdm(
            eval_batches(arrays, num_examples, batch_size, rank, world_size),
            total=num_batches, desc="eval", leave=False, disable=not progress,
        ):
            if should_stop():
                raise EvaluationInterrupted("evaluation interrupted by a stop request")
            carry = model.initial_carry(batch)
            for _ in range(model.cfg.halt_max_steps):
                carry, _, metrics, outputs = step_fn(carry, batch)
            stacked = torch.stack([metrics[k].float() for k in METRIC_KEYS])
            sums = stacked if sums is None else sums + stacked
            if evaluators:
                real_batch = {k: v[:valid] for k, v in batch.items()}
                real_outputs = {k: outputs[k][:valid] for k in needed}
                for ev in evaluators:
                    ev.update_batch(real_batch, real_outputs)
    finally:
        model.train(was_training)
    if sums is None:
        raise ValueError("evaluation: the test split yielded no batches")
    if world_size > 1:
        torch.distributed.all_reduce(sums)
    totals = dict(zip(METRIC_KEYS, sums.tolist()))
    count = max(totals["count"], 1.0)
    result = {
        "eval/accuracy": totals["accuracy"] / count,
        "eval/exact_accuracy": totals["exact_accuracy"] / count,
        "eval/q_halt_accuracy": totals["q_halt_accuracy"] / count,
        "eval/lm_loss": totals["lm_loss"] / count,
        "eval/examples": totals["count"],
    }
    for ev in evaluators:
        for key, value in ev.result(save_path, rank=rank, world_size=world_size).items():
            result[f"eval/{ev.name}/{key}"] = float(value)
    return result
