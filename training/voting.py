"""Test-time compute: more ACT steps than training used, and answers voted over a task's symmetries.

Two budgets, for `scripts/evaluate.py`, `scripts/solve.py`, `scripts/ttc_sweep.py` and
`training.inference.load_model`:

  act_steps  the ACT steps each example may take (the model's halt_max_steps at test time; the
             halting policy, `max_steps` or `q_head`, still says which step's answer counts);
             1..MAX_HALT_STEPS, and within models/act.py's cost bounds.
  votes K    K answers per instance: the instance itself and K-1 symmetric copies (the task's
             `Task.symmetries`: each copy augmented, answered, and its answer mapped back), then
             one of them chosen by a policy:
               majority    the answer most candidates give (compared where the task's answer lies,
                           `Task.answer_positions`); ties go to the earlier candidate, the plain
                           answer first;
               confidence  the candidate whose Q head is surest of halting (largest q_halt logit
                           at the step whose answer counts);
               check       the candidates that pass the task's label-free check
                           (`Task.check_answer`: a Sudoku grid that keeps the givens and breaks
                           no rule; an LSA answer that is a permutation, the cheapest first),
                           majority among the best of them; where none passes, or the task has no
                           check, majority over all (and the output says so).
             Labels never reach the choice: `choose` sees answers, Q-head logits and the task's
             check of (inputs, answers), nothing else.

The symmetries are drawn from `np.random.default_rng(seed)`, always MAX_VOTES - 1 of them, of which
the first K - 1 are used: `--vote 4` answers with a prefix of `--vote 8`'s candidates, so a sweep
over K can answer once for its largest K. K = 1 is the plain answer, exactly.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Optional

import numpy as np

from core.errors import InputError
from evaluators.tasks import Symmetry, Task
from models.act import MAX_HALT_STEPS

MAX_VOTES = 64
VOTE_POLICIES = ("majority", "confidence", "check")


class BudgetError(InputError):
    """A test-time budget out of its bounds (one line naming the flag)."""


def _integer(value: Any) -> bool:
    return isinstance(value, (int, np.integer)) and not isinstance(value, bool)


def check_act_steps(act_steps: Any) -> Optional[int]:
    """None (the model's own halt_max_steps) or an integer in 1..MAX_HALT_STEPS."""
    if act_steps is None:
        return None
    if not _integer(act_steps) or not 1 <= act_steps <= MAX_HALT_STEPS:
        raise BudgetError(f"--act-steps {act_steps!r}: expected an integer in 1..{MAX_HALT_STEPS} "
                          "(models/act.py: MAX_HALT_STEPS)")
    return int(act_steps)


def check_votes(votes: Any, policy: Any = "majority") -> tuple[int, str]:
    if not _integer(votes) or not 1 <= votes <= MAX_VOTES:
        raise BudgetError(f"--vote {votes!r}: expected an integer in 1..{MAX_VOTES} (training/voting.py: MAX_VOTES)")
    if policy not in VOTE_POLICIES:
        raise BudgetError(f"--vote-policy {policy!r}: expected one of {', '.join(VOTE_POLICIES)}")
    return int(votes), str(policy)


def with_act_steps(arch_raw: dict[str, Any], act_steps: Optional[int]) -> dict[str, Any]:
    """A model config (as a dict) with `act_steps` as its halt_max_steps; validating it
    (models.validate_arch) then applies the block-application bound of models/act.py."""
    act_steps = check_act_steps(act_steps)
    return dict(arch_raw) if act_steps is None else {**arch_raw, "halt_max_steps": act_steps}


def _same(tokens: np.ndarray) -> np.ndarray:
    return tokens


IDENTITY = Symmetry("identity", _same, _same)


def candidate_symmetries(task: Task, facts: dict[str, Any], votes: int, seed: int = 0) -> list[Symmetry]:
    """The identity, then up to votes - 1 of the task's symmetries (a prefix of the MAX_VOTES - 1
    drawn with `seed`); fewer where the task has fewer (arithmetic: one)."""
    votes, _ = check_votes(votes)
    if votes == 1:
        return [IDENTITY]
    if task.symmetries is None:
        raise BudgetError(f"--vote {votes}: task {task.name!r} declares no symmetries; only --vote 1 applies")
    drawn = task.symmetries(facts, np.random.default_rng(seed), MAX_VOTES - 1)
    return [IDENTITY] + list(drawn[:votes - 1])


@dataclass
class Candidates:
    """K answers to N instances, mapped back to the instances: preds (K, N, L), q_halt (K, N)
    (the Q head's halt logit at the answer's step), steps (K, N), and what each took."""

    names: list[str]
    preds: np.ndarray
    q_halt: np.ndarray
    steps: np.ndarray
    seconds: list[float] = field(default_factory=list)

    def prefix(self, k: int) -> "Candidates":
        return Candidates(self.names[:k], self.preds[:k], self.q_halt[:k], self.steps[:k], self.seconds[:k])


# answer(tokens (N, L)) -> {"preds": (N, L), "q_halt": (N,), "steps": (N,)} numpy arrays
Answer = Callable[[np.ndarray], dict[str, np.ndarray]]


def answer_candidates(answer: Answer, inputs: np.ndarray, symmetries: list[Symmetry],
                      deadline: Optional[float] = None) -> Candidates:
    """Each symmetry's copy of `inputs` answered, its answer mapped back. With `deadline` (a
    time.monotonic() value) candidates stop once it has passed (at least one is answered)."""
    inputs = np.asarray(inputs)
    names, preds, q_halt, steps, seconds = [], [], [], [], []
    for symmetry in symmetries:
        if deadline is not None and names and time.monotonic() >= deadline:
            break
        start = time.monotonic()
        out = answer(symmetry.augment(inputs))
        mapped = np.asarray(symmetry.map_back(np.asarray(out["preds"])))
        if mapped.shape != inputs.shape:
            raise RuntimeError(f"symmetry {symmetry.name!r}: map_back gave shape {mapped.shape}, expected {inputs.shape}")
        names.append(symmetry.name)
        preds.append(mapped)
        q_halt.append(np.asarray(out["q_halt"], dtype=np.float64))
        steps.append(np.asarray(out["steps"]))
        seconds.append(time.monotonic() - start)
    return Candidates(names, np.stack(preds), np.stack(q_halt), np.stack(steps), seconds)


@dataclass
class Choice:
    """Per instance: the chosen candidate (N,), the policy that chose it (N,) str, and the
    fraction of candidates giving the same answer (N,)."""

    index: np.ndarray
    chosen_by: np.ndarray
    agreement: np.ndarray

    def counts(self) -> dict[str, int]:
        return {policy: int((self.chosen_by == policy).sum()) for policy in VOTE_POLICIES}


def _same_answer_counts(preds: np.ndarray, among: np.ndarray) -> np.ndarray:
    """(K, N, L) answers, (K, N) bool -> (K, N): how many candidates in `among` give answer k."""
    counts = np.zeros(preds.shape[:2], dtype=np.int64)
    for k in range(preds.shape[0]):
        counts[k] = ((preds == preds[k][None]).all(-1) & among).sum(0)
    return counts


def choose(preds: np.ndarray, q_halt: np.ndarray, penalty: Optional[np.ndarray], policy: str,
           positions: Optional[np.ndarray] = None) -> Choice:
    """One candidate per instance (see the module's docstring). preds (K, N, L) answers mapped
    back; q_halt (K, N); penalty (K, N) from the task's check (+inf: fails) or None when the task
    has none; positions (L,) bool, where answers are compared (None: everywhere). No labels."""
    _, policy = check_votes(1, policy)
    compared = preds if positions is None else preds[..., np.asarray(positions, dtype=bool)]
    num_k, num = preds.shape[:2]
    everyone = np.ones((num_k, num), dtype=bool)
    counts = _same_answer_counts(compared, everyone)
    index = counts.argmax(0)  # the first of the most common answers: the plain answer wins ties
    chosen_by = np.full(num, "majority", dtype=object)
    if policy == "confidence":
        index = np.asarray(q_halt).argmax(0)
        chosen_by[:] = "confidence"
    elif policy == "check" and penalty is not None:
        penalty = np.asarray(penalty, dtype=np.float64)
        passing = np.isfinite(penalty)
        best = np.where(passing, penalty, np.inf).min(0)  # (N,)
        top = passing & (penalty == best[None])
        among = _same_answer_counts(compared, top)
        checked = np.where(top, among, -1).argmax(0)
        found = passing.any(0)
        index = np.where(found, checked, index)
        chosen_by[found] = "check"
    rows = np.arange(num)
    return Choice(index, chosen_by, counts[index, rows] / num_k)


def vote(candidates: Candidates, task: Task, facts: dict[str, Any], inputs: np.ndarray, policy: str) -> tuple[Choice, np.ndarray]:
    """The chosen answers (N, L) of `candidates` under `policy`, and the Choice."""
    penalty = None
    if policy == "check" and task.check_answer is not None:
        penalty = np.stack([task.check_answer(facts, inputs, p) for p in candidates.preds])
    positions = task.answer_positions(facts) if task.answer_positions is not None else None
    choice = choose(candidates.preds, candidates.q_halt, penalty, policy, positions)
    return choice, candidates.preds[choice.index, np.arange(inputs.shape[0])]


def summary(choice: Choice, candidates: Candidates, policy: str, act_steps: int) -> dict[str, Any]:
    """What a vote did, for an output: the budgets, who chose, how much the candidates agreed."""
    num = max(1, choice.index.shape[0])
    rows = np.arange(choice.index.shape[0])
    out: dict[str, Any] = {
        "test_time/act_steps": act_steps,
        "test_time/votes": len(candidates.names),
        "test_time/vote_policy": policy,
        "test_time/agreement": float(choice.agreement.mean()) if choice.agreement.size else math.nan,
        "test_time/steps_all_candidates": float(candidates.steps.sum(0).mean()) if candidates.steps.size else math.nan,
        "test_time/chosen_plain": float((choice.index == 0).mean()) if choice.index.size else math.nan,
    }
    for name, count in choice.counts().items():
        out[f"test_time/chosen_by_{name}"] = count / num
    out["test_time/steps"] = float(candidates.steps[choice.index, rows].mean()) if rows.size else math.nan
    return out


# ---------------------------------------------------------------------------------------------
# Scoring voted answers on a labelled split (scripts/evaluate.py --vote, scripts/ttc_sweep.py)


def score_answers(preds: np.ndarray, steps: np.ndarray, inputs: np.ndarray, labels: np.ndarray,
                  ignore_label_id: Optional[int], evaluators: list, vocab_size: int,
                  save_path: Any = None, chunk: int = 1024) -> dict[str, float]:
    """Metrics of answers already chosen, as training's evaluation names them (eval/accuracy,
    eval/exact_accuracy, eval/steps, eval/examples, eval/<evaluator>/...). Labels are read here,
    after the choice. Evaluators that read "logits" get the one-hot of the answers (LSA's
    projected_* metrics then project the voted answer itself)."""
    import torch

    from dataset.loader import IGNORE_LABEL_ID

    labels = np.asarray(labels).astype(np.int64)
    if ignore_label_id is not None:
        labels = np.where(labels == ignore_label_id, IGNORE_LABEL_ID, labels)
    mask = labels != IGNORE_LABEL_ID
    counts = mask.sum(-1)
    rows = counts > 0
    correct = (mask & (preds == labels)).sum(-1)
    num = max(1, int(rows.sum()))
    result = {
        "eval/accuracy": float((correct / np.maximum(counts, 1))[rows].sum() / num),
        "eval/exact_accuracy": float((correct == counts)[rows].sum() / num),
        "eval/steps": float(np.asarray(steps)[rows].sum() / num),
        "eval/examples": float(rows.sum()),
    }
    for ev in evaluators:
        ev.begin_eval()
    for lo in range(0, preds.shape[0], chunk):
        part = torch.from_numpy(np.asarray(preds[lo:lo + chunk]).astype(np.int64))
        batch = {"inputs": torch.from_numpy(np.asarray(inputs[lo:lo + chunk]).astype(np.int64)),
                 "labels": torch.from_numpy(labels[lo:lo + chunk])}
        for ev in evaluators:
            outputs = {"preds": part}
            if "logits" in ev.required_outputs:
                outputs["logits"] = torch.nn.functional.one_hot(part, vocab_size).float()
            ev.update_batch(batch, outputs)
    for ev in evaluators:
        for key, value in ev.result(save_path).items():
            result[f"eval/{ev.name}/{key}"] = float(value)
    return result


def evaluate_votes(candidates: Candidates, task: Task, facts: dict[str, Any], inputs: np.ndarray,
                   labels: np.ndarray, ignore_label_id: Optional[int], evaluators: list, policy: str,
                   act_steps: int, save_path: Any = None) -> dict[str, Any]:
    """Vote over `candidates` with `policy` (labels unseen), then score the chosen answers; the
    result also holds `summary`'s test_time/* entries and the plain answer's exact accuracy
    (test_time/plain_exact_accuracy: what the vote gained or lost)."""
    start = time.monotonic()
    choice, preds = vote(candidates, task, facts, inputs, policy)
    rows = np.arange(inputs.shape[0])
    result = score_answers(preds, candidates.steps[choice.index, rows], inputs, labels, ignore_label_id, evaluators,
                           facts["vocab_size"], save_path)
    plain = score_answers(candidates.preds[0], candidates.steps[0], inputs, labels, ignore_label_id, [],
                          facts["vocab_size"])
    result.update(summary(choice, candidates, policy, act_steps))
    result["test_time/plain_exact_accuracy"] = plain["eval/exact_accuracy"]
    result["test_time/vote_seconds"] = time.monotonic() - start
    return result
