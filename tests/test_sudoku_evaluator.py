import numpy as np
import pytest
import torch

from dataset.common import DatasetMetadata
from dataset.sudoku_solver import random_full_grid
from evaluators import build_evaluator
from evaluators.sudoku import rating_bucket, score_by_bucket, score_sudoku

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


# ---------------------------------------------------------------------------------------------
# By number of givens and by rating


def puzzle_with(givens):
    puzzle = np.zeros(81, dtype=np.int64)
    puzzle[:givens] = SOLUTION[:givens]
    return tokens(puzzle)


def test_rating_buckets_double():
    assert [rating_bucket(r) for r in (0, 1, 2, 3, 4, 7, 8, 15, 16, 100)] == \
        ["0", "1", "2-3", "2-3", "4-7", "4-7", "8-15", "8-15", "16-31", "64-127"]


def test_exact_accuracy_by_givens_and_rating_on_hand_made_cases():
    # Five puzzles: givens 22, 22, 23, 25, 25; right, wrong, right, right, wrong.
    inputs = np.stack([puzzle_with(g) for g in (22, 22, 23, 25, 25)])
    targets = np.stack([tokens(SOLUTION)] * 5)
    preds = targets.copy()
    preds[1, 80] = preds[1, 79]  # a wrong blank cell
    preds[4, 40] = 1
    ratings = np.array([0, 5, 2, 3, 40])
    m = score_by_bucket(inputs, preds, targets, ratings)
    assert m == {
        "givens_22/exact_accuracy": 0.5, "givens_22/count": 2.0,
        "givens_23/exact_accuracy": 1.0, "givens_23/count": 1.0,
        "givens_25/exact_accuracy": 0.5, "givens_25/count": 2.0,
        "rating_0/exact_accuracy": 1.0, "rating_0/count": 1.0,
        "rating_2-3/exact_accuracy": 1.0, "rating_2-3/count": 2.0,
        "rating_4-7/exact_accuracy": 0.0, "rating_4-7/count": 1.0,
        "rating_32-63/exact_accuracy": 0.0, "rating_32-63/count": 1.0,
    }
    wide = score_by_bucket(inputs, preds, targets, givens_width=2)  # 22-23, 24-25; no ratings
    assert wide == {"givens_22-23/exact_accuracy": pytest.approx(2 / 3), "givens_22-23/count": 3.0,
                    "givens_24-25/exact_accuracy": 0.5, "givens_24-25/count": 2.0}
    with pytest.raises(ValueError, match="ratings"):
        score_by_bucket(inputs, preds, targets, ratings[:4])
    with pytest.raises(ValueError, match="givens_bucket"):
        score_by_bucket(inputs, preds, targets, givens_width=0)


def test_evaluator_reads_the_test_splits_ratings_array(tmp_path):
    """Built datasets carry test/all__ratings.npy; the evaluator finds it through the metadata
    it was given (load_split remembers the directory) and reports by rating bucket."""
    from dataset.build_sudoku_dataset import SudokuBuildConfig, build_sudoku_dataset
    from dataset.common import load_split

    out = build_sudoku_dataset(SudokuBuildConfig(output_dir=tmp_path / "s", num_train=2, num_test=6, num_aug=1,
                                                 min_clues=40, max_clues=45, seed=0, workers=1, progress=False))
    meta, sets = load_split(out, "test")
    ratings = np.load(out / "test" / "all__ratings.npy")
    ev = build_evaluator({"name": "sudoku", "givens_bucket": 3}, meta)
    ev.begin_eval()
    s = sets["all"]
    ev.update_batch({"inputs": torch.from_numpy(s.inputs.astype(np.int64)), "labels": torch.from_numpy(s.labels.astype(np.int64))},
                    {"preds": torch.from_numpy(s.labels.astype(np.int64))})
    result = ev.result(None)
    expected = score_by_bucket(s.inputs, s.labels, s.labels, ratings, 3)
    assert {k: result[k] for k in expected} == expected
    assert sum(v for k, v in result.items() if k.startswith("rating_") and k.endswith("/count")) == 6
    assert sum(v for k, v in result.items() if k.startswith("givens_") and k.endswith("/count")) == 6
    assert {k.split("/")[0] for k in result if k.startswith("givens_") and "/" in k} <= \
        {"givens_39-41", "givens_42-44", "givens_45-47"}
    # Metadata made in memory (no directory): by givens only.
    ev = build_evaluator({"name": "sudoku"}, _meta())
    ev.begin_eval()
    ev.update_batch({"inputs": torch.from_numpy(puzzle_tokens()[None]), "labels": torch.from_numpy(tokens(SOLUTION)[None])},
                    {"preds": torch.from_numpy(tokens(SOLUTION)[None])})
    assert not any(k.startswith("rating_") for k in ev.result(None)) and ev.result(None)["givens_27/count"] == 1.0
    with pytest.raises(ValueError, match="givens_bucket"):
        build_evaluator({"name": "sudoku", "givens_bucket": 0}, _meta())
