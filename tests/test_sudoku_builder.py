import json

import numpy as np
import pytest

from conftest import assert_one_line_error, dir_digest, run_in_process, run_module
from dataset.build_sudoku_dataset import SudokuBuildConfig, augment, build_sudoku_dataset
from core.errors import DatasetError
from dataset.common import load_split
from dataset.loader import IGNORE_LABEL_ID, DeviceArrays, PuzzleDataset
from dataset.sudoku_solver import generate_puzzle, is_valid_solution, random_full_grid, solve


def brute_force_count(grid, limit=2):
    """Independent check: plain backtracking over legal digits (no propagation), fewest-options
    cell first; counts solutions up to `limit`."""
    grid = list(grid)

    def options(cell):
        r, c = divmod(cell, 9)
        br, bc = r - r % 3, c - c % 3
        used = {grid[r * 9 + k] for k in range(9)} | {grid[k * 9 + c] for k in range(9)}
        used |= {grid[(br + i) * 9 + bc + j] for i in range(3) for j in range(3)}
        return [d for d in range(1, 10) if d not in used]

    def count():
        blanks = [cell for cell in range(81) if not grid[cell]]
        if not blanks:
            return 1
        cell, digits = min(((cell, options(cell)) for cell in blanks), key=lambda item: len(item[1]))
        found = 0
        for digit in digits:
            grid[cell] = digit
            found += count()
            grid[cell] = 0
            if found >= limit:
                return limit
        return found

    return count()


def build(out, **overrides):
    # target_tries 8 keeps the default clue range (22-30) fast here and exercises the fallback.
    args = dict(output_dir=out, num_train=12, num_test=6, num_aug=3, seed=0, workers=1, target_tries=8, progress=False)
    args.update(overrides)
    return build_sudoku_dataset(SudokuBuildConfig(**args))


@pytest.fixture(scope="module")
def hard_small(tmp_path_factory):
    """A small generated dataset with a clue range and a rating filter."""
    return build(tmp_path_factory.mktemp("sudoku") / "hard", min_clues=24, max_clues=26, min_rating=1)


def digits(tokens):
    return np.asarray(tokens, dtype=np.int64) - 1  # token digit+1 -> digit, blank token 1 -> 0


# ---------------------------------------------------------------------------------------------
# Solver and generator


@pytest.mark.slow
def test_generated_puzzles_have_exactly_one_solution():
    for k in range(12):
        puzzle, solution, rating = generate_puzzle(np.random.default_rng(k), 22, 30)
        assert 22 <= sum(1 for d in puzzle if d) <= 30
        assert is_valid_solution(solution)
        assert all(p in (0, s) for p, s in zip(puzzle, solution))
        assert brute_force_count(puzzle) == 1
        found, stats = solve(puzzle)
        assert found == [solution] and stats.dead_ends == rating


@pytest.mark.slow
def test_solver_counts_agree_with_brute_force_on_ambiguous_grids():
    rng = np.random.default_rng(1)
    multiple = 0
    for k in range(15):
        puzzle, _, _ = generate_puzzle(np.random.default_rng(100 + k), 22, 26)
        givens = [cell for cell in range(81) if puzzle[cell]]
        for cell in rng.choice(givens, size=k % 3, replace=False):  # fewer clues: maybe several solutions
            puzzle[cell] = 0
        expected = brute_force_count(puzzle)
        found, _ = solve(puzzle, limit=2)
        assert len(found) == expected
        assert all(is_valid_solution(s) and all(p in (0, d) for p, d in zip(puzzle, s)) for s in found)
        multiple += expected == 2
    assert 3 <= multiple <= 12  # the check saw both cases
    assert len(solve([0] * 81)[0]) == 2
    assert solve([1, 1] + [0] * 79)[0] == []  # contradictory givens: no solution


def test_rating_is_zero_for_singles_and_counts_dead_ends():
    grid = random_full_grid(np.random.default_rng(2))
    one_blank = grid.copy()
    one_blank[40] = 0
    assert solve(one_blank)[1].dead_ends == 0
    ratings = [generate_puzzle(np.random.default_rng(k), 22, 24) for k in range(40)]
    assert any(r is not None and r[2] >= 2 for r in ratings)


# ---------------------------------------------------------------------------------------------
# The built dataset


def test_clue_range_and_rating_filter_are_respected(hard_small):
    for split in ("train", "test"):
        meta, sets = load_split(hard_small, split)
        s = sets["all"]
        originals = s.inputs[s.group_indices[:-1]]  # first member of each group
        clues = np.count_nonzero(originals != 1, axis=1)
        assert clues.min() >= 24 and clues.max() <= 26
        ratings = np.array([solve(digits(p).tolist())[1].dead_ends for p in originals])
        assert ratings.min() >= 1
        assert meta.task == "sudoku" and meta.min_rating == 1
        assert meta.clues == {"min": int(clues.min()), "mean": round(float(clues.mean()), 4), "max": int(clues.max())}
        assert meta.rating == {"min": int(ratings.min()), "mean": round(float(ratings.mean()), 4), "max": int(ratings.max())}
        assert meta.generation_attempts >= meta.total_groups


