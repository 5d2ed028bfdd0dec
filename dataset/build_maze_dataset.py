"""Maze dataset builder: n x n mazes with one shortest path from start to goal, kept when that
path is long (as in the papers' Maze-Hard), or an import of the public Maze-Hard CSV files.

    python -m dataset.build_maze_dataset --output-dir data/maze-30x30-hard-1k --size 30 \
        --num-train 1000 --num-test 1000 --num-aug 7 --min-path 110 --seed 0
    python -m dataset.build_maze_dataset --output-dir data/maze-30x30-hard-1k-csv \
        --source-csv maze-30x30-hard-1k/train.csv --source-test-csv maze-30x30-hard-1k/test.csv

Encoding (the public Maze-Hard one, characters "# SGo"): pad 0, wall 1, open 2, start 3, goal 4,
path 5; vocab 6, seq_len n*n (row-major). Inputs hold walls, open cells, one start and one goal;
labels are the inputs with the cells of the shortest path strictly between start and goal set
to path (5). ignore_label_id 0 (pad; no label holds it).

Generation (dataset/maze_solver.py): a depth-first-search maze on the cells at even
coordinates, --loop-fraction of the walls left between neighbouring cells opened, a random
start, and a random goal among the cells whose shortest path from the start is at least
--min-path moves and unique (counted by a breadth-first search); a try without such a goal is
redrawn. Mazes come in order from one seeded Generator per split (test first); a maze equal to
an earlier one is redrawn. With --val-size N, val/ holds N more mazes drawn like the test ones
(not augmented) from the val seed stream (`dataset.common.val_rng`) after train and test, any
equal to a train or test maze redrawn; train/ and test/ are the same files either way. (Not with
--source-csv: the public files have no rows to spare for it.) Measured (one core, this machine, 30x30, --min-path 110): about
3 ms a maze at --loop-fraction 0.03 (1 try in 1.6 fails), 2 ms at 0, 6 ms at 0.05 (1 in 3.2
succeeds); the mean path length falls from 157 moves (0) to 127 (0.03).

Augmentation: a training group is an original plus --num-aug (0..7) distinct non-identity
symmetries of the square (rotations, reflections; `maze_solver.dihedral`), drawn at random
when fewer than 7; all 8 with --num-aug 7, like the reference's. The test split is not
augmented.

Import: --source-csv FILE gives the training mazes (all, or a seeded --subsample-size), and
--source-test-csv FILE the test mazes (all of them); the format and its checks:
dataset/maze_csv.py. The size comes from the files (--size must match it).
"""

from __future__ import annotations

if __name__ == "__main__":  # first of all: a signal while the imports below run is one line, not a traceback
    from core.early_signals import exit_on_signals

    exit_on_signals()

from pathlib import Path
from typing import Optional

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, model_validator

from core.cli import CLI, GivenPath, OptionalGivenPath, run_cli
from core.errors import DatasetError
from dataset.common import (
    MAX_INSTANCES,
    DatasetMetadata,
    ProgressBar,
    SplitArrays,
    build_indices,
    build_record,
    check_memory,
    val_rng,
    val_size_field,
)
from dataset.maze_solver import CSV_CHARS, MAX_SIZE, MIN_SIZE, PATH, VOCAB_SIZE, dihedral, generate_maze
from dataset.writer import check_output_dir, write_dataset

BUILDER_VERSION = 1
TEST_SPLIT_KEY, TRAIN_SPLIT_KEY, AUGMENT_KEY, SAMPLE_KEY = 0, 1, 2, 3
MAX_TRIES_WITHOUT_ACCEPT = 5000  # per maze: no acceptable goal (or only repeats) this many times in a row
PATH_LENGTHS_FIELD = "path_lengths"  # test/all__path_lengths.npy: each test maze's shortest path (moves)


class MazeBuildConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")  # a misspelt data.build_args key must fail, not vanish

    output_dir: GivenPath = Field(description="where to write the dataset (train/, test/, identifiers.json)")
    size: int = Field(30, ge=MIN_SIZE, le=MAX_SIZE, description="mazes are size x size cells")
    num_train: int = Field(1000, ge=1, le=MAX_INSTANCES, description="training mazes (groups)")
    num_test: int = Field(1000, ge=1, le=MAX_INSTANCES, description="test mazes (not augmented)")
    val_size: int = val_size_field()
    num_aug: int = Field(7, ge=0, le=7, description="symmetric copies per training maze (7: all 8 symmetries)")
    min_path: int = Field(110, ge=1, description="keep mazes whose shortest start-goal path has at least this many "
                          "moves (Maze-Hard: long paths)")
    loop_fraction: float = Field(0.03, ge=0.0, le=0.5, description="fraction of the walls between neighbouring cells "
                                 "opened after carving (loops; more gives shorter paths and more redraws)")
    seed: int = Field(0, ge=0, description="random seed; same arguments give byte-identical files")
    source_csv: OptionalGivenPath = Field(None, description="import training mazes from this Maze-Hard CSV")
    source_test_csv: OptionalGivenPath = Field(None, description="import test mazes from this CSV (needs --source-csv)")
    subsample_size: Optional[int] = Field(None, ge=1, le=MAX_INSTANCES, description="use a seeded random subset of "
                                          "this many --source-csv training mazes")
    skip_invalid: bool = Field(False, description="skip and count bad CSV rows instead of failing on the first")
    overwrite: bool = Field(False, description="replace a non-empty output directory")
    progress: bool = Field(True, description="show a progress bar")

    @model_validator(mode="after")
    def _check(self) -> "MazeBuildConfig":
        if self.source_csv is None:
            for name in ("source_test_csv", "subsample_size"):
                if getattr(self, name) is not None:
                    raise ValueError(f"--{name.replace('_', '-')} needs --source-csv")
            if self.skip_invalid:
                raise ValueError("--skip-invalid needs --source-csv")
            longest = ((self.size + 1) // 2) ** 2 * 2  # every cell of the lattice and the passages between
            if self.min_path >= longest:
                raise ValueError(f"--min-path {self.min_path}: a {self.size}x{self.size} maze has fewer than "
                                 f"{longest} open cells, so no path is that long")
        elif self.val_size:
            raise ValueError("--val-size: not with --source-csv (every row of the public files is already train or "
                             "test); generate the mazes instead")
        elif self.source_test_csv is None:
            raise ValueError("--source-csv needs --source-test-csv (the public files come as train.csv and test.csv)")
        return self


# ---------------------------------------------------------------------------------------------
# Generation


def split_rng(cfg: MazeBuildConfig, split_key: int) -> np.random.Generator:
    return np.random.default_rng(np.random.SeedSequence(cfg.seed, spawn_key=(split_key,)))


def generate_split(cfg: MazeBuildConfig, rng: np.random.Generator, count: int, seen: set[bytes], bar: ProgressBar):
    """`count` distinct mazes not in `seen` (added to it), drawn with `rng`: inputs, labels
    (count, n, n) uint8, path lengths (count,), tries."""
    inputs = np.empty((count, cfg.size, cfg.size), dtype=np.uint8)
    labels = np.empty_like(inputs)
    lengths = np.empty(count, dtype=np.int64)
    filled = failed = tries = 0
    while filled < count:
        tries += 1
        found = generate_maze(rng, cfg.size, cfg.min_path, cfg.loop_fraction)
        if found is None or found[0].tobytes() in seen:
            failed += 1
            if failed >= MAX_TRIES_WITHOUT_ACCEPT:
                raise DatasetError(
                    f"--size {cfg.size} --min-path {cfg.min_path} --loop-fraction {cfg.loop_fraction}: no new maze "
                    f"with a unique shortest path that long in {MAX_TRIES_WITHOUT_ACCEPT} tries; lower --min-path "
                    "or --loop-fraction")
            continue
        failed = 0
        seen.add(found[0].tobytes())
        inputs[filled], labels[filled], lengths[filled] = found
        filled += 1
        bar.update(1)
    return inputs, labels, lengths, tries


def generate_splits(cfg: MazeBuildConfig) -> dict[str, dict]:
    seen: set[bytes] = set()
    total = cfg.num_train + cfg.num_test + cfg.val_size
    with ProgressBar(total=total, desc="mazes", unit="maze", disable=not cfg.progress) as bar:
        drawn = {"test": generate_split(cfg, split_rng(cfg, TEST_SPLIT_KEY), cfg.num_test, seen, bar),
                 "train": generate_split(cfg, split_rng(cfg, TRAIN_SPLIT_KEY), cfg.num_train, seen, bar)}
        if cfg.val_size:  # last, from a stream of its own: train and test are the same without it
            drawn["val"] = generate_split(cfg, val_rng(cfg.seed), cfg.val_size, seen, bar)
    return {name: {"inputs": i, "labels": lab, "lengths": n, "extra": {"source": "generated", "generation_tries": t}}
            for name, (i, lab, n, t) in drawn.items()}


# ---------------------------------------------------------------------------------------------
# Import


def import_splits(cfg: MazeBuildConfig) -> dict[str, dict]:
    from dataset.maze_csv import read_maze_csv
    from dataset.maze_solver import shortest_lengths

    train = read_maze_csv(cfg.source_csv, "--source-csv", cfg.skip_invalid)
    test = read_maze_csv(cfg.source_test_csv, "--source-test-csv", cfg.skip_invalid)
    for flag, path, file in (("--source-csv", cfg.source_csv, train), ("--source-test-csv", cfg.source_test_csv, test)):
        if file.size != cfg.size:
            raise DatasetError(f"{flag} {path}: holds {file.size}x{file.size} mazes; pass --size {file.size}")
    rows = np.arange(train.inputs.shape[0])
    if cfg.subsample_size is not None:
        if cfg.subsample_size > rows.shape[0]:
            raise DatasetError(f"--subsample-size {cfg.subsample_size}: {cfg.source_csv} has only {rows.shape[0]} "
                               "valid mazes")
        rng = np.random.default_rng(np.random.SeedSequence(cfg.seed, spawn_key=(SAMPLE_KEY,)))
        rows = np.sort(rng.choice(rows, size=cfg.subsample_size, replace=False))
    splits = {}
    for name, file, keep, path in (("train", train, rows, cfg.source_csv),
                                   ("test", test, np.arange(test.inputs.shape[0]), cfg.source_test_csv)):
        inputs, labels = file.inputs[keep], file.labels[keep]
        lengths = np.count_nonzero(labels == PATH, axis=(1, 2)) + 1
        # The file's path is valid (maze_csv checks it); it must also be shortest.
        longer = np.flatnonzero(lengths != shortest_lengths(inputs))
        if longer.size:
            line = int(file.line_numbers[keep[longer[0]]])
            raise DatasetError(f"{'--source-csv' if name == 'train' else '--source-test-csv'} {path}, line {line}: "
                               "the answer's path is not a shortest one")
        splits[name] = {"inputs": inputs, "labels": labels, "lengths": lengths,
                        "extra": {"source": "csv", "source_csv": str(path), "invalid_rows_skipped": file.invalid_rows}}
    return splits


# ---------------------------------------------------------------------------------------------
# Augmentation and building


def augment(rng: np.random.Generator, inputs: np.ndarray, labels: np.ndarray, num_aug: int):
    """(N, n, n) grids -> (N, num_aug, n, n) copies under distinct non-identity symmetries, and
    the (N, num_aug) symmetry ids used (1..7, see `maze_solver.dihedral`)."""
    num = inputs.shape[0]
    ids = (rng.random((num, 7)).argsort(axis=1) + 1)[:, :num_aug]  # distinct symmetries per maze
    out_inputs = np.empty((num, num_aug) + inputs.shape[1:], dtype=inputs.dtype)
    out_labels = np.empty_like(out_inputs)
    for k in range(1, 8):
        where = ids == k
        rows, slots = np.nonzero(where)
        if rows.size:
            out_inputs[rows, slots] = dihedral(inputs[rows], k)
            out_labels[rows, slots] = dihedral(labels[rows], k)
    return out_inputs, out_labels, ids


def _stats(values: np.ndarray) -> dict[str, float]:
    return {"min": int(values.min()), "mean": round(float(values.mean()), 4), "max": int(values.max())}


def _metadata(cfg: MazeBuildConfig, split: dict, groups: int, num_aug: int, **fields) -> DatasetMetadata:
    return DatasetMetadata(
        pad_id=0, ignore_label_id=0, blank_identifier_id=0, vocab_size=VOCAB_SIZE, seq_len=cfg.size * cfg.size,
        num_puzzle_identifiers=1, total_groups=groups, mean_puzzle_examples=1.0, total_puzzles=groups * (1 + num_aug),
        sets=["all"], task="maze", n=cfg.size, seed=cfg.seed, num_aug=num_aug, min_path=cfg.min_path,
        loop_fraction=cfg.loop_fraction, tokens={"pad": 0, **{ch: i + 1 for i, ch in enumerate(CSV_CHARS)}},
        path_length=_stats(split["lengths"]), builder_version=BUILDER_VERSION, **split["extra"], **fields,
    )


def _split_arrays(inputs: np.ndarray, labels: np.ndarray, puzzles_per_group: int) -> SplitArrays:
    side = inputs.shape[-1]
    flat_inputs = inputs.reshape(-1, side * side).astype(np.uint8)
    flat_labels = labels.reshape(-1, side * side).astype(np.uint8)
    puzzle_indices, group_indices = build_indices([puzzles_per_group] * (flat_inputs.shape[0] // puzzles_per_group))
    return SplitArrays(inputs=flat_inputs, labels=flat_labels,
                       puzzle_identifiers=np.zeros(flat_inputs.shape[0], dtype=np.int32),
                       puzzle_indices=puzzle_indices, group_indices=group_indices)


def build_maze_dataset(cfg: MazeBuildConfig) -> Path:
    """Generate or import, augment and write the dataset; returns the output directory."""
    checked = check_output_dir(cfg.output_dir, cfg.overwrite)  # fail before spending time
    # uint8 inputs and labels, their augmented copies and the written arrays: ~6 bytes a cell.
    check_memory("--num-train/--num-aug/--size" + ("/--val-size" if cfg.val_size else ""),
                 (cfg.num_train * (1 + cfg.num_aug) + cfg.num_test + cfg.val_size) * cfg.size**2 * 6)
    splits = import_splits(cfg) if cfg.source_csv is not None else generate_splits(cfg)
    train, test = splits["train"], splits["test"]
    aug_rng = np.random.default_rng(np.random.SeedSequence(cfg.seed, spawn_key=(AUGMENT_KEY,)))
    aug_inputs, aug_labels, _ = augment(aug_rng, train["inputs"], train["labels"], cfg.num_aug)
    per_group = 1 + cfg.num_aug
    groups = train["inputs"].shape[0]
    train_arrays = _split_arrays(np.concatenate([train["inputs"][:, None], aug_inputs], axis=1),
                                 np.concatenate([train["labels"][:, None], aug_labels], axis=1), per_group)
    test_arrays = _split_arrays(test["inputs"], test["labels"], 1)
    train_meta = _metadata(cfg, train, groups, cfg.num_aug)
    test_meta = _metadata(cfg, test, test["inputs"].shape[0], 0,
                          example_arrays={PATH_LENGTHS_FIELD: "each test maze's shortest path, in moves"})
    written = {"train": (train_meta, train_arrays), "test": (test_meta, test_arrays)}
    example_arrays = {"test": {PATH_LENGTHS_FIELD: test["lengths"].astype(np.int64)}}
    if "val" in splits:  # like test: not augmented, with its path lengths
        val = splits["val"]
        val_meta = _metadata(cfg, val, val["inputs"].shape[0], 0,
                             example_arrays={PATH_LENGTHS_FIELD: "each val maze's shortest path, in moves"})
        written["val"] = (val_meta, _split_arrays(val["inputs"], val["labels"], 1))
        example_arrays["val"] = {PATH_LENGTHS_FIELD: val["lengths"].astype(np.int64)}
    return write_dataset(cfg.output_dir, cfg.overwrite, written, example_arrays=example_arrays,
                         build_args=build_record(cfg), checked=checked)


cli = CLI(name="build_maze_dataset", description=__doc__.split("\n\n")[0])


@cli.command(singleton=True)
def main(cfg: MazeBuildConfig) -> None:
    import json

    out = build_maze_dataset(cfg)
    train, test = (json.loads((out / split / "dataset.json").read_text()) for split in ("train", "test"))
    val = f", {cfg.val_size} val" if cfg.val_size else ""
    print(f"wrote {out} ({train['total_groups']} x {1 + cfg.num_aug} train, {test['total_groups']} test{val}, "
          f"{cfg.size}x{cfg.size}; train path length {train['path_length']})")


if __name__ == "__main__":
    run_cli(cli)
