"""Sudoku (9x9) dataset builder: generated puzzles with exactly one solution, or an import.

    python -m dataset.build_sudoku_dataset --output-dir data/sudoku-hard-22-26-1k-aug1000 --num-train 1000 \
        --num-test 1000 --num-aug 1000 --min-clues 22 --max-clues 26 --min-rating 2 --seed 0
    python -m dataset.build_sudoku_dataset --output-dir data/sudoku-extreme-1k-aug-1000 \
        --source-csv sudoku-extreme/train.csv --source-test-csv sudoku-extreme/test.csv \
        --subsample-size 1000 --num-test 0 --num-aug 1000

Generation (dataset/sudoku_solver.py): each puzzle slot draws a target number of givens in
[--min-clues, --max-clues] (every count once per block of max - min + 1 slots, seeded), keeps
that many random clues of a random full grid, gives clues back until the solution is unique
and takes clues away again down to the target where the solution stays unique. A try that
cannot get down to its target ends at a minimal puzzle above it; a slot takes its first try
that hits the target exactly within --target-tries tries, else the one of those with the
fewest givens, else the first acceptable try after them. Every puzzle is rated by the
backtracks of a propagation + depth-first solver (0 = singles alone solve it); --min-rating
keeps only puzzles rated at least that, and a try above --max-clues is rejected. Try j of
slot i of a split draws from SeedSequence(seed, spawn_key=(split, i, j)) and slots are
decided in order, so the output does not depend on --workers, and a larger --num-train keeps
the earlier puzzles. The test split is generated first; training puzzles that equal a test
puzzle are skipped. The test split also holds `all__ratings.npy`, each test puzzle's rating,
which evaluators/sudoku.py reports accuracy by (the reference's loader ignores the file).
Validation (--val-size N): val/ holds N more puzzles from the test split's distribution (the same
generator, clue targets and rating filter, split key VAL_SPLIT_KEY; an import: unused rows of the
test split's file, in an order drawn from the val seed stream), generated after train and test
and equal to none of their puzzles, with `all__ratings.npy`; train/ and test/ are the same files
with or without it.

Measured spread (seed 0, 150 train + 150 test originals, --target-tries 64, 2 cores):
  --min-clues 22 --max-clues 26 --min-rating 2: 22:42 23:76 24:62 25:60 26:60 (281 of 300
    exactly on target; builder version 1 gave all of a 50 + 50 build exactly 26), 0.22 s of
    CPU per puzzle against 0.04 s for version 1 (100-puzzle builds, one process): a 22-given
    target takes ~50 tries;
  --min-clues 22 --max-clues 30: 22:32 23:36 24:33 25:34 26:32 27:32 28:34 29:33 30:34;
  --min-clues 17 --max-clues 30: 20:1 21:17 22:101 23:33 24:22 25:20 ... 30:21 (targets
    17-20 are out of this generator's reach and end at 21-22).

Import: --source-csv FILE (sudoku-extreme format: source,question,answer,rating) gives the
training puzzles (all, or a seeded --subsample-size of them); the test puzzles come from
--source-test-csv FILE (all with --num-test 0, else a seeded sample of --num-test), or, without
it, --num-test rows held out of --source-csv at random. --min-rating, --min-clues and
--max-clues filter imported rows too (the rating is the file's own column).

Encoding: tokens digit+1 with blank -> 1 (vocab 11, pad 0), labels the solution digits+1; seq_len
81. A training group is an original plus --num-aug copies under a random digit relabelling,
band and stack permutation, row permutations within bands, column permutations within stacks
and a transpose with probability 1/2. The test split is not augmented.
"""

from __future__ import annotations

if __name__ == "__main__":  # first of all: a signal while the imports below run is one line, not a traceback
    from core.early_signals import exit_on_signals

    exit_on_signals()

import json
import multiprocessing
from pathlib import Path
from typing import NamedTuple, Optional

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, model_validator
from tqdm import tqdm

