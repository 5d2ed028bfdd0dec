"""Sudoku (9x9) dataset builder: generated puzzles with exactly one solution, or an import.

    python -m dataset.build_sudoku_dataset --output-dir data/sudoku-hard --num-train 1000 \
        --num-test 1000 --num-aug 100 --min-clues 22 --max-clues 26 --min-rating 2 --seed 0
    python -m dataset.build_sudoku_dataset --output-dir data/sudoku-extreme-1k-aug-1000 \
        --source-csv sudoku-extreme/train.csv --source-test-csv sudoku-extreme/test.csv \
        --subsample-size 1000 --num-test 0 --num-aug 1000

Generation (dataset/sudoku_solver.py): keep --min-clues random clues of a random full grid,
give clues back until the solution is unique, take clues away again while above --max-clues
(so most puzzles end with exactly --max-clues givens; attempts that cannot get there are dropped).
Every puzzle is rated by the backtracks of a propagation + depth-first solver (0 = singles
alone solve it); --min-rating keeps only puzzles rated at least that. Attempt k of a split
draws from SeedSequence(seed, spawn_key=(split, k)), and accepted puzzles are taken in attempt
order, so the output does not depend on --workers. The test split is generated first; training
puzzles that equal a test puzzle are skipped.

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

import json
import multiprocessing
from pathlib import Path
from typing import Optional

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, model_validator
from tqdm import tqdm

from dataset.common import (
    CLI,
    DatasetError,
    DatasetMetadata,
    SplitArrays,
    build_indices,
    check_memory,
    check_output_dir,
    ignore_sigint,
    run_cli,
    write_dataset,
)
from dataset.sudoku_csv import CSVPuzzles, read_sudoku_csv
from dataset.sudoku_solver import generate_puzzle, solve

BUILDER_VERSION = 1
DEFAULT_MIN_CLUES, DEFAULT_MAX_CLUES = 22, 30  # generation when the flags are unset
TEST_SPLIT_KEY, TRAIN_SPLIT_KEY, AUGMENT_KEY, SAMPLE_KEY = 0, 1, 2, 3
MAX_ATTEMPTS_WITHOUT_ACCEPT = 5000
ORIGINALS_PER_AUGMENT_CHUNK = 256


class SudokuBuildConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")  # a misspelt data.build_args key must fail, not vanish

    output_dir: Path = Field(description="where to write the dataset (train/, test/, identifiers.json)")
    num_train: int = Field(1000, ge=1, description="generated training puzzles (groups)")
    num_test: int = Field(1000, ge=0, description="test puzzles: generated, held out of --source-csv, or sampled "
                          "from --source-test-csv (0 = all of its rows)")
    num_aug: int = Field(100, ge=0, description="augmented copies per training puzzle")
    seed: int = Field(0, ge=0, description="random seed; same arguments give byte-identical files")
    min_clues: Optional[int] = Field(None, ge=0, le=81, description=f"fewest givens (generation: {DEFAULT_MIN_CLUES}; "
                                     "import: no bound)")
    max_clues: Optional[int] = Field(None, ge=0, le=81, description=f"most givens (generation: {DEFAULT_MAX_CLUES}; "
                                     "import: no bound). Generation removes givens down to this count, so nearly "
                                     "all generated puzzles have exactly this many")
    min_rating: int = Field(0, ge=0, description="keep puzzles rated at least this (backtracks; imports: the CSV rating)")
    source_csv: Optional[Path] = Field(None, description="import training puzzles from this sudoku-extreme CSV")
    source_test_csv: Optional[Path] = Field(None, description="import test puzzles from this CSV (needs --source-csv)")
    subsample_size: Optional[int] = Field(None, ge=1, description="use a seeded random subset of this many "
                                          "--source-csv training puzzles")
    skip_invalid: bool = Field(False, description="skip and count bad CSV rows instead of failing on the first")
    workers: int = Field(2, ge=1, description="generator processes (the output does not depend on it)")
    overwrite: bool = Field(False, description="replace a non-empty output directory")
    progress: bool = Field(True, description="show a progress bar")

    @model_validator(mode="after")
    def _check(self) -> "SudokuBuildConfig":
        if self.min_clues is not None and self.max_clues is not None and self.min_clues > self.max_clues:
            raise ValueError(f"--min-clues {self.min_clues} is above --max-clues {self.max_clues}")
        if self.source_csv is None:
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


def _attempt(args: tuple[int, int, int, int, int, int]) -> Optional[tuple[bytes, bytes, int]]:
    """One generation attempt (runs in a worker): (puzzle, solution, rating) or None if rejected."""
    seed, split_key, attempt, min_clues, max_clues, min_rating = args
    rng = np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(split_key, attempt)))
    result = generate_puzzle(rng, min_clues, max_clues)
    if result is None or result[2] < min_rating:
        return None
    puzzle, solution, rating = result
    return bytes(puzzle), bytes(solution), rating


def generate_split(cfg: SudokuBuildConfig, split_key: int, count: int, seen: set[bytes], pool, bar: tqdm):
    """`count` accepted puzzles not in `seen`, in attempt order. Returns puzzles (count, 81),
    solutions (count, 81) uint8 digits, ratings (count,) and the number of attempts used."""
    min_clues, max_clues = cfg.clue_range
    puzzles, solutions, ratings = [], [], []
    attempt = since_accept = 0
    while len(puzzles) < count:
        # Enough attempts for the rest at the acceptance rate seen so far (blocks only bound the
        # wasted work: results are consumed in attempt order whatever the block size).
        acceptance = (len(puzzles) + 1) / (attempt + 1)
        block = int(min(4096, 16 + 1.2 * (count - len(puzzles)) / acceptance))
        tasks = [(cfg.seed, split_key, attempt + k, min_clues, max_clues, cfg.min_rating) for k in range(block)]
        results = pool.imap(_attempt, tasks, chunksize=8) if pool is not None else map(_attempt, tasks)
        for result in results:
            attempt += 1
            since_accept += 1
            if result is None or result[0] in seen:
                if since_accept >= MAX_ATTEMPTS_WITHOUT_ACCEPT:
                    raise DatasetError(
                        f"--min-clues {min_clues} --max-clues {max_clues} --min-rating {cfg.min_rating}: no acceptable "
                        f"puzzle in {MAX_ATTEMPTS_WITHOUT_ACCEPT} attempts; raise --max-clues or lower --min-rating")
                continue
            since_accept = 0
            seen.add(result[0])
            puzzles.append(np.frombuffer(result[0], dtype=np.uint8))
            solutions.append(np.frombuffer(result[1], dtype=np.uint8))
            ratings.append(result[2])
            bar.update(1)
            if len(puzzles) == count:
                break
    return np.stack(puzzles), np.stack(solutions), np.asarray(ratings, dtype=np.int64), attempt


def generate_splits(cfg: SudokuBuildConfig) -> dict[str, dict]:
    seen: set[bytes] = set()
    with tqdm(total=cfg.num_train + cfg.num_test, desc="Sudoku puzzles", unit="puzzle", disable=not cfg.progress) as bar:
        pool = (multiprocessing.get_context("spawn").Pool(cfg.workers, initializer=ignore_sigint)
                if cfg.workers > 1 else None)
        try:
            test = generate_split(cfg, TEST_SPLIT_KEY, cfg.num_test, seen, pool, bar)
            train = generate_split(cfg, TRAIN_SPLIT_KEY, cfg.num_train, seen, pool, bar)
        finally:
            if pool is not None:
                pool.terminate()
                pool.join()
    extra = {"source": "generated", "generation_clue_range": list(cfg.clue_range),
             "rating_definition": "backtracks of the propagation + DFS solver (dataset/sudoku_solver.py)"}
    return {
        name: {"puzzles": p, "solutions": s, "ratings": r, "extra": {**extra, "generation_attempts": attempts}}
        for name, (p, s, r, attempts) in (("train", train), ("test", test))
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
    return splits


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
            moved = np.take_along_axis(grids[lo:hi, None, :], sources, axis=-1)  # (n, A, 81)
            out[lo:hi] = np.take_along_axis(digit_map[lo:hi], moved.astype(np.intp), axis=-1)
    return out_puzzles, out_solutions


# ---------------------------------------------------------------------------------------------
# Building


def _stats(values: np.ndarray) -> dict[str, float]:
    return {"min": int(values.min()), "mean": round(float(values.mean()), 4), "max": int(values.max())}


def _metadata(cfg: SudokuBuildConfig, split: dict, groups: int, num_aug: int) -> DatasetMetadata:
    return DatasetMetadata(
        pad_id=0, ignore_label_id=0, blank_identifier_id=0, vocab_size=11, seq_len=81, num_puzzle_identifiers=1,
        total_groups=groups, mean_puzzle_examples=1.0, total_puzzles=groups * (1 + num_aug), sets=["all"],
        task="sudoku", seed=cfg.seed, num_aug=num_aug,
        min_clues=cfg.min_clues, max_clues=cfg.max_clues, min_rating=cfg.min_rating,
        clues=_stats(np.count_nonzero(split["puzzles"], axis=1)), rating=_stats(split["ratings"]),
        builder_version=BUILDER_VERSION, **split["extra"],
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
    check_output_dir(cfg.output_dir, cfg.overwrite)  # fail before spending time
    # uint8 puzzles and solutions, their augmented copies and the written arrays: ~6 bytes a cell.
    check_memory("--num-train/--num-aug", (cfg.num_train * (1 + cfg.num_aug) + cfg.num_test) * 81 * 6)
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
    test_meta = _metadata(cfg, test, test["puzzles"].shape[0], 0)

    return write_dataset(cfg.output_dir, cfg.overwrite,
                         {"train": (train_meta, train_arrays), "test": (test_meta, test_arrays)})


cli = CLI(name="build_sudoku_dataset", description=__doc__.split("\n\n")[0])


@cli.command(singleton=True)
def main(cfg: SudokuBuildConfig) -> None:
    out = build_sudoku_dataset(cfg)
    train, test = (json.loads((out / split / "dataset.json").read_text()) for split in ("train", "test"))
    print(f"wrote {out} ({train['total_groups']} x {1 + cfg.num_aug} train, {test['total_groups']} test; "
          f"train clues {train['clues']}, rating {train['rating']})")


if __name__ == "__main__":
    run_cli(cli)
