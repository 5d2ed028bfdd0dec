"""Loading a puzzle dataset onto the training device and sampling batches from it.

Training follows the reference's group semantics: an epoch visits every group once in a
seeded random order and draws one random puzzle from it; the puzzles' examples are
concatenated and cut into global batches. The order is computed with numpy on the host, so
the batch sequence is the same on every device; only the (B,) index vector travels to the
device each step, and the arrays themselves stay there when they fit.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Optional

import numpy as np
import torch

from core.errors import DatasetError
from dataset.common import VAL_SPLIT, DatasetMetadata, SplitArrays, check_splits_agree, load_split

IGNORE_LABEL_ID = -100  # what the loss ignores (the dataset's ignore_label_id is mapped to it)


def concat_sets(sets: dict[str, SplitArrays]) -> SplitArrays:
    """All sets of a split as one (index arrays offset accordingly)."""
    parts = list(sets.values())
    if len(parts) == 1:
        return parts[0]
    ex_off = np.cumsum([0] + [p.num_examples for p in parts])
    pz_off = np.cumsum([0] + [p.num_puzzles for p in parts])
    return SplitArrays(
        inputs=np.concatenate([p.inputs for p in parts]),
        labels=np.concatenate([p.labels for p in parts]),
        puzzle_identifiers=np.concatenate([p.puzzle_identifiers for p in parts]),
        puzzle_indices=np.concatenate(
            [[0]] + [p.puzzle_indices[1:].astype(np.int64) + o for p, o in zip(parts, ex_off)]
        ).astype(np.int64),
        group_indices=np.concatenate(
            [[0]] + [p.group_indices[1:].astype(np.int64) + o for p, o in zip(parts, pz_off)]
        ).astype(np.int64),
    )


def missing_val_message(path: Path | str) -> str:
    """What to do about a dataset without val/ (one line: the path and the flags that build one)."""
    return (f"{Path(path) / VAL_SPLIT}: not found; this dataset has no validation split. Build one with the "
            f"builder's --val-size N (a config: data.build_args.val_size=N and a new data.path)")


@dataclass
class PuzzleDataset:
    """Validated train and test splits of one dataset directory, and its val split when it
    has one (validated like test/)."""

    path: Path
    train_meta: DatasetMetadata
    test_meta: DatasetMetadata
    train: SplitArrays
    test: SplitArrays
    val_meta: Optional[DatasetMetadata] = None
    val: Optional[SplitArrays] = None

    @classmethod
    def load(cls, path: Path | str) -> "PuzzleDataset":
        path = Path(path)
        train_meta, train_sets = load_split(path, "train")
        test_meta, test_sets = load_split(path, "test")
        check_splits_agree(path, train_meta, test_meta)
        val_meta = val = None
        if (path / VAL_SPLIT).exists() or (path / VAL_SPLIT).is_symlink():  # a val/ there is read, and checked, in full
            val_meta, val_sets = load_split(path, VAL_SPLIT)
            check_splits_agree(path, train_meta, val_meta, VAL_SPLIT)
            val = concat_sets(val_sets)
        return cls(path, train_meta, test_meta, concat_sets(train_sets), concat_sets(test_sets), val_meta, val)

    @property
    def meta(self) -> DatasetMetadata:
        return self.train_meta

    def split(self, name: str) -> tuple[DatasetMetadata, SplitArrays]:
        """An evaluation split ("test" or "val") as (metadata, arrays); a missing val/ is one
        DatasetError naming the path and the builder flag."""
        if name == "test":
            return self.test_meta, self.test
        if name == VAL_SPLIT:
            if self.val is None or self.val_meta is None:
                raise DatasetError(missing_val_message(self.path))
            return self.val_meta, self.val
        raise ValueError(f"PuzzleDataset.split: unknown split {name!r} (test or {VAL_SPLIT})")


class DeviceArrays:
    """One split's examples as tensors: on `device` when resident, else pinned host memory.

    inputs (E, L) int32, labels (E, L) int32 with the ignore id mapped to -100, and
    per-example puzzle identifiers (E,) int32.
    """

    def __init__(self, arrays: SplitArrays, meta: DatasetMetadata, device: torch.device, resident: bool):
        labels = arrays.labels.astype(np.int32)
        if meta.ignore_label_id is not None:
            labels[arrays.labels == meta.ignore_label_id] = IGNORE_LABEL_ID
        puzzle_of_example = np.repeat(np.arange(arrays.num_puzzles), np.diff(arrays.puzzle_indices.astype(np.int64)))
        example_ids = arrays.puzzle_identifiers[puzzle_of_example].astype(np.int32)
        host = {
            "inputs": torch.from_numpy(arrays.inputs.astype(np.int32)),
            "labels": torch.from_numpy(labels),
            "puzzle_identifiers": torch.from_numpy(example_ids),
        }
        self.device = device
        self.resident = resident or device.type == "cpu"
        if self.resident:
            self.tensors = {k: v.to(device) for k, v in host.items()}
        else:
            self.tensors = {k: v.pin_memory() for k, v in host.items()}
        self.pad = {"inputs": meta.pad_id, "labels": IGNORE_LABEL_ID, "puzzle_identifiers": meta.blank_identifier_id}

    @staticmethod
    def nbytes(arrays: SplitArrays) -> int:
        return arrays.inputs.size * 4 * 2 + arrays.inputs.shape[0] * 4

    def gather(self, host_index: np.ndarray) -> dict[str, torch.Tensor]:
        """Rows at `host_index` as a batch on the device; labels come back as int64."""
        index = torch.from_numpy(np.ascontiguousarray(host_index, dtype=np.int64))
        if self.resident:
            if self.device.type != "cpu":
                index = index.pin_memory().to(self.device, non_blocking=True)
            batch = {k: v.index_select(0, index) for k, v in self.tensors.items()}
        else:
            batch = {k: v.index_select(0, index).pin_memory().to(self.device, non_blocking=True) for k, v in self.tensors.items()}
        batch["labels"] = batch["labels"].long()
        return batch


def fits_on_device(arrays: SplitArrays, device: torch.device, fraction: float = 0.25) -> bool:
    if device.type != "cuda":
        return True
    free, _ = torch.cuda.mem_get_info(device)
    return DeviceArrays.nbytes(arrays) <= fraction * free


class TrainSampler:
    """Endless, resumable stream of global batches of example indices (reference semantics).

    The stream is the concatenation of epochs 0, 1, 2, ...; epoch e's order depends only on
    (seed, e). The position (epoch, offset) is the whole state.
    """

    def __init__(self, arrays: SplitArrays, global_batch_size: int, seed: int, rank: int = 0, world_size: int = 1):
        if global_batch_size % world_size:
            raise ValueError(f"global_batch_size={global_batch_size} is not divisible by world size {world_size}")
        self.arrays = arrays
        self.global_batch_size = global_batch_size
        self.local_batch_size = global_batch_size // world_size
        self.seed = seed
        self.rank = rank
        self.epoch = 0
        self.offset = 0
        self._cached_epoch = -1
        self._cached_order = np.empty(0, dtype=np.int64)
        self._group_sizes = np.diff(arrays.group_indices.astype(np.int64))
        self._puzzle_sizes = np.diff(arrays.puzzle_indices.astype(np.int64))

    def epoch_order(self, epoch: int) -> np.ndarray:
        """Flat example indices of one epoch: every group once, one random puzzle each."""
        if epoch != self._cached_epoch:
            rng = np.random.default_rng([self.seed, epoch])
            groups = rng.permutation(self.arrays.num_groups)
            starts = self.arrays.group_indices[groups].astype(np.int64)
            puzzles = starts + np.floor(rng.random(groups.shape[0]) * self._group_sizes[groups]).astype(np.int64)
            first = self.arrays.puzzle_indices[puzzles].astype(np.int64)
            sizes = self._puzzle_sizes[puzzles]
            if np.all(sizes == 1):
                order = first
            else:  # expand each puzzle into its examples
                order = np.repeat(first - np.cumsum(sizes) + sizes, sizes) + np.arange(sizes.sum())
            self._cached_epoch, self._cached_order = epoch, order
        return self._cached_order

    @property
    def batches_per_epoch(self) -> float:
        return len(self.epoch_order(self.epoch)) / self.global_batch_size

    def next_indices(self) -> np.ndarray:
        """This rank's (local_batch_size,) example indices for the next global batch."""
        pieces, need = [], self.global_batch_size
        while need:
            order = self.epoch_order(self.epoch)
            take = order[self.offset : self.offset + need]
            pieces.append(take)
            need -= take.shape[0]
            self.offset += take.shape[0]
            if self.offset >= order.shape[0]:
                self.epoch, self.offset = self.epoch + 1, 0
        batch = np.concatenate(pieces) if len(pieces) > 1 else pieces[0]
        return batch[self.rank * self.local_batch_size : (self.rank + 1) * self.local_batch_size]

    def state_dict(self) -> dict:
        return {"epoch": self.epoch, "offset": self.offset, "seed": self.seed}

    def load_state_dict(self, state: dict) -> None:
        self.epoch, self.offset, self.seed = int(state["epoch"]), int(state["offset"]), int(state["seed"])
        self._cached_epoch = -1  # the cached order may be another seed's


def eval_batches(
    data: DeviceArrays, num_examples: int, batch_size: int, rank: int = 0, world_size: int = 1
) -> Iterator[tuple[dict[str, torch.Tensor], int]]:
    """Every example of a split once, in order, as (batch, num_valid); the last batch is padded
    to full size (padding rows carry no labels) so compiled shapes stay fixed. With several
    ranks each takes a contiguous shard, and every rank yields the same number of batches (a
    rank whose shard is short or empty, e.g. 1 example on 2 ranks, yields batches of padding
    only, num_valid 0): the ranks then meet in every per-batch collective and in the gather."""
    per_rank = -(-num_examples // world_size)
    lo, hi = rank * per_rank, min(num_examples, (rank + 1) * per_rank)
    for start in range(lo, lo + per_rank, batch_size):
        stop = min(start + batch_size, hi)
        valid = max(0, stop - start)
        index = np.arange(start, start + valid)
        if valid < batch_size:
            index = np.concatenate([index, np.full(batch_size - valid, index[0] if valid else 0)])
        batch = data.gather(index)
        if valid < batch_size:
            for key, pad in data.pad.items():
                batch[key][valid:] = pad
        yield batch, valid
