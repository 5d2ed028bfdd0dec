"""training/engine/evaluation.py: which answer counts (train.eval_halting), on a scripted model whose
answers and halt decisions per ACT step are fixed by hand."""

import pytest
import torch
from torch import nn

from dataset.loader import IGNORE_LABEL_ID
from training.engine.evaluation import evaluate

MAX_STEPS = 4
# Per example (its id is inputs[:, 0]): the step at which the Q head first says "halt"
# (None: never, so the step cap decides) and the steps whose answer is right.
SCRIPT = {
    0: (1, {1}),           # right at once, halts, then drifts when iterated further
    1: (None, {4}),        # needs all four steps
    2: (2, {2, 3, 4}),     # halts at step 2 and stays right
    3: (1, set()),         # halts at once, never right
    4: (3, {1, 2, 3, 4}),  # right throughout, halts at 3
}
LABELS = torch.tensor([1, 2])  # two answer tokens; a wrong answer predicts [0, 0]


class Arrays:
    """The two methods eval_batches needs from DeviceArrays."""

    pad = {"inputs": 0, "labels": IGNORE_LABEL_ID, "puzzle_identifiers": 0}

    def gather(self, index):
        ids = torch.as_tensor(index)
        return {"inputs": ids[:, None].repeat(1, 2), "labels": LABELS.repeat(len(ids), 1),
                "puzzle_identifiers": torch.zeros(len(ids), dtype=torch.long)}


class Scripted(nn.Module):
    def __init__(self):
        super().__init__()
        self.cfg = type("Cfg", (), {"halt_max_steps": MAX_STEPS, "loss": "softmax", "no_act_continue": True})()
        self.calls = 0

    def initial_carry(self, batch):
        return {"steps": torch.zeros(len(batch["inputs"]), dtype=torch.long), "labels": batch["labels"]}

    def halt_decision(self, outputs):
        return outputs["q_halt_logits"] > 0

    def step(self, carry, batch):
        self.calls += 1
        steps = carry["steps"] + 1
        preds, q_halt = [], []
        for example, step in zip(batch["inputs"][:, 0].tolist(), steps.tolist()):
            halt_at, right_at = SCRIPT[example]
            preds.append(LABELS if step in right_at else torch.zeros(2, dtype=torch.long))
            q_halt.append(1.0 if halt_at is not None and step >= halt_at else -1.0)
        preds = torch.stack(preds)
        logits = torch.nn.functional.one_hot(preds, 3).float() * 5
        outputs = {"preds": preds, "logits": logits, "q_halt_logits": torch.tensor(q_halt)}
        return {"steps": steps, "labels": carry["labels"]}, None, {}, outputs


def run(halting, batch_size=2):
    model = Scripted()
    result = evaluate(model.step, model, Arrays(), len(SCRIPT), batch_size, [], halting=halting)
    return result, model.calls


def test_max_steps_scores_the_last_answer_and_reports_the_halted_view():
    result, calls = run("max_steps")
    assert result["eval/examples"] == 5  # the padding row of the last batch is not counted
    assert result["eval/exact_accuracy"] == pytest.approx(3 / 5)  # examples 1, 2, 4 right at step 4
    assert result["eval/steps"] == MAX_STEPS
    assert result["eval/halt_exact_accuracy"] == pytest.approx(4 / 5)  # 0, 1 (at the cap), 2, 4
    assert result["eval/halt_steps"] == pytest.approx((1 + 4 + 2 + 1 + 3) / 5)
    assert calls == 3 * MAX_STEPS  # three batches of two, all run to the cap


def test_q_head_scores_the_answer_where_the_q_head_halts():
    result, _ = run("q_head")
    assert result["eval/exact_accuracy"] == pytest.approx(4 / 5)  # only example 3 is wrong where it halts
    assert result["eval/accuracy"] == pytest.approx(4 / 5)  # per token: all or nothing here
    assert result["eval/halt_exact_accuracy"] == result["eval/exact_accuracy"]
    assert result["eval/steps"] == pytest.approx((1 + 4 + 2 + 1 + 3) / 5)
    # q_halt_accuracy: the halt logit (always >= 0 at the halt step, except example 1 halted
    # by the cap) against whether that answer is right: 0 yes, 1 no, 2 yes, 3 no, 4 yes.
    assert result["eval/q_halt_accuracy"] == pytest.approx(3 / 5)


def test_both_modes_agree_on_each_example_but_example_0():
    """Batch by batch: example 0 (right at its halt, drifted at the cap) is the only one whose
    score depends on the mode; the halted view of max_steps equals q_head's score."""
    for example in SCRIPT:
        script = dict(SCRIPT)
        SCRIPT.clear()
        SCRIPT[0] = script[example]
        try:
            q_head, max_steps = run("q_head", batch_size=1)[0], run("max_steps", batch_size=1)[0]
        finally:
            SCRIPT.clear()
            SCRIPT.update(script)
        assert q_head["eval/exact_accuracy"] == max_steps["eval/halt_exact_accuracy"]
        differs = q_head["eval/exact_accuracy"] != max_steps["eval/exact_accuracy"]
        assert differs == (example == 0), example


def test_q_head_stops_a_batch_once_every_example_has_halted():
    _, calls = run("q_head", batch_size=1)
    assert calls == 1 + 4 + 2 + 1 + 3


def test_unknown_mode_is_refused():
    with pytest.raises(ValueError, match="eval_halting='last'"):
        run("last")


@pytest.mark.parametrize("num_examples, max_batch, world_size, expected", [
    (1000, 768, 1, 504),   # 2 batches, 8 padding rows instead of 536
    (1000, 1024, 1, 1000),
    (768, 768, 1, 768),
    (769, 768, 1, 392),
    (2000, 768, 1, 672),   # 3 batches
    (1000, 768, 2, 504),   # 500 per rank, one batch each
    (5, 768, 1, 8),
    (5, 4, 1, 4),          # never above the maximum, even when rounding up would be
    (1, 1, 4, 1),
])
def test_even_batch_size(num_examples, max_batch, world_size, expected):
    from training.engine.evaluation import even_batch_size

    size = even_batch_size(num_examples, max_batch, world_size)
    assert size == expected
    per_rank = -(-num_examples // world_size)
    fewest = -(-per_rank // max_batch)
    assert -(-per_rank // size) == fewest  # no extra batch


def test_evaluation_evens_out_its_batches():
    model = Scripted()
    sizes = []
    step = model.step
    evaluate(lambda carry, batch: (sizes.append(len(batch["inputs"])), step(carry, batch))[1],
             model, Arrays(), len(SCRIPT), 16, [], halting="max_steps")
    assert sizes == [8] * MAX_STEPS  # 5 examples at up to 16: one batch of 8, not of 16