def test_every_example_is_a_unique_puzzle_with_its_solution_as_label(hard_small):
    meta, sets = load_split(hard_small, "train")
    s = sets["all"]
    assert (meta.vocab_size, meta.seq_len, meta.pad_id, meta.ignore_label_id, meta.num_puzzle_identifiers) == (11, 81, 0, 0, 1)
    assert s.inputs.dtype == np.uint8 and s.inputs.shape == (12 * 4, 81)
    assert np.array_equal(s.group_indices, np.arange(0, 49, 4)) and meta.total_puzzles == 48
    for puzzle_tokens, label_tokens in zip(s.inputs, s.labels):
        puzzle, solution = digits(puzzle_tokens), digits(label_tokens)
        assert puzzle.min() >= 0 and solution.min() >= 1
        assert is_valid_solution(solution.tolist())
        assert np.all((puzzle == 0) | (puzzle == solution))
        assert solve(puzzle.tolist())[0] == [solution.tolist()]
    groups = s.inputs.reshape(12, 4, 81)
    clue_counts = np.count_nonzero(groups != 1, axis=2)
    assert np.all(clue_counts == clue_counts[:, :1])  # symmetries keep the number of givens
    assert all(len({m.tobytes() for m in g}) == 4 for g in groups)  # copies differ from the original
    assert json.loads((hard_small / "identifiers.json").read_text()) == ["<blank>"]


def test_symmetries_map_every_unit_to_a_unit():
    from dataset.build_sudoku_dataset import draw_symmetries, source_cells
    from dataset.sudoku_solver import UNITS

    row_order, col_order, transpose, digit_map = draw_symmetries(np.random.default_rng(4), 10, 20)
    sources = source_cells(row_order, col_order, transpose).reshape(200, 81)
    units = {frozenset(u) for u in UNITS}
    for cells in sources:
        assert sorted(cells) == list(range(81))
        assert all(frozenset(cells[list(u)].tolist()) in units for u in UNITS)  # rows, columns, boxes -> units
    assert 0 < transpose.mean() < 1
    assert np.all(digit_map[..., 0] == 0) and np.all(np.sort(digit_map[..., 1:], -1) == np.arange(1, 10))


def test_augmented_copies_are_solutions_of_their_puzzles():
    rng = np.random.default_rng(3)
    solutions = np.array([random_full_grid(np.random.default_rng(k)) for k in range(20)], dtype=np.uint8)
    puzzles = np.where(rng.random((20, 81)) < 0.4, solutions, 0).astype(np.uint8)
    aug_puzzles, aug_solutions = augment(rng, puzzles, solutions, num_aug=8)
    assert aug_puzzles.shape == aug_solutions.shape == (20, 8, 81)
    for i in range(20):
        for a in range(8):
            sol, puz = aug_solutions[i, a], aug_puzzles[i, a]
            assert is_valid_solution(sol.tolist())
            assert np.all((puz == 0) | (puz == sol)) and np.count_nonzero(puz) == np.count_nonzero(puzzles[i])
            assert not np.array_equal(sol, solutions[i])


def test_loader_reads_the_built_dataset(hard_small):
    import torch

    data = PuzzleDataset.load(hard_small)
    assert data.train.num_groups == 12 and data.test.num_examples == 6
    arrays = DeviceArrays(data.test, data.test_meta, torch.device("cpu"), resident=True)
    batch = arrays.gather(np.arange(6))
    assert batch["labels"].min() >= 2 and batch["labels"].max() <= 10 and not (batch["labels"] == IGNORE_LABEL_ID).any()
    assert batch["inputs"].min() >= 1 and batch["inputs"].max() <= 10


# ---------------------------------------------------------------------------------------------
# Seeding


@pytest.mark.slow
def test_same_arguments_give_identical_bytes_whatever_the_workers(tmp_path):
    a = build(tmp_path / "a", seed=7)
    b = build(tmp_path / "b", seed=7, workers=2)
    c = build(tmp_path / "c", seed=8)
    assert dir_digest(a) == dir_digest(b)
    assert dir_digest(a) != dir_digest(c)


def test_test_split_does_not_depend_on_train_size(tmp_path):
    a = build(tmp_path / "a", num_train=5)
    b = build(tmp_path / "b", num_train=9)
    assert dir_digest(a / "test") == dir_digest(b / "test")
    train_a, train_b = load_split(a, "train")[1]["all"], load_split(b, "train")[1]["all"]
    assert np.array_equal(train_a.inputs[::4], train_b.inputs[: 5 * 4 : 4])  # originals come in attempt order


