"""At each evaluation, a few test examples with the model's answers, for wandb: a table
(input, target, prediction, right or not, ACT steps) and pictures (evaluators/render.py).

Only when a wandb run is active (`logging.wandb_mode` not disabled) and
`logging.wandb_examples` > 0. The same first test examples are shown every time, so their
answers can be watched as training goes. The model runs eagerly (the compiled step keeps its
static shapes) with the EMA weights, as evaluation does.
"""

from __future__ import annotations

import io
from contextlib import nullcontext
from typing import TYPE_CHECKING, Any

import numpy as np

from evaluators.render import describe_example, known_task, render_example
from training.inference import ReadyModel, task_facts

if TYPE_CHECKING:
    from training.bookkeeping.logger import RunLogger
    from training.engine.state import TrainState


def example_answers(state: "TrainState", count: int, facts: dict[str, Any]) -> dict[str, np.ndarray]:
    """The first `count` examples of the evaluation split and the model's answers (EMA weights swapped in)."""
    _, test = state.data.split(state.cfg.data.eval_split)
    count = min(count, test.num_examples)
    was_training = state.model.training
    try:
        with state.ema.swapped() if state.ema is not None else nullcontext():
            ready = ReadyModel(state.model, facts, state.cfg.train.eval_halting, "training", "ema")
            out = ready.solve(test.inputs[:count])
    finally:
        state.model.train(was_training)
    return {"inputs": test.inputs[:count], "labels": test.labels[:count], "preds": out["preds"], "steps": out["steps"]}


def log_eval_examples(logger: "RunLogger", state: "TrainState") -> None:
    count, (meta, _) = state.cfg.logging.wandb_examples, state.data.split(state.cfg.data.eval_split)
    split = state.cfg.data.eval_split
    facts = task_facts(meta) | {"seq_len": meta.seq_len, "vocab_size": meta.vocab_size}
    if logger.wandb_run is None or count == 0 or known_task(facts) is None:
        return  # wandb off, or a task without pictures (a foreign dataset with no 'task' field)
    import wandb
    from PIL import Image

    answers = example_answers(state, count, facts)
    rows, pictures = [], []
    for i, (inputs, labels, preds, steps) in enumerate(zip(answers["inputs"], answers["labels"], answers["preds"],
                                                            answers["steps"])):
        text = describe_example(facts, inputs, labels, preds)
        rows.append([i, text["input"], text["target"], text["prediction"], text["correct"], int(steps)])
        fig = render_example(facts, inputs, labels, preds, title=f"{split} #{i}, step {state.step}")
        buffer = io.BytesIO()
        fig.savefig(buffer, format="png")
        pictures.append(wandb.Image(Image.open(io.BytesIO(buffer.getvalue())), caption=f"{split} #{i}"))
    table = wandb.Table(columns=["index", "input", "target", "prediction", "correct", "steps"], data=rows)
    media: dict[str, Any] = {"eval/examples": table, "eval/pictures": pictures}
    logger.log_media(media, state.step)
