import numpy as np
import pytest
import torch

from dataset.common import DatasetMetadata
from evaluators import build_evaluator, evaluator_names
from evaluators.lsa import optimal_costs, project_to_permutation, score_assignments


def labels_of(perms, n):
    """Column per row -> (N, n*n) label tokens (1 = not assigned, 2 = assigned)."""
    out = np.ones((len(perms), n, n), dtype=np.int64)
    for i, p in enumerate(perms):
        out[i, np.arange(n), p] = 2
    return out.reshape(len(perms), n * n)


COSTS = np.array([
    [[1, 9, 9], [9, 1, 9], [9, 9, 1]],   # unique optimum: identity, cost 3
    [[1, 1, 5], [1, 1, 5], [5, 5, 1]],   # tie: identity and (1,0,2) both cost 3
    [[4, 1, 3], [2, 0, 5], [3, 2, 2]],   # scipy's example: optimum 5 via (1,0,2)
])
TARGETS = labels_of([[0, 1, 2], [0, 1, 2], [1, 0, 2]], 3)


def test_perfect_predictions():
    m = score_assignments(COSTS, TARGETS, TARGETS)
    assert m == {"exact_accuracy": 1.0, "valid_permutation_rate": 1.0, "optimal_cost_rate": 1.0, "mean_cost_difference": 0.0}


def test_tied_optimum_counts_as_optimal_but_not_exact():
    preds = labels_of([[0, 1, 2], [1, 0, 2], [1, 0, 2]], 3)  # second: the other optimum
    m = score_assignments(COSTS, preds, TARGETS)
    assert m["optimal_cost_rate"] == 1.0
    assert m["exact_accuracy"] == pytest.approx(2 / 3)


def test_valid_but_suboptimal_and_cost_difference():
    preds = labels_of([[1, 0, 2], [0, 1, 2], [0, 1, 2]], 3)  # costs 19 (opt 3), 3 (opt 3), 6 (opt 5)
    m = score_assignments(COSTS, preds, TARGETS)
    assert m["valid_permutation_rate"] == 1.0
    assert m["optimal_cost_rate"] == pytest.approx(1 / 3)
    assert m["mean_cost_difference"] == pytest.approx((16 + 0 + 1) / 3)


def test_invalid_outputs():
    two_in_a_row = TARGETS[0].copy().reshape(3, 3)
    two_in_a_row[0] = [2, 2, 1]  # row 0 assigned twice, column 1 twice
    junk_token = TARGETS[1].copy()
    junk_token[4] = 7  # a cost-like token where a label belongs
    nothing = np.ones(9, dtype=np.int64)  # nothing assigned
    preds = np.stack([two_in_a_row.reshape(9), junk_token, nothing])
    m = score_assignments(COSTS, preds, TARGETS)
    assert m["valid_permutation_rate"] == 0.0 and m["optimal_cost_rate"] == 0.0 and m["exact_accuracy"] == 0.0
    assert m["mean_cost_difference"] is None  # no valid prediction to average over


def test_nothing_assigned_but_cheap_is_not_optimal():
    # Assigning nothing costs 0 < optimum: must count as invalid, never as "optimal".
    m = score_assignments(COSTS[:1], np.ones((1, 9), dtype=np.int64))
    assert m["optimal_cost_rate"] == 0.0 and m["exact_accuracy"] is None


def test_without_targets_and_shape_errors():
    m = score_assignments(COSTS, TARGETS)
    assert m["exact_accuracy"] is None and m["optimal_cost_rate"] == 1.0
    with pytest.raises(ValueError, match="predicted_labels"):
        score_assignments(COSTS, TARGETS[:, :4])
    with pytest.raises(ValueError, match="costs"):
        score_assignments(COSTS[:, :2], TARGETS)


def test_optimal_costs_and_projection():
    assert optimal_costs(COSTS).tolist() == [3, 3, 5]
    scores = -COSTS.astype(float)  # maximising -cost = minimising cost
    projected = project_to_permutation(scores)
    assert score_assignments(COSTS, projected)["optimal_cost_rate"] == 1.0
    noisy = np.random.default_rng(0).normal(size=(20, 5, 5))
    m = score_assignments(np.ones((20, 5, 5)), project_to_permutation(noisy))
    assert m["valid_permutation_rate"] == 1.0  # always a permutation


def test_evaluator_protocol_end_to_end():
    meta = DatasetMetadata(pad_id=0, ignore_label_id=0, blank_identifier_id=0, vocab_size=11, seq_len=9,
                           num_puzzle_identifiers=1, total_groups=3, mean_puzzle_examples=1.0, total_puzzles=3,
                           sets=["all"], n=3)
    ev = build_evaluator({"name": "lsa"}, meta)
    assert ev.required_outputs == {"preds", "logits"}
    ev.begin_eval()
    preds = torch.from_numpy(labels_of([[0, 1, 2], [1, 0, 2], [0, 1, 2]], 3))
    logits = torch.zeros(3, 9, 11)
    logits[..., 2] = torch.from_numpy(-COSTS.reshape(3, 9).astype(np.float32))  # scores favour cheap cells
    for lo, hi in ((0, 2), (2, 3)):  # two batches
        ev.update_batch(
            {"inputs": torch.from_numpy(COSTS.reshape(3, 9))[lo:hi], "labels": torch.from_numpy(TARGETS)[lo:hi]},
            {"preds": preds[lo:hi], "logits": logits[lo:hi]},
        )
    result = ev.result(None)
    assert result["optimal_cost_rate"] == pytest.approx(2 / 3)
    assert result["projected_optimal_cost_rate"] == 1.0
    assert "mean_cost_difference" in result and all(isinstance(v, float) for v in result.values())


def test_registry_and_unknown_options():
    assert {"lsa", "sudoku", "arith"} <= set(evaluator_names())
    meta = DatasetMetadata(pad_id=0, ignore_label_id=0, blank_identifier_id=0, vocab_size=11, seq_len=10,
                           num_puzzle_identifiers=1, total_groups=1, mean_puzzle_examples=1.0, total_puzzles=1, sets=["all"])
    with pytest.raises(ValueError, match="do not describe n x n matrices"):
        build_evaluator({"name": "lsa"}, meta)
    with pytest.raises(ValueError, match="unknown evaluator"):
        build_evaluator({"name": "nope"}, meta)