from core.cli import CLI, GivenPath, OptionalGivenPath, run_cli
from core.errors import DatasetError
from core.signals import ignore_sigint
from dataset.common import (
    MAX_AUGMENTATIONS, MAX_INSTANCES, DatasetMetadata, ProgressBar, SplitArrays, build_indices, build_record,
    check_memory, val_rng, val_size_field,
)
from dataset.sudoku_csv import CSVPuzzles, read_sudoku_csv
from dataset.sudoku_solver import generate_puzzle, solve
from dataset.writer import check_output_dir, write_dataset

BUILDER_VERSION = 2  # 2: givens spread over the clue range; test ratings array
DEFAULT_MIN_CLUES, DEFAULT_MAX_CLUES = 22, 30  # generation when the flags are unset
TEST_SPLIT_KEY, TRAIN_SPLIT_KEY, AUGMENT_KEY, SAMPLE_KEY, TARGET_KEY, VAL_SPLIT_KEY = 0, 1, 2, 3, 4, 5
MIN_UNIQUE_CLUES = 17  # proved minimum for a unique solution (McGuire et al., 2012)
MAX_ATTEMPTS_WITHOUT_ACCEPT = 5000  # per puzzle, without one acceptable try
RATINGS_FIELD = "ratings"  # test/all__ratings.npy: one rating per test example (evaluators/sudoku.py)
ROUND_TASKS = 2048  # tries computed ahead per round (bounds wasted work, not the output)
MAX_TRIES_PER_ROUND = 64
ORIGINALS_PER_AUGMENT_CHUNK = 256


class SudokuBuildConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")  # a misspelt data.build_args key must fail, not vanish

    output_dir: GivenPath = Field(description="where to write the dataset (train/, test/, identifiers.json)")
    num_train: int = Field(1000, ge=1, le=MAX_INSTANCES, description="generated training puzzles (groups)")
    num_test: int = Field(1000, ge=0, le=MAX_INSTANCES, description="test puzzles: generated, held out of --source-csv, or sampled "
                          "from --source-test-csv (0 = all of its rows)")
    val_size: int = val_size_field()
    num_aug: int = Field(100, ge=0, le=MAX_AUGMENTATIONS, description="augmented copies per training puzzle")
    seed: int = Field(0, ge=0, description="random seed; same arguments give byte-identical files")
    min_clues: Optional[int] = Field(None, ge=0, le=81, description=f"fewest givens (generation: {DEFAULT_MIN_CLUES}; "
                                     "import: no bound)")
    max_clues: Optional[int] = Field(None, ge=0, le=81, description=f"most givens (generation: {DEFAULT_MAX_CLUES}; "
                                     "import: no bound). Generation spreads the puzzles over the range, a target "
                                     "count per puzzle (measured at 22-26, --min-rating 2, 300 puzzles: "
                                     "22:42 23:76 24:62 25:60 26:60); see --target-tries")
    target_tries: int = Field(64, ge=1, le=1000, description="generation: tries per puzzle to reach its drawn "
                              "number of givens exactly before taking the try that came closest (fewest givens); "
                              "low targets are rare (22 givens: ~1 try in 50 at --min-rating 2), so more tries "
                              "spread the counts more evenly and cost more time")
    min_rating: int = Field(0, ge=0, le=MAX_INSTANCES, description="keep puzzles rated at least this (backtracks; imports: the CSV rating)")
    source_csv: OptionalGivenPath = Field(None, description="import training puzzles from this sudoku-extreme CSV")
    source_test_csv: OptionalGivenPath = Field(None, description="import test puzzles from this CSV (needs --source-csv)")
    subsample_size: Optional[int] = Field(None, ge=1, le=MAX_INSTANCES, description="use a seeded random subset of this many "
                                          "--source-csv training puzzles")
    skip_invalid: bool = Field(False, description="skip and count bad CSV rows instead of failing on the first")
    workers: int = Field(2, ge=1, le=256, description="generator processes (the output does not depend on it)")
    overwrite: bool = Field(False, description="replace a non-empty output directory")
    progress: bool = Field(True, description="show a progress bar")

    @model_validator(mode="after")
    def _check(self) -> "SudokuBuildConfig":
        if self.min_clues is not None and self.max_clues is not None and self.min_clues > self.max_clues:
            raise ValueError(f"--min-clues {self.min_clues} is above --max-clues {self.max_clues}")
        if self.source_csv is None:
            if self.max_clues is not None and self.max_clues < MIN_UNIQUE_CLUES:
                raise ValueError(f"--max-clues {self.max_clues}: no 9x9 Sudoku with fewer than {MIN_UNIQUE_CLUES} givens "
                                 "has a unique solution, so generation could never succeed")
            for name in ("source_test_csv", "subsample_size"):
                if getattr(self, name) is not None:
                    raise ValueError(f"--{name.replace('_', '-')} needs --source-csv")
            if self.skip_invalid:
                raise ValueError("--skip-invalid needs --source-csv")
            if self.num_test == 0:
                raise ValueError("--num-test 0 (all rows) needs --source-test-csv")
        elif self.source_test_csv is None and self.num_test == 0:
            raise ValueError("--num-test 0 (all rows) needs --source-test-csv; without it --num-test rows are held out")
        return self

    @property
    def clue_range(self) -> tuple[int, int]:
        """(min, max) givens for generation; an unset bound defaults without crossing the other."""
        if self.min_clues is not None:
            low = self.min_clues
        else:
            low = min(DEFAULT_MIN_CLUES, DEFAULT_MAX_CLUES if self.max_clues is None else self.max_clues)
        return low, max(low, DEFAULT_MAX_CLUES) if self.max_clues is None else self.max_clues