# ---------------------------------------------------------------------------------------------
# Spread over the clue range


def test_clue_targets_are_balanced_in_blocks_and_prefix_stable():
    from dataset.build_sudoku_dataset import clue_targets

    targets = clue_targets(3, 0, 23, 22, 26)
    assert targets.shape == (23,) and targets.min() >= 22 and targets.max() <= 26
    for block in range(4):  # every complete block of 5 holds each count once
        assert sorted(targets[5 * block : 5 * block + 5]) == [22, 23, 24, 25, 26]
    assert np.array_equal(clue_targets(3, 0, 9, 22, 26), targets[:9])  # more puzzles: earlier targets kept
    assert not np.array_equal(clue_targets(3, 1, 23, 22, 26), targets)  # the other split draws its own
    assert np.all(clue_targets(0, 0, 4, 30, 30) == 30)


def test_choose_try_takes_an_exact_hit_else_the_fewest_givens():
    from dataset.build_sudoku_dataset import Try, choose_try

    def t(name, clues):
        return Try(name.encode(), b"", 0, clues)

    tries = [None, t("a", 25), t("b", 24), t("c", 22), t("d", 24)]
    assert choose_try(tries, 22, limit=8, seen=set()) == 3  # the first exact hit
    assert choose_try(tries, 22, limit=8, seen={b"c"}) is None  # fewer than `limit` tries: wait for more
    assert choose_try(tries, 22, limit=5, seen={b"c"}) == 2  # fewest givens, the earlier on a tie
    assert choose_try(tries, 22, limit=3, seen=set()) == 2  # an exact hit past the limit does not count ...
    assert choose_try([None, None, t("e", 26)], 22, limit=2, seen=set()) == 2  # ... unless nothing came before
    assert choose_try([None, None, None], 22, limit=2, seen=set()) is None


def test_generation_spreads_givens_over_the_range(tmp_path):
    """28..33 is easy to reach: every puzzle gets its drawn count, each count once per block of 6."""
    out = build(tmp_path / "s", num_train=12, num_test=6, num_aug=1, min_clues=28, max_clues=33)
    for split, count in (("train", 12), ("test", 6)):
        meta, sets = load_split(out, split)
        s = sets["all"]
        clues = np.count_nonzero(s.inputs[s.group_indices[:-1]] != 1, axis=1)
        assert sorted(clues[:6]) == list(range(28, 34))
        assert meta.clue_target_hits == count and meta.generation_attempts >= count


def test_unreachable_targets_take_the_fewest_givens_found(tmp_path):
    """Below about 21 givens this generator's puzzles do not go: such targets end at the fewest
    givens among their tries that fit the range."""
    from dataset.build_sudoku_dataset import TEST_SPLIT_KEY, clue_targets

    out = build(tmp_path / "s", num_train=1, num_test=6, num_aug=0, min_clues=17, max_clues=25, target_tries=2)
    meta, sets = load_split(out, "test")
    clues = np.count_nonzero(sets["all"].inputs != 1, axis=1)
    targets = clue_targets(0, TEST_SPLIT_KEY, 6, 17, 25)
    assert np.all(clues >= targets) and clues.max() <= 25
    assert np.all(clues[targets <= 20] > targets[targets <= 20])
    assert meta.clue_target_hits == int(np.sum(clues == targets)) < 6


def test_test_ratings_array_matches_the_solver(hard_small):
    from dataset.common import read_example_array

    meta, sets = load_split(hard_small, "test")
    ratings = read_example_array(meta, "ratings", sets["all"].num_examples)
    assert meta.split_dir == hard_small / "test" and "ratings" in meta.example_arrays
    expected = [solve(digits(p).tolist())[1].dead_ends for p in sets["all"].inputs]
    assert ratings.tolist() == expected
    assert read_example_array(meta, "nonexistent", 6) is None
    with pytest.raises(DatasetError, match="all__ratings.npy: 6 entries for 7 examples"):
        read_example_array(meta, "ratings", 7)
    with pytest.raises(DatasetError, match="all__ratings.npy: 6 entries for 4 examples"):
        read_example_array(meta, "ratings", 4)  # a whole split's array must match it
    # A caller that scored the first 4 examples only (eval_max_examples, --max-examples) gets theirs.
    assert read_example_array(meta, "ratings", 4, first=True).tolist() == expected[:4]
    with pytest.raises(DatasetError, match="all__ratings.npy: 6 entries for 7 examples"):
        read_example_array(meta, "ratings", 7, first=True)


