import numpy as np
import pytest
import torch

from dataset.common import DatasetMetadata
from dataset.sudoku_solver import random_full_grid
from evaluators import build_evaluator
from evaluators.sudoku import score_sudoku

SOLUTION = np.array(random_full_grid(np.random.default_rng(0)), dtype=np.int64)  # digits (81,)
GIVEN_CELLS = np.arange(0, 81, 3)  # 27 givens
BLANK_PUZZLE = np.ones(81, dtype=np.int64)  # tokens: nothing given


def tokens(grid_digits):
    return np.asarray(grid_digits, dtype=np.int64) + 1


def puzzle_tokens():
    puzzle = np.zeros(81, dtype=np.int64)
    puzzle[GIVEN_CELLS] = SOLUTION[GIVEN_CELLS]
    return tokens(puzzle)  # blanks 0 -> token 1


def swapped(grid, a, b):
    out = grid.reshape(81).copy()
    out[[a, b]] = out[[b, a]]
    return out


def test_correct_grid():
    m = score_sudoku(puzzle_tokens()[None], tokens(SOLUTION)[None], tokens(SOLUTION)[None])
    assert m == {"exact_accuracy": 1.0, "valid_grid_rate": 1.0, "givens_kept_rate": 1.0, "blank_cell_accuracy": 1.0}


@pytest.mark.parametrize(
    "name, grid",
    [
        # Two cells of one row and one box swapped: rows and boxes still hold 1..9, two columns repeat.
        ("column duplicate", swapped(SOLUTION, 0, 1)),
        # Two cells of one column and one box swapped: only two rows repeat a digit.
        ("row duplicate", swapped(SOLUTION, 0, 9)),
        # A Latin square: every row and column holds 1..9, boxes do not.
        ("box duplicate", np.array([(r + c) % 9 + 1 for r in range(9) for c in range(9)])),
    ],
)
def test_each_unit_kind_is_checked(name, grid):
    m = score_sudoku(BLANK_PUZZLE[None], tokens(grid)[None], tokens(SOLUTION)[None])
    assert m["valid_grid_rate"] == 0.0 and m["exact_accuracy"] == 0.0, name
    assert m["givens_kept_rate"] == 1.0  # nothing was given


def test_changing_a_given_is_invalid_even_if_the_grid_is_a_sudoku():
    relabelled = SOLUTION % 9 + 1  # still a valid grid, but every given changes
    m = score_sudoku(puzzle_tokens()[None], tokens(relabelled)[None], tokens(SOLUTION)[None])
    assert m["valid_grid_rate"] == 0.0 and m["givens_kept_rate"] == 0.0 and m["blank_cell_accuracy"] == 0.0
    same_grid_blank_input = score_sudoku(BLANK_PUZZLE[None], tokens(relabelled)[None])
    assert same_grid_blank_input["valid_grid_rate"] == 1.0 and same_grid_blank_input["exact_accuracy"] is None


def test_all_blank_output_and_non_digit_tokens():
    inputs = np.stack([puzzle_tokens(), puzzle_tokens()])
    preds = np.stack([np.ones(81, dtype=np.int64), np.zeros(81, dtype=np.int64)])  # blank tokens, pad tokens
    m = score_sudoku(inputs, preds, np.stack([tokens(SOLUTION)] * 2))
    assert m == {"exact_accuracy": 0.0, "valid_grid_rate": 0.0, "givens_kept_rate": 0.0, "blank_cell_accuracy": 0.0}


def test_rates_average_over_puzzles():
    good, wrong_blank = tokens(SOLUTION), tokens(swapped(SOLUTION, 1, 2))  # cells 1, 2 are blanks of the puzzle
    m = score_sudoku(np.stack([puzzle_tokens()] * 2), np.stack([good, wrong_blank]), np.stack([good, good]))
    assert m["exact_accuracy"] == 0.5 and m["valid_grid_rate"] == 0.5 and m["givens_kept_rate"] == 1.0
    assert m["blank_cell_accuracy"] == pytest.approx(1 - 2 / (2 * 54))


def test_bad_shapes_and_tokens_raise():
    with pytest.raises(ValueError, match="predicted_labels"):
        score_sudoku(puzzle_tokens()[None], tokens(SOLUTION)[None, :80])
    with pytest.raises(ValueError, match="inputs"):
        score_sudoku(np.zeros((1, 81), dtype=np.int64), tokens(SOLUTION)[None])
    with pytest.raises(ValueError, match="target_labels"):
        score_sudoku(puzzle_tokens()[None], tokens(SOLUTION)[None], np.ones((1, 81), dtype=np.int64))
    with pytest.raises(ValueError, match="no puzzles"):
        score_sudoku(np.ones((0, 81), dtype=np.int64), np.ones((0, 81), dtype=np.int64))


def _meta(seq_len=81, vocab_size=11):
    return DatasetMetadata(pad_id=0, ignore_label_id=0, blank_identifier_id=0, vocab_size=vocab_size, seq_len=seq_len,
                           num_puzzle_identifiers=1, total_groups=3, mean_puzzle_examples=1.0, total_puzzles=3,
                           sets=["all"])


def test_evaluator_protocol_end_to_end(tmp_path):
    ev = build_evaluator({"name": "sudoku"}, _meta())
    assert ev.name == "sudoku" and ev.required_outputs == {"preds"}
    inputs = torch.from_numpy(np.stack([puzzle_tokens()] * 3))
    labels = torch.from_numpy(np.stack([tokens(SOLUTION)] * 3))
    preds = labels.clone()
    preds[2, 1] = 1  # one blank left unfilled
    ev.begin_eval()
    for lo, hi in ((0, 2), (2, 3)):  # two batches
        ev.update_batch({"inputs": inputs[lo:hi], "labels": labels[lo:hi]}, {"preds": preds[lo:hi]})
    result = ev.result(tmp_path / "eval")
    assert result["exact_accuracy"] == pytest.approx(2 / 3) and result["valid_grid_rate"] == pytest.approx(2 / 3)
    assert all(isinstance(v, float) for v in result.values())
    saved = np.load(tmp_path / "eval" / "sudoku_predictions.npz")
    assert np.array_equal(saved["preds"], preds.numpy())


def test_evaluator_rejects_other_datasets_and_misuse():
    with pytest.raises(ValueError, match="seq_len 81"):
        build_evaluator({"name": "sudoku"}, _meta(seq_len=16))
    with pytest.raises(ValueError, match="bogus: Extra inputs are not permitted"):
        build_evaluator({"name": "sudoku", "bogus": 1}, _meta())
    ev = build_evaluator({"name": "sudoku"}, _meta())
    ev.begin_eval()
    with pytest.raises(ValueError, match="before any update_batch"):
        ev.result(None)
    ev.update_batch({"inputs": torch.ones(1, 81, dtype=torch.long), "labels": torch.full((1, 81), -100)},
                    {"preds": torch.ones(1, 81, dtype=torch.long)})
    with pytest.raises(ValueError, match="target_labels"):
        ev.result(None)  # ignored labels in a Sudoku test split: refuse rather than score nonsense
