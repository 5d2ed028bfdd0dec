"""Writing a whole dataset: a builder's first check of its output directory and its last step,
the atomic write (through the one guard for every `--overwrite`, dataset/replace_guard.py)."""

from __future__ import annotations

from pathlib import Path
from typing import Callable, Optional

import numpy as np

from dataset.common import (
    SPLITS, TOP_LEVEL_FILES, VAL_SIZE_ARG, VAL_SPLIT, DatasetMetadata, SplitArrays, write_identifiers, write_split,
)
from dataset.replace_guard import DATASET, Checked, check_target, write_atomically


def check_output_dir(output_dir: Path, overwrite: bool) -> Checked:
    """Refuse to write into a non-empty directory unless asked to overwrite it, and refuse to
    overwrite anything but a dataset this project's builders wrote, in a safe place (the rules:
    dataset/replace_guard.py). Pass the result to `write_dataset`, which checks again before the swap."""
    return check_target(output_dir, DATASET, overwrite)


def write_dataset_atomically(output_dir: Path, overwrite: bool, write: Callable[[Path], None],
                             checked: Optional[Checked] = None) -> None:
    """Run `write(tmp_dir)` and move the result into place only once it is complete.

    The old directory (with --overwrite) survives until the new one is fully written, so an
    interrupted build (a signal, a full disk) never leaves a half-written dataset behind at
    `output_dir`, and its temporary directory is removed. `checked`: the builder's first
    `check_output_dir`, so that the swap replaces only the directory checked then.
    """
    write_atomically(checked or check_output_dir(Path(output_dir), overwrite), write)


def write_dataset(
    output_dir: Path,
    overwrite: bool,
    splits: dict[str, tuple[DatasetMetadata, SplitArrays]],
    extra_files: Optional[dict[str, str]] = None,
    example_arrays: Optional[dict[str, dict[str, np.ndarray]]] = None,
    build_args: Optional[dict] = None,
    checked: Optional[Checked] = None,
) -> Path:
    """Write a whole dataset atomically: each split's arrays and dataset.json (set "all"),
    identifiers.json, any extra top-level text files (e.g. vocab.json), and per split any
    extra per-example arrays (`example_arrays[split][field]` -> `all__<field>.npy`).
    `build_args` (the builder's `build_record`) goes into train/dataset.json, so that the test
    split stays the same file whatever the training split's size, without `val_size`, which
    val/dataset.json records with the rest (train/ and test/ are then the same files with and
    without val/). A `"val"` split is written exactly when build_args' val_size > 0, and must
    hold that many groups. `checked`: the builder's `check_output_dir` result."""
    unknown = set(extra_files or {}) - set(TOP_LEVEL_FILES)
    if unknown:
        raise ValueError(f"write_dataset: extra files {sorted(unknown)} must be listed in TOP_LEVEL_FILES")
    if set(splits) - {*SPLITS, VAL_SPLIT} or not set(SPLITS) <= set(splits):
        raise ValueError(f"write_dataset: splits {sorted(splits)}; expected {list(SPLITS)} and optionally {VAL_SPLIT!r}")
    val_size = (build_args or {}).get(VAL_SIZE_ARG, 0)
    if (VAL_SPLIT in splits) != bool(val_size) or (
            VAL_SPLIT in splits and splits[VAL_SPLIT][1].num_groups != val_size):
        raise ValueError(f"write_dataset: build_args.{VAL_SIZE_ARG}={val_size} but the val split holds "
                         f"{splits[VAL_SPLIT][1].num_groups if VAL_SPLIT in splits else 0} groups")
    train_args = None if build_args is None else {k: v for k, v in build_args.items() if k != VAL_SIZE_ARG}
    recorded = {"train": train_args, VAL_SPLIT: build_args}

    def write(tmp: Path) -> None:
        for split, (meta, arrays) in splits.items():
            write_split(tmp / split, meta, {"all": arrays}, (example_arrays or {}).get(split), recorded.get(split))
        write_identifiers(tmp, ["<blank>"])
        for name, text in (extra_files or {}).items():
            (tmp / name).write_text(text)

    write_dataset_atomically(Path(output_dir), overwrite, write, checked)
    return Path(output_dir)