# ---------------------------------------------------------------------------------------------
# Generation


def clue_targets(seed: int, split_key: int, count: int, low: int, high: int) -> np.ndarray:
    """(count,) each puzzle's number of givens: every value in low..high once per block of
    high - low + 1 consecutive puzzles, in a seeded random order. Any prefix is spread evenly,
    and asking for more puzzles leaves the earlier targets unchanged."""
    width = high - low + 1
    rng = np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(split_key, TARGET_KEY)))
    blocks = rng.random((-(-count // width), width)).argsort(axis=1)  # row b: block b's order
    return low + blocks.reshape(-1)[:count]


class Try(NamedTuple):
    puzzle: bytes
    solution: bytes
    rating: int
    clues: int


def _attempt(args: tuple[int, int, int, int, int, int, int]) -> Optional[Try]:
    """Try `attempt` of one puzzle slot (runs in a worker); None when rejected (rating, range)."""
    seed, split_key, slot, attempt, target, max_clues, min_rating = args
    rng = np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(split_key, slot, attempt)))
    result = generate_puzzle(rng, target, max_clues)
    if result is None or result[2] < min_rating:
        return None
    puzzle, solution, rating = result
    return Try(bytes(puzzle), bytes(solution), rating, sum(1 for d in puzzle if d))


def choose_try(tries: list[Optional[Try]], target: int, limit: int, seen: set[bytes]) -> Optional[int]:
    """Which of a slot's tries (in try order) becomes its puzzle, or None when it needs more.

    Acceptable tries (not rejected, not already taken): the first of the first `limit` that
    has exactly `target` givens; else the one of those `limit` with the fewest givens (the
    earliest on a tie); else the first acceptable try after them."""
    best = None
    for index, found in enumerate(tries):
        if found is None or found.puzzle in seen:
            continue
        if index >= limit:
            return best if best is not None else index
        if found.clues == target:
            return index
        if best is None or found.clues < tries[best].clues:
            best = index
    return best if len(tries) >= limit else None


def generate_split(cfg: SudokuBuildConfig, split_key: int, count: int, seen: set[bytes], pool, bar: tqdm):
    """`count` accepted puzzles not in `seen`, slot by slot (see `choose_try`). Returns puzzles
    (count, 81), solutions (count, 81) uint8 digits, ratings (count,), the tries the choices
    examined and how many puzzles have exactly their target number of givens.

    Tries are computed ahead in rounds, each slot getting about as many as its target's hit
    rate so far suggests; the choice depends only on each try's own seed, so neither the
    rounds nor --workers change the output."""
    low, high = cfg.clue_range
    targets = clue_targets(cfg.seed, split_key, count, low, high)
    limit = cfg.target_tries
    tries: dict[int, list[Optional[Try]]] = {}
    hits = np.ones((high + 1, 2))  # per target: (exact hits + 1, tries + 1), a rate estimate for scheduling
    chosen: list[Try] = []
    examined = exact = 0
    while len(chosen) < count:
        tasks = []
        for slot in range(len(chosen), count):
            if len(tasks) >= ROUND_TASKS:
                break
            have = tries.setdefault(slot, [])
            target = int(targets[slot])
            if choose_try(have, target, limit, seen) is not None:
                continue
            # Half the expected tries to a hit per round: less work past the hit, few rounds.
            want = int(min(MAX_TRIES_PER_ROUND, np.ceil(0.5 * hits[target, 1] / hits[target, 0])))
            if len(have) < limit:
                want = min(want, limit - len(have))
            tasks += [(cfg.seed, split_key, slot, len(have) + k, target, high, cfg.min_rating) for k in range(want)]
        results = pool.imap(_attempt, tasks, chunksize=4) if pool is not None else map(_attempt, tasks)
        for task, found in zip(tasks, results):
            slot, target = task[2], task[4]
            tries[slot].append(found)
            hits[target] += (found is not None and found.clues == target, 1)
        while len(chosen) < count:  # take decided slots, in order
            slot = len(chosen)
            index = choose_try(tries[slot], int(targets[slot]), limit, seen)
            if index is None:
                if len(tries[slot]) >= MAX_ATTEMPTS_WITHOUT_ACCEPT:
                    raise DatasetError(
                        f"--min-clues {low} --max-clues {high} --min-rating {cfg.min_rating}: no acceptable "
                        f"puzzle in {MAX_ATTEMPTS_WITHOUT_ACCEPT} attempts; raise --max-clues or lower --min-rating")
                break
            found = tries.pop(slot)[index]
            seen.add(found.puzzle)
            chosen.append(found)
            hit = found.clues == int(targets[slot])
            examined += index + 1 if hit else max(index + 1, limit)
            exact += int(hit)
            bar.update(1)
    puzzles = np.stack([np.frombuffer(c.puzzle, dtype=np.uint8) for c in chosen])
    solutions = np.stack([np.frombuffer(c.solution, dtype=np.uint8) for c in chosen])
    return puzzles, solutions, np.asarray([c.rating for c in chosen], dtype=np.int64), examined, exact


def generate_splits(cfg: SudokuBuildConfig) -> dict[str, dict]:
    seen: set[bytes] = set()
    total = cfg.num_train + cfg.num_test + cfg.val_size
    with ProgressBar(total=total, desc="Sudoku puzzles", unit="puzzle", disable=not cfg.progress) as bar:
        pool = (multiprocessing.get_context("spawn").Pool(cfg.workers, initializer=ignore_sigint)
                if cfg.workers > 1 else None)
        try:
            test = generate_split(cfg, TEST_SPLIT_KEY, cfg.num_test, seen, pool, bar)
            train = generate_split(cfg, TRAIN_SPLIT_KEY, cfg.num_train, seen, pool, bar)
            # Last, from the test distribution with its own seeds, `seen` holding train and test.
            val = generate_split(cfg, VAL_SPLIT_KEY, cfg.val_size, seen, pool, bar) if cfg.val_size else None
        finally:
            if pool is not None:
                pool.terminate()
                pool.join()
    extra = {"source": "generated", "generation_clue_range": list(cfg.clue_range), "target_tries": cfg.target_tries,
             "rating_definition": "backtracks of the propagation + DFS solver (dataset/sudoku_solver.py)"}
    return {
        name: {"puzzles": p, "solutions": s, "ratings": r,
               "extra": {**extra, "generation_attempts": attempts, "clue_target_hits": hits}}
        for name, (p, s, r, attempts, hits) in (("train", train), ("test", test), ("val", val or (None,) * 5))
        if p is not None
    }


# ---------------------------------------------------------------------------------------------
# Import


def _filter_rows(cfg: SudokuBuildConfig, puzzles: np.ndarray, ratings: np.ndarray) -> np.ndarray:
    clues = np.count_nonzero(puzzles, axis=1)
    keep = ratings >= cfg.min_rating
    if cfg.min_clues is not None:
        keep &= clues >= cfg.min_clues
    if cfg.max_clues is not None:
        keep &= clues <= cfg.max_clues
    return np.flatnonzero(keep)


def _unique_rows(file: CSVPuzzles, rows: np.ndarray) -> np.ndarray:
    """(len(rows),) bool: the puzzle at each row has exactly one solution (the answer column
    says it has at least one; a puzzle with several has no single right answer to learn)."""
    return np.array([len(solve(file.puzzles[r].tolist(), limit=2)[0]) == 1 for r in rows], dtype=bool)


def _keep_unique(cfg: SudokuBuildConfig, file: CSVPuzzles, rows: np.ndarray, spare: np.ndarray, flag: str,
                 path: Path) -> tuple[np.ndarray, int]:
    """`rows` with every multi-solution puzzle replaced by the next unique one from `spare`
    while it lasts (with --skip-invalid; without, the first one is an error naming its line).
    Returns the sorted rows and how many rows were skipped."""
    unique = _unique_rows(file, rows)
    skipped = int((~unique).sum())
    if skipped and not cfg.skip_invalid:
        line = int(file.line_numbers[rows[~unique][0]])
        raise DatasetError(f"{flag} {path}, line {line}: question has more than one solution; "
                           "pass --skip-invalid to skip such rows")
    kept, need = list(rows[unique]), skipped
    for row in spare:
        if not need:
            break
        if _unique_rows(file, np.array([row]))[0]:
            kept.append(row)
            need -= 1
        else:
            skipped += 1
    return np.sort(np.asarray(kept, dtype=np.int64)), skipped


def _sample(rng: np.random.Generator, rows: np.ndarray, size: Optional[int], flag: str, path: Path) -> np.ndarray:
    if size is None:
        return rows
    if size > rows.shape[0]:
        raise DatasetError(f"{flag} {size}: only {rows.shape[0]} puzzles of {path} pass the filters")
    return np.sort(rng.choice(rows, size=size, replace=False))


def import_splits(cfg: SudokuBuildConfig) -> dict[str, dict]:
    train_file = read_sudoku_csv(cfg.source_csv, "--source-csv", cfg.skip_invalid)
    train_rows = _filter_rows(cfg, train_file.puzzles, train_file.ratings)
    rng = np.random.default_rng(np.random.SeedSequence(cfg.seed, spawn_key=(SAMPLE_KEY,)))
    if cfg.source_test_csv is None:
        if cfg.num_test >= train_rows.shape[0]:
            raise DatasetError(f"--num-test {cfg.num_test}: {cfg.source_csv} has only {train_rows.shape[0]} puzzles "
                               "passing the filters, so none would be left to train on")
        shuffled = rng.permutation(train_rows)
        test_file, test_rows, train_rows = train_file, np.sort(shuffled[: cfg.num_test]), np.sort(shuffled[cfg.num_test :])
        test_path = cfg.source_csv
        test_candidates = shuffled
    else:
        test_file = read_sudoku_csv(cfg.source_test_csv, "--source-test-csv", cfg.skip_invalid)
        test_candidates = _filter_rows(cfg, test_file.puzzles, test_file.ratings)
        test_rows = _sample(rng, test_candidates, cfg.num_test or None, "--num-test", cfg.source_test_csv)
        test_path = cfg.source_test_csv
    train_candidates = train_rows
    train_rows = _sample(rng, train_rows, cfg.subsample_size, "--subsample-size", cfg.source_csv)
    # Replacements for multi-solution rows (--skip-invalid) come in a seeded order from the
    # rows no split uses; a file without such rows yields the same bytes as before this check.
    spare_rng = np.random.default_rng(np.random.SeedSequence(cfg.seed, spawn_key=(SAMPLE_KEY, 1)))
    used = np.union1d(train_rows, test_rows) if cfg.source_test_csv is None else test_rows
    test_spare = spare_rng.permutation(np.setdiff1d(test_candidates, used))
    test_flag = "--source-test-csv" if cfg.source_test_csv else "--source-csv"
    test_rows, test_skipped = _keep_unique(cfg, test_file, test_rows, test_spare, test_flag, test_path)
    used = np.union1d(train_rows, test_rows) if cfg.source_test_csv is None else train_rows
    train_spare = spare_rng.permutation(np.setdiff1d(train_candidates, used))
    train_rows, train_skipped = _keep_unique(cfg, train_file, train_rows, train_spare, "--source-csv", cfg.source_csv)
    splits = {}
    for name, file, rows, path, skipped in (("train", train_file, train_rows, cfg.source_csv, train_skipped),
                                            ("test", test_file, test_rows, test_path, test_skipped)):
        if rows.shape[0] == 0:
            raise DatasetError(f"{path}: no puzzles left for the {name} split after the filters")
        extra = {"source": "csv", "source_csv": str(path), "source_rows_valid": int(file.puzzles.shape[0]),
                 "invalid_rows_skipped": file.invalid_rows, "multi_solution_rows_skipped": skipped,
                 "rating_definition": "the CSV's rating column"}
        splits[name] = {"puzzles": file.puzzles[rows], "solutions": file.solutions[rows], "ratings": file.ratings[rows],
                        "extra": extra}
    if cfg.val_size:
        used = np.union1d(train_rows, test_rows) if cfg.source_test_csv is None else test_rows
        val_rows, skipped = _val_rows(cfg, test_file, np.setdiff1d(test_candidates, used), test_flag, test_path,
                                      {p.tobytes() for split in splits.values() for p in split["puzzles"]})
        splits["val"] = {"puzzles": test_file.puzzles[val_rows], "solutions": test_file.solutions[val_rows],
                         "ratings": test_file.ratings[val_rows],
                         "extra": {**splits["test"]["extra"], "multi_solution_rows_skipped": skipped}}
    return splits


def _val_rows(cfg: SudokuBuildConfig, file: CSVPuzzles, candidates: np.ndarray, flag: str, path: Path,
              seen: set[bytes]) -> tuple[np.ndarray, int]:
    """--val-size rows of the test split's file that no split uses, taken in an order drawn from
    the val seed stream: puzzles equal to a train or test puzzle are passed over, and so are
    multi-solution ones (with --skip-invalid; without, the first is an error naming its line).
    Returns the sorted rows and how many multi-solution rows were skipped."""
    rows: list[int] = []
    skipped = 0
    for row in val_rng(cfg.seed).permutation(candidates):
        if len(rows) == cfg.val_size:
            break
        key = file.puzzles[row].tobytes()
        if key in seen:
            continue
        if not _unique_rows(file, np.array([row]))[0]:
            if not cfg.skip_invalid:
                raise DatasetError(f"{flag} {path}, line {int(file.line_numbers[row])}: question has more than one "
                                   "solution; pass --skip-invalid to skip such rows")
            skipped += 1
            continue
        seen.add(key)
        rows.append(int(row))
    if len(rows) < cfg.val_size:
        raise DatasetError(f"--val-size {cfg.val_size}: only {len(rows)} puzzles of {path} that pass the filters are "
                           "left after the training and test splits")
    return np.sort(np.asarray(rows, dtype=np.int64)), skipped


# ---------------------------------------------------------------------------------------------
# Augmentation


def draw_symmetries(rng: np.random.Generator, num: int, num_aug: int):
    """Random symmetries for `num_aug` copies of `num` puzzles.

    Returns row_order, col_order (N, A, 9): old row/column of each new one (a band or stack
    permutation composed with permutations inside each); transpose (N, A) bool; digit_map
    (N, A, 10) with 0 -> 0 and a permutation of 1..9.
    """
    shape = (num, num_aug)

    def line_order() -> np.ndarray:
        outer = rng.random(shape + (3,)).argsort(-1)  # which old band goes to each new band
        inner = rng.random(shape + (3, 3)).argsort(-1)  # line order inside each new band
        return (outer[..., :, None] * 3 + inner).reshape(shape + (9,)).astype(np.int8)

    row_order, col_order = line_order(), line_order()
    transpose = rng.random(shape) < 0.5
    digit_map = np.concatenate([np.zeros(shape + (1,), dtype=np.uint8),
                                (rng.random(shape + (9,)).argsort(-1) + 1).astype(np.uint8)], axis=-1)
    return row_order, col_order, transpose, digit_map


def source_cells(row_order: np.ndarray, col_order: np.ndarray, transpose: np.ndarray) -> np.ndarray:
    """(..., 81): the old cell each new cell takes its digit from. New cell (r, c) reads old
    (row_order[r], col_order[c]), or with a transpose old (row_order[c], col_order[r])."""
    rows = row_order.astype(np.intp)[..., :, None]
    cols = col_order.astype(np.intp)[..., None, :]
    plain = rows * 9 + cols  # (..., 9, 9)
    return np.where(transpose[..., None, None], np.swapaxes(plain, -1, -2), plain).reshape(plain.shape[:-2] + (81,))


def apply_symmetry(grids: np.ndarray, sources: np.ndarray, value_map: np.ndarray) -> np.ndarray:
    """Move cells and relabel values: new cell k holds value_map[grid[sources[k]]].

    grids (..., 81) values below value_map's length; sources (..., 81) from `source_cells`;
    value_map (..., V) a permutation of 0..V-1 (digits: `draw_symmetries`' digit_map, 0 -> 0;
    tokens: `token_map`). Leading axes broadcast. The builder's augmentation and test-time voting
    (evaluators/sudoku.py: `sudoku_symmetries`) both transform grids through this one function."""
    moved = np.take_along_axis(grids, sources, axis=-1)
    return np.take_along_axis(value_map, moved.astype(np.intp), axis=-1)


def inverse_symmetry(sources: np.ndarray, value_map: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The (sources, value_map) that `apply_symmetry` undoes these with (both are permutations)."""
    return np.argsort(sources, axis=-1), np.argsort(value_map, axis=-1)


def token_map(digit_map: np.ndarray, vocab_size: int) -> np.ndarray:
    """A digit relabelling (..., 10) as one on tokens (..., vocab_size): digit d is token d + 1;
    PAD (0), blank (1) and any token above the digits keep their value."""
    table = np.broadcast_to(np.arange(vocab_size, dtype=np.int64), digit_map.shape[:-1] + (vocab_size,)).copy()
    table[..., 2:11] = digit_map[..., 1:10].astype(np.int64) + 1
    return table


def augment(rng: np.random.Generator, puzzles: np.ndarray, solutions: np.ndarray, num_aug: int):
    """`num_aug` symmetric copies of each puzzle and its solution.

    puzzles, solutions (N, 81) digits (0 = blank) -> (N, num_aug, 81) each. The random choices
    are drawn up front and applied in chunks of originals to bound the memory of the indices.
    """
    num = puzzles.shape[0]
    row_order, col_order, transpose, digit_map = draw_symmetries(rng, num, num_aug)
    out_puzzles = np.empty((num, num_aug, 81), dtype=np.uint8)
    out_solutions = np.empty((num, num_aug, 81), dtype=np.uint8)
    for lo in range(0, num, ORIGINALS_PER_AUGMENT_CHUNK):
        hi = min(lo + ORIGINALS_PER_AUGMENT_CHUNK, num)
        sources = source_cells(row_order[lo:hi], col_order[lo:hi], transpose[lo:hi])  # (n, A, 81)
        for grids, out in ((puzzles, out_puzzles), (solutions, out_solutions)):
            out[lo:hi] = apply_symmetry(grids[lo:hi, None, :], sources, digit_map[lo:hi])  # (n, A, 81)
    return out_puzzles, out_solutions


# ---------------------------------------------------------------------------------------------
# Building


def _stats(values: np.ndarray) -> dict[str, float]:
    return {"min": int(values.min()), "mean": round(float(values.mean()), 4), "max": int(values.max())}


def _metadata(cfg: SudokuBuildConfig, split: dict, groups: int, num_aug: int, **fields) -> DatasetMetadata:
    return DatasetMetadata(
        pad_id=0, ignore_label_id=0, blank_identifier_id=0, vocab_size=11, seq_len=81, num_puzzle_identifiers=1,
        total_groups=groups, mean_puzzle_examples=1.0, total_puzzles=groups * (1 + num_aug), sets=["all"],
        task="sudoku", seed=cfg.seed, num_aug=num_aug,
        min_clues=cfg.min_clues, max_clues=cfg.max_clues, min_rating=cfg.min_rating,
        clues=_stats(np.count_nonzero(split["puzzles"], axis=1)), rating=_stats(split["ratings"]),
        builder_version=BUILDER_VERSION, **split["extra"], **fields,
    )


def _split_arrays(puzzles: np.ndarray, solutions: np.ndarray, puzzles_per_group: int) -> SplitArrays:
    """Digits (G, P, 81) -> tokens: digit + 1, blank 0 -> 1."""
    inputs = (puzzles.reshape(-1, 81) + 1).astype(np.uint8)
    labels = (solutions.reshape(-1, 81) + 1).astype(np.uint8)
    puzzle_indices, group_indices = build_indices([puzzles_per_group] * (inputs.shape[0] // puzzles_per_group))
    return SplitArrays(inputs=inputs, labels=labels, puzzle_identifiers=np.zeros(inputs.shape[0], dtype=np.int32),
                       puzzle_indices=puzzle_indices, group_indices=group_indices)


def build_sudoku_dataset(cfg: SudokuBuildConfig) -> Path:
    """Generate or import, augment and write the dataset; returns the output directory."""
    checked = check_output_dir(cfg.output_dir, cfg.overwrite)  # fail before spending time
    # uint8 puzzles and solutions, their augmented copies and the written arrays: ~6 bytes a cell.
    check_memory("--num-train/--num-aug" + ("/--val-size" if cfg.val_size else ""), (cfg.num_train * (1 + cfg.num_aug) + cfg.num_test + cfg.val_size) * 81 * 6)
    splits = import_splits(cfg) if cfg.source_csv is not None else generate_splits(cfg)
    train, test = splits["train"], splits["test"]
    aug_rng = np.random.default_rng(np.random.SeedSequence(cfg.seed, spawn_key=(AUGMENT_KEY,)))
    aug_puzzles, aug_solutions = augment(aug_rng, train["puzzles"], train["solutions"], cfg.num_aug)
    per_group = 1 + cfg.num_aug
    groups = train["puzzles"].shape[0]
    train_arrays = _split_arrays(np.concatenate([train["puzzles"][:, None], aug_puzzles], axis=1),
                                 np.concatenate([train["solutions"][:, None], aug_solutions], axis=1), per_group)
    test_arrays = _split_arrays(test["puzzles"], test["solutions"], 1)
    train_meta = _metadata(cfg, train, groups, cfg.num_aug)
    test_meta = _metadata(cfg, test, test["puzzles"].shape[0], 0,
                          example_arrays={RATINGS_FIELD: "each test puzzle's rating (see rating_definition)"})

    written = {"train": (train_meta, train_arrays), "test": (test_meta, test_arrays)}
    example_arrays = {"test": {RATINGS_FIELD: test["ratings"].astype(np.int64)}}
    if "val" in splits:  # like test: not augmented, with its ratings
        val = splits["val"]
        val_meta = _metadata(cfg, val, val["puzzles"].shape[0], 0,
                             example_arrays={RATINGS_FIELD: "each val puzzle's rating (see rating_definition)"})
        written["val"] = (val_meta, _split_arrays(val["puzzles"], val["solutions"], 1))
        example_arrays["val"] = {RATINGS_FIELD: val["ratings"].astype(np.int64)}

    return write_dataset(cfg.output_dir, cfg.overwrite, written, example_arrays=example_arrays,
                         build_args=build_record(cfg), checked=checked)


cli = CLI(name="build_sudoku_dataset", description=__doc__.split("\n\n")[0])


@cli.command(singleton=True)
def main(cfg: SudokuBuildConfig) -> None:
    out = build_sudoku_dataset(cfg)
    train, test = (json.loads((out / split / "dataset.json").read_text()) for split in ("train", "test"))
    val = f", {cfg.val_size} val" if cfg.val_size else ""
    print(f"wrote {out} ({train['total_groups']} x {1 + cfg.num_aug} train, {test['total_groups']} test{val}; "
          f"train clues {train['clues']}, rating {train['rating']})")


if __name__ == "__main__":
    run_cli(cli)