def test_sudoku_evaluator_scores_the_first_examples_by_rating(hard_small):
    """The evaluator over the first 4 test examples only (train.eval_max_examples, the sweep's
    --max-examples): its by-rating buckets count those 4, from the first 4 ratings."""
    import torch

    from evaluators.sudoku import SudokuEvaluator

    meta, sets = load_split(hard_small, "test")
    inputs, labels = sets["all"].inputs[:4], sets["all"].labels[:4]
    ev = SudokuEvaluator(meta)
    ev.begin_eval()
    ev.update_batch({"inputs": torch.as_tensor(inputs), "labels": torch.as_tensor(labels)},
                    {"preds": torch.as_tensor(labels)})
    metrics = ev.result(None)
    assert metrics["exact_accuracy"] == 1.0
    counts = {k: v for k, v in metrics.items() if k.startswith("rating_") and k.endswith("/count")}
    assert counts and sum(counts.values()) == 4


# ---------------------------------------------------------------------------------------------
# Arguments


def test_impossible_filter_is_a_clear_error(tmp_path, monkeypatch):
    import dataset.build_sudoku_dataset as builder

    monkeypatch.setattr(builder, "MAX_ATTEMPTS_WITHOUT_ACCEPT", 20)
    with pytest.raises(DatasetError, match="--min-rating 50"):
        build(tmp_path / "x", num_train=2, num_test=1, min_rating=50)
    assert not (tmp_path / "x").exists()


@pytest.mark.parametrize(
    "args, culprit",
    [
        (["--min-clues", "30", "--max-clues", "25"], "--min-clues"),
        (["--subsample-size", "5"], "--source-csv"),
        (["--max-clues", "82"], "--max-clues"),
    ],
)
def test_bad_arguments_fail_with_one_line(tmp_path, args, culprit):
    out = tmp_path / "out"
    result = run_in_process("-m", "dataset.build_sudoku_dataset", "--output-dir", str(out), "--no-progress", *args)
    assert_one_line_error(result, culprit)
    assert not out.exists()


# ---------------------------------------------------------------------------------------------
# Configs


def test_sudoku_configs_validate_and_their_build_args_are_accepted(tmp_path):
    from hydra import compose, initialize_config_dir
    from omegaconf import OmegaConf

    from conftest import REPO
    from training.config import validate_config

    with initialize_config_dir(config_dir=str(REPO / "config"), version_base=None):
        full, cpu = (validate_config(OmegaConf.to_container(compose(name), resolve=True))
                     for name in ("cfg_sudoku", "cfg_sudoku_cpu"))
    assert full.evaluators == cpu.evaluators == [{"name": "sudoku"}]
    assert (full.arch.mixer, full.arch.hidden_size, full.arch.num_layers, full.arch.H_cycles, full.arch.L_cycles,
            full.arch.halt_max_steps, full.train.global_batch_size) == ("mlp", 512, 2, 3, 6, 16, 768)
    assert cpu.train.device == "cpu" and cpu.arch.hidden_size < 512
    for cfg in (full, cpu):
        assert cfg.data.builder == "sudoku"
        SudokuBuildConfig.model_validate({**cfg.data.build_args, "output_dir": tmp_path})
    with pytest.raises(ValueError, match="num_trian"):
        SudokuBuildConfig.model_validate({"num_trian": 5, "output_dir": tmp_path})


def test_tiny_training_run_reports_sudoku_metrics(tmp_path):
    from hydra import compose, initialize_config_dir
    from omegaconf import OmegaConf

    from conftest import REPO
    from training.config import validate_config
    from training.loop import train

    overrides = [
        f"data.path={tmp_path / 'data'}", f"logging.runs_dir={tmp_path / 'runs'}",
        "data.build_args.num_train=16", "data.build_args.num_test=8", "data.build_args.num_aug=1",
        "+data.build_args.workers=1",
        "arch.hidden_size=32", "arch.num_heads=2", "arch.H_cycles=1", "arch.L_cycles=1", "arch.halt_max_steps=2",
        "train.global_batch_size=16", "train.max_steps=4", "train.eval_interval=4", "train.save_checkpoints=false",
        "logging.wandb_mode=disabled", "logging.progress=false",
    ]
    with initialize_config_dir(config_dir=str(REPO / "config"), version_base=None):
        cfg = validate_config(OmegaConf.to_container(compose("cfg_sudoku_cpu", overrides=overrides), resolve=True))
    result = train(cfg)
    assert json.loads((tmp_path / "data" / "train" / "dataset.json").read_text())["task"] == "sudoku"
    assert result["eval/examples"] == 8
    for key in ("exact_accuracy", "valid_grid_rate", "givens_kept_rate", "blank_cell_accuracy"):
        assert 0.0 <= result[f"eval/sudoku/{key}"] <= 1.0
