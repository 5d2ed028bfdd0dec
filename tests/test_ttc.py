"""Test-time compute (issue 22): task symmetries map answers back exactly, votes choose as their
policy says without labels, budgets are bounded with one-line errors, K=1 is the plain answer."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from core.errors import InputError
from evaluators.tasks import get_task
from training.voting import (
    IDENTITY, MAX_VOTES, BudgetError, Candidates, answer_candidates, candidate_symmetries, check_act_steps,
    check_votes, choose, evaluate_votes, vote,
)

SUDOKU_FACTS = {"task": "sudoku", "seq_len": 81, "vocab_size": 11, "num_puzzle_identifiers": 1, "pad_id": 0,
                "ignore_label_id": 0, "blank_identifier_id": 0}


def lsa_facts(n: int, max_cost: int = 20) -> dict:
    return {"task": "lsa", "seq_len": n * n, "vocab_size": max_cost + 2, "n": n, "max_cost": max_cost,
            "num_puzzle_identifiers": 1, "pad_id": 0, "ignore_label_id": 0, "blank_identifier_id": 0}


def sudoku_pairs(seed: int, count: int) -> tuple[np.ndarray, np.ndarray]:
    """Puzzles and solutions as tokens (digit + 1, blank 1): random full grids, random blanks."""
    from dataset.sudoku_solver import random_full_grid

    rng = np.random.default_rng(seed)
    solutions = np.array([random_full_grid(rng) for _ in range(count)]) + 1
    puzzles = np.where(rng.random(solutions.shape) < 0.5, 1, solutions)
    return puzzles, solutions


# ---------------------------------------------------------------------------------------------
# Symmetries


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_sudoku_symmetries_keep_grids_valid_and_map_back_exactly(seed):
    from evaluators.sudoku import check_sudoku, score_sudoku

    task = get_task("sudoku")
    puzzles, solutions = sudoku_pairs(seed, 6)
    symmetries = task.symmetries(SUDOKU_FACTS, np.random.default_rng(seed), 12)
    assert len(symmetries) == 12 and len({s.name for s in symmetries}) == 12
    noise = np.random.default_rng(seed + 10).integers(0, 11, size=(6, 81))  # any token, PAD and blank included
    for symmetry in symmetries:
        moved_puzzles, moved_solutions = symmetry.augment(puzzles), symmetry.augment(solutions)
        # the image of a solution solves the image of its puzzle: valid, givens kept
        assert score_sudoku(moved_puzzles, moved_solutions, moved_solutions)["valid_grid_rate"] == 1.0
        assert np.all(check_sudoku(SUDOKU_FACTS, moved_puzzles, moved_solutions) == 0)
        assert np.array_equal(symmetry.map_back(moved_solutions), solutions)
        assert np.array_equal(symmetry.map_back(symmetry.augment(noise)), noise)
        assert np.array_equal(np.count_nonzero(moved_puzzles == 1, 1), np.count_nonzero(puzzles == 1, 1))


def test_sudoku_builder_and_voting_transform_alike():
    """The builder's augmentation is apply_symmetry on digits; voting's is the same on tokens."""
    from dataset.build_sudoku_dataset import apply_symmetry, augment, draw_symmetries, source_cells, token_map

    puzzles, solutions = sudoku_pairs(3, 4)
    aug_puzzles, aug_solutions = augment(np.random.default_rng(5), (puzzles - 1).astype(np.uint8),
                                         (solutions - 1).astype(np.uint8), 3)
    row_order, col_order, transpose, digit_map = draw_symmetries(np.random.default_rng(5), 4, 3)
    sources = source_cells(row_order, col_order, transpose)
    tokens = apply_symmetry(solutions[:, None, :], sources, token_map(digit_map, 11))
    assert np.array_equal(tokens - 1, aug_solutions)
    assert np.array_equal(apply_symmetry(puzzles[:, None, :], sources, token_map(digit_map, 11)) - 1, aug_puzzles)


@pytest.mark.parametrize("n", [2, 4, 7])
def test_lsa_symmetries_map_optima_back(n):
    from dataset.build_lsa_dataset import assignment_labels, label_columns
    from evaluators.lsa import check_lsa, optimal_costs

    facts = lsa_facts(n)
    rng = np.random.default_rng(n)
    costs = rng.integers(1, 21, size=(8, n * n))
    labels = np.stack([assignment_labels(label_columns(c.reshape(n, n))[0]) for c in costs])
    best = optimal_costs(costs.reshape(-1, n, n))
    for symmetry in get_task("lsa").symmetries(facts, np.random.default_rng(0), 10):
        moved = symmetry.augment(costs)
        assert np.array_equal(np.sort(moved, 1), np.sort(costs, 1))  # the same costs, moved
        assert np.array_equal(optimal_costs(moved.reshape(-1, n, n)), best)  # augmented optimum = optimum
        assert np.array_equal(symmetry.map_back(symmetry.augment(labels)), labels)
        # the optimum of the moved matrix, mapped back, is an optimum of the original (ties: any optimum)
        moved_labels = np.stack([assignment_labels(label_columns(c.reshape(n, n))[0]) for c in moved])
        back = symmetry.map_back(moved_labels)
        assert np.array_equal(check_lsa(facts, costs, back), best)
        noise = rng.integers(0, 3, size=costs.shape)
        assert np.array_equal(symmetry.map_back(symmetry.augment(noise)), noise)


def test_lsa_builder_moves_assignments_as_it_moves_cells():
    """permute_assignment (the builder's labels) agrees with permute_costs on label grids (voting's map)."""
    from dataset.build_lsa_dataset import assignment_labels, draw_permutations, permute_assignment, permute_costs

    rng = np.random.default_rng(1)
    n = 5
    cols = np.stack([rng.permutation(n) for _ in range(6)])
    perms = draw_permutations(rng, (6, 4), n, True)
    grids = assignment_labels(cols).reshape(6, n, n)
    assert np.array_equal(permute_costs(grids, *perms).reshape(6, 4, n * n), assignment_labels(permute_assignment(cols, *perms)))


def test_arith_swap_is_the_builders_and_keeps_the_answer():
    from dataset.build_arith_dataset import ArithLayout, compute_answers, encode_problems

    layout = ArithLayout.for_task("mul", 7, 3)
    facts = {"task": "arith", "layout": layout.model_dump(), "seq_len": layout.seq_len, "vocab_size": layout.vocab_size}
    rng = np.random.default_rng(0)
    a, b = rng.integers(0, 7, size=(2, 20, 3)).astype(np.uint8)
    inputs, labels = encode_problems(a, b, compute_answers(a, b, "mul", 7, layout.answer_width), layout)
    swapped, _ = encode_problems(b, a, compute_answers(b, a, "mul", 7, layout.answer_width), layout)
    task = get_task("arith")
    [symmetry] = task.symmetries(facts, np.random.default_rng(0), 7)  # one at most
    assert np.array_equal(symmetry.augment(inputs), swapped)
    assert np.array_equal(symmetry.map_back(symmetry.augment(inputs)), inputs)
    assert task.answer_positions(facts).sum() == layout.answer_width and task.check_answer is None


# ---------------------------------------------------------------------------------------------
# Choosing


def test_choose_by_each_policy():
    # 3 instances, 4 candidates, answers of length 2
    preds = np.array([
        [[1, 1], [5, 5], [7, 7]],
        [[2, 2], [5, 5], [8, 8]],
        [[2, 2], [6, 6], [9, 9]],
        [[3, 3], [6, 6], [9, 9]],
    ])
    q = np.array([[0., 0., 0.], [1., -1., 0.], [0., 3., 0.], [5., 0., 0.]])
    penalty = np.array([[np.inf, 4., np.inf], [np.inf, 4., np.inf], [1., 2., np.inf], [0., 2., np.inf]])
    majority = choose(preds, q, None, "majority")
    assert majority.index.tolist() == [1, 0, 2]  # the most common answer; a tie goes to the earlier (plain first)
    assert majority.agreement.tolist() == [0.5, 0.5, 0.5] and set(majority.chosen_by) == {"majority"}
    assert choose(preds, q, None, "confidence").index.tolist() == [3, 2, 0]
    checked = choose(preds, q, penalty, "check")
    # the cheapest passing; several equally cheap: the most common of them; none passing: majority
    assert checked.index.tolist() == [3, 2, 2]
    assert checked.chosen_by.tolist() == ["check", "check", "majority"]
    assert checked.counts() == {"majority": 1, "confidence": 0, "check": 2}
    # no check declared: majority, and it says so
    assert choose(preds, q, None, "check").chosen_by.tolist() == ["majority"] * 3
    # answers compared only where the task's answer lies
    noisy = preds.copy()
    noisy[:, :, 0] = np.arange(4)[:, None]
    assert choose(noisy, q, None, "majority", np.array([False, True])).index.tolist() == [1, 0, 2]


class FakeSudokuModel:
    """A stand-in model that knows the solutions: right on the copies listed in `right`, else it
    answers the puzzle unchanged (an invalid grid, the same one after mapping back)."""

    def __init__(self, puzzles, solutions, symmetries, right):
        self.table = {}
        for k, symmetry in enumerate(symmetries):
            moved_puzzles, moved_solutions = symmetry.augment(puzzles), symmetry.augment(solutions)
            for p, s in zip(moved_puzzles, moved_solutions):
                self.table[p.tobytes()] = s if k in right else p
        self.q = {k: float(k in right) for k in range(len(symmetries))}
        self.calls = 0

    def __call__(self, tokens):
        self.calls += 1
        preds = np.stack([self.table[row.tobytes()] for row in tokens])
        return {"preds": preds, "q_halt": np.full(len(tokens), self.q[self.calls - 1]), "steps": np.full(len(tokens), 3)}


@pytest.mark.parametrize("policy, right, expect_right", [
    ("majority", {1, 2, 3}, True),      # wrong on the plain copy, right on 3 of 5: majority is right
    ("majority", {4}, False),           # right once: majority keeps the common wrong answer
    ("check", {4}, True),               # right once: the check finds it
    ("confidence", {4}, True),          # the stand-in's Q head is surest where it is right
])
def test_votes_of_a_stand_in_model(policy, right, expect_right):
    task = get_task("sudoku")
    puzzles, solutions = sudoku_pairs(7, 5)
    symmetries = candidate_symmetries(task, SUDOKU_FACTS, 5, seed=3)
    model = FakeSudokuModel(puzzles, solutions, symmetries, right)
    candidates = answer_candidates(model, puzzles, symmetries)
    assert candidates.preds.shape == (5, 5, 81) and model.calls == 5
    choice, preds = vote(candidates, task, SUDOKU_FACTS, puzzles, policy)
    assert np.array_equal(preds, solutions) == expect_right
    assert np.array_equal(preds, puzzles) == (not expect_right)
    if policy == "check":
        assert set(choice.chosen_by) == {"check"} and set(choice.index) == {4}


def test_labels_never_reach_the_choice(monkeypatch):
    """evaluate_votes with garbage labels chooses the same answers; only the scores change."""
    import training.voting as voting

    task = get_task("sudoku")
    puzzles, solutions = sudoku_pairs(8, 4)
    symmetries = candidate_symmetries(task, SUDOKU_FACTS, 4, seed=0)
    candidates = answer_candidates(FakeSudokuModel(puzzles, solutions, symmetries, {2}), puzzles, symmetries)
    scored = []
    real_score = voting.score_answers
    monkeypatch.setattr(voting, "score_answers", lambda preds, *a, **k: scored.append(preds) or real_score(preds, *a, **k))
    garbage = np.random.default_rng(0).integers(2, 11, size=solutions.shape)
    results = [evaluate_votes(candidates, task, SUDOKU_FACTS, puzzles, labels, 0, [], "check", 16)
               for labels in (solutions, garbage)]
    assert np.array_equal(scored[0], scored[2]) and np.array_equal(scored[0], solutions)
    assert results[0]["eval/exact_accuracy"] == 1.0 and results[1]["eval/exact_accuracy"] == 0.0
    assert results[0]["test_time/chosen_by_check"] == results[1]["test_time/chosen_by_check"] == 1.0
    assert results[0]["test_time/plain_exact_accuracy"] == 0.0


def test_one_vote_is_the_plain_answer():
    task = get_task("lsa")
    assert candidate_symmetries(task, lsa_facts(3), 1) == [IDENTITY]
    # K's candidates are a prefix of a larger K's (one draw of MAX_VOTES - 1)
    four = candidate_symmetries(task, lsa_facts(3), 4, seed=9)
    eight = candidate_symmetries(task, lsa_facts(3), 8, seed=9)
    costs = np.random.default_rng(0).integers(1, 9, size=(5, 9))
    assert [s.augment(costs).tolist() for s in four] == [s.augment(costs).tolist() for s in eight[:4]]


# ---------------------------------------------------------------------------------------------
# Budgets


@pytest.mark.parametrize("call, culprit", [
    (lambda: check_act_steps(0), "--act-steps 0"),
    (lambda: check_act_steps(1025), "MAX_HALT_STEPS"),
    (lambda: check_act_steps(True), "--act-steps True"),
    (lambda: check_act_steps("8"), "--act-steps '8'"),
    (lambda: check_votes(0), "--vote 0"),
    (lambda: check_votes(MAX_VOTES + 1), "MAX_VOTES"),
    (lambda: check_votes(2.0), "--vote 2.0"),
    (lambda: check_votes(2, "best"), "--vote-policy 'best'"),
    (lambda: choose(np.zeros((1, 1, 1)), np.zeros((1, 1)), None, "mode"), "--vote-policy 'mode'"),
])
def test_budgets_are_bounded_with_one_line_errors(call, culprit):
    with pytest.raises(BudgetError) as info:
        call()
    assert culprit in str(info.value) and "\n" not in str(info.value)


def test_load_model_checks_the_budget_before_reading(tmp_path):
    from training.inference import load_model

    with pytest.raises(BudgetError, match="--vote 65"):
        load_model(tmp_path / "nothing here", votes=65)
    with pytest.raises(BudgetError, match="--act-steps 2000"):
        load_model(tmp_path / "nothing here", act_steps=2000)
    with pytest.raises(BudgetError, match="--vote-policy 'most'"):
        load_model(tmp_path / "nothing here", votes=2, vote_policy="most")


def test_act_steps_within_the_cost_bounds():
    """More steps than a deep model may take (MAX_BLOCK_APPLICATIONS) is one line naming --act-steps."""
    import torch

    from training.inference import build_from_facts

    arch = {"name": "trm", "hidden_size": 16, "num_heads": 2, "H_cycles": 8, "L_cycles": 40, "halt_max_steps": 2}
    facts = {"vocab_size": 11, "seq_len": 81, "num_puzzle_identifiers": 1}
    model = build_from_facts(arch, facts, torch.device("meta"), Path("x"), act_steps=64)
    assert model.cfg.halt_max_steps == 64
    with pytest.raises(InputError) as info:
        build_from_facts(arch, facts, torch.device("meta"), Path("x"), act_steps=1000)
    assert str(info.value).startswith("--act-steps 1000:") and "MAX_BLOCK_APPLICATIONS" in str(info.value)


# ---------------------------------------------------------------------------------------------
# Through the real model and scripts


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    from conftest import lsa_world

    return lsa_world(tmp_path_factory.mktemp("ttc"), max_steps=4, eval_interval=4)


def test_ready_model_votes_and_more_steps(world):
    from training.inference import load_model

    ready = load_model(world["run"])
    costs = np.load(world["data"] / "test" / "all__inputs.npy").astype(np.int64)[:6]
    plain = ready.solve(costs)
    one = ready.solve(costs, votes=1)
    assert all(np.array_equal(plain[k], one[k]) for k in ("preds", "logits", "steps", "q_halt"))
    assert ready.last_vote is None
    voted = ready.solve(costs, votes=4, vote_policy="check")
    assert voted["preds"].shape == costs.shape and len(ready.last_vote["chosen_by"]) == 6
    assert ready.last_vote["summary"]["test_time/votes"] == 4
    with pytest.raises(InputError, match="--vote-seed -1"):
        load_model(world["run"], vote_seed=-1)
    longer = load_model(world["run"], act_steps=5, halting="max_steps")
    assert longer.act_steps == 5 and set(longer.solve(costs)["steps"].tolist()) == {5}


def test_evaluate_vote_one_and_the_vote_path_agree(world):
    """K=1 through the vote path scores as the plain evaluation does; --vote 4 says who chose."""
    from conftest import load_script

    evaluate = load_script("evaluate")
    plain = evaluate.evaluate_checkpoint(evaluate.EvaluateArgs(checkpoint=world["run"], progress=False))
    assert not any(k.startswith("test_time/") for k in plain)
    voted = evaluate.evaluate_checkpoint(evaluate.EvaluateArgs(checkpoint=world["run"], progress=False, vote=4,
                                                               vote_policy="check"))
    assert voted["test_time/votes"] == 4 and voted["test_time/vote_policy"] == "check"
    assert voted["test_time/chosen_by_check"] + voted["test_time/chosen_by_majority"] == 1.0
    assert voted["test_time/plain_exact_accuracy"] == plain["eval/exact_accuracy"]
    longer = evaluate.evaluate_checkpoint(evaluate.EvaluateArgs(checkpoint=world["run"], progress=False, act_steps=3,
                                                                halting="max_steps"))
    assert longer["eval/steps"] == 3 and longer["test_time/trained_act_steps"] == 2


def test_sweep_table_json_and_png(world, tmp_path):
    from conftest import load_script

    ttc = load_script("ttc_sweep")
    out = tmp_path / "sweep"
    report = ttc.sweep(ttc.SweepArgs(checkpoint=world["run"], out=out, act_steps="2,3", votes="1,2",
                                     vote_policies="majority,check", batch_size=8), "python scripts/ttc_sweep.py ...")
    assert sorted(p.name for p in out.iterdir()) == sorted(ttc.OUTPUTS)
    assert (out / "ttc_sweep.png").read_bytes()[:4] == b"\x89PNG"
    saved = json.loads((out / "ttc_sweep.json").read_text())
    assert saved["command"] == "python scripts/ttc_sweep.py ..." and len(saved["cells"]) == 8
    assert all(c["status"] == "ran" and c["seconds"] > 0 for c in saved["cells"])
    cell = next(c for c in report["cells"] if c["act_steps"] == 2 and c["votes"] == 1)
    assert cell["metrics"]["eval/exact_accuracy"] == cell["metrics"]["test_time/plain_exact_accuracy"]
    assert "| ACT steps |" in (out / "ttc_sweep.md").read_text()
    assert f"{saved['examples']} test instances of" in (out / "ttc_sweep.md").read_text()
    # the header names the split that was swept (a val sweep's once said "test instances")
    assert f"{saved['examples']} val instances of" in ttc.table({**saved, "split": "val"})
    with pytest.raises(InputError, match="not an empty directory"):
        ttc.sweep(ttc.SweepArgs(checkpoint=world["run"], out=out), "x")


def test_solve_says_who_chose(world, tmp_path):
    from conftest import load_script

    solve = load_script("solve")
    costs = np.load(world["data"] / "test" / "all__inputs.npy")[:3].reshape(3, 4, 4)
    np.save(tmp_path / "costs.npy", costs.astype(np.int64))
    result = solve.solve(solve.SolveArgs(checkpoint=world["run"], input=str(tmp_path / "costs.npy"), vote=3,
                                         vote_policy="confidence", act_steps=3, halting="max_steps"))
    assert result["test_time"]["act_steps"] == 3 and result["test_time"]["votes"] == 3
    assert result["test_time"]["chosen_by"]["confidence"] == 1.0
    assert [a["chosen_by"] for a in result["answers"]] == ["confidence"] * 3
    assert all(a["steps"] == 3 for a in result["answers"])
    plain = solve.solve(solve.SolveArgs(checkpoint=world["run"], input=str(tmp_path / "costs.npy")))
    assert plain["test_time"] == {"act_steps": 2, "votes": 1, "vote_policy": None}
    assert all("chosen_by" not in a for a in plain["answers"])


@pytest.mark.parametrize("script, flags, culprit", [
    ("scripts/evaluate.py", ["--checkpoint", "x", "--vote", "65"], "--vote 65"),
    ("scripts/solve.py", ["--checkpoint", "x", "--input", "-", "--act-steps", "0"], "--act-steps 0"),
    ("scripts/ttc_sweep.py", ["--checkpoint", "x", "--out", "o", "--votes", "1,99"], "--vote 99"),
])
def test_scripts_refuse_bad_budgets_in_one_line(script, flags, culprit):
    from conftest import assert_one_line_error, run_in_process

    assert_one_line_error(run_in_process(script, *flags), culprit)


@settings(max_examples=200, deadline=None)
@given(st.integers(1, 6), st.integers(1, 5), st.integers(1, 3), st.integers(0, 2**32 - 1))
def test_choose_properties(num_k, num, length, seed):
    """On random answers: majority picks a most common answer (its first candidate), check the
    cheapest passing answer (majority where none passes), confidence the largest Q logit."""
    rng = np.random.default_rng(seed)
    preds = rng.integers(0, 3, size=(num_k, num, length))
    q = rng.normal(size=(num_k, num))
    penalty = np.where(rng.random((num_k, num)) < 0.5, np.inf, rng.integers(0, 3, size=(num_k, num)).astype(float))
    counts = np.array([[sum(np.array_equal(preds[j, n], preds[k, n]) for j in range(num_k)) for n in range(num)]
                       for k in range(num_k)])
    majority = choose(preds, q, None, "majority")
    for n, k in enumerate(majority.index):
        assert counts[k, n] == counts[:, n].max()
        assert k == min(j for j in range(num_k) if np.array_equal(preds[j, n], preds[k, n]))
        assert majority.agreement[n] == counts[k, n] / num_k
    checked = choose(preds, q, penalty, "check")
    for n, k in enumerate(checked.index):
        if np.isfinite(penalty[:, n]).any():
            assert checked.chosen_by[n] == "check" and penalty[k, n] == penalty[:, n].min()
        else:
            assert checked.chosen_by[n] == "majority" and k == majority.index[n]
    assert np.array_equal(choose(preds, q, None, "confidence").index, q.argmax(0))


def test_sweep_table_lists_the_evaluators_groups():
    """A Sudoku sweep's markdown gains a by-givens table: one row per cell that ran, the groups in
    numeric order, their sizes last; a task without groups gets none."""
    from conftest import load_script

    ttc = load_script("ttc_sweep")
    def metrics(acc):
        m = {"eval/exact_accuracy": acc[0], "eval/sudoku/exact_accuracy": acc[0]}
        for g, a in zip((9, 10, 22), acc[1:]):
            m[f"eval/sudoku/givens_{g}/exact_accuracy"] = a
            m[f"eval/sudoku/givens_{g}/count"] = float(g)
        return m
    cells = [{"act_steps": 16, "votes": 1, "candidates": 1, "policy": "majority", "status": "ran",
              "seconds": 1.0, "metrics": metrics((0.1, 0.2, 0.3, 0.4))},
             {"act_steps": 32, "votes": 4, "candidates": 4, "policy": "check", "status": "ran",
              "seconds": 2.0, "metrics": metrics((0.5, 0.6, 0.7, 0.8))},
             {"act_steps": 64, "votes": 4, "candidates": 4, "policy": "check", "status": "skipped (--max-seconds)"}]
    lines = ttc.group_table({"cells": cells})
    assert lines[3] == "| ACT steps | K | policy | givens_9 | givens_10 | givens_22 |"
    assert lines[5] == "| 16 | 1 | majority | 0.2000 | 0.3000 | 0.4000 |"
    assert lines[6] == "| 32 | 4 | check | 0.6000 | 0.7000 | 0.8000 |"
    assert lines[7] == "| | | instances | 9 | 10 | 22 |" and len(lines) == 8
    for cell in cells[:2]:
        cell["metrics"] = {k: v for k, v in cell["metrics"].items() if "givens" not in k}
    assert ttc.group_table({"cells": cells}) == []
