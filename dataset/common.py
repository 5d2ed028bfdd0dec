"""The on-disk puzzle dataset format (compatible with the TRM/HRM reference) and its validation.

A dataset directory holds `train/` and `test/` (and, when built with `--val-size N`, `val/`:
a held-out split like test/, for choosing a recipe), each with `dataset.json` and, per set name,
`<set>__{inputs,labels,puzzle_identifiers,puzzle_indices,group_indices}.npy`, plus
`identifiers.json` at the top. Everything here is plain numpy so builders, the loader and
scripts share one definition of "valid".
"""

from __future__ import annotations

import json
import os
import re
import stat
import sys
import threading
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

import numpy as np
import pydantic
from tqdm import tqdm

from core.errors import DatasetError, InputError, one_line
from core.paths import broken_link_on, broken_link_text

ARRAY_FIELDS = ("inputs", "labels", "puzzle_identifiers", "puzzle_indices", "group_indices")
SPLITS = ("train", "test")  # the splits every dataset has
VAL_SPLIT = "val"  # the optional validation split (a builder's --val-size)
EVAL_SPLITS = ("test", VAL_SPLIT)  # what a run may evaluate on (data.eval_split)


# Upper bound on vocab_size and num_puzzle_identifiers: each is a row count of an embedding
# table, so a corrupt claim would otherwise surface as an allocation failure deep in the model.
MAX_TABLE_ROWS = 1 << 24
# Builder arguments: instances per split and augmented copies per instance (a build of 10^12
# instances would run for days before failing); generous beside the published setups (Sudoku:
# 1000 puzzles x 1000 copies).
MAX_INSTANCES = 1 << 24
MAX_AUGMENTATIONS = 1 << 16
# Builders stamp this into both splits' dataset.json (exports into config.json); `--overwrite`
# replaces only directories that carry it (see dataset/replace_guard.py).
MARKER_FIELD, MARKER = "written_by", "tinyrecursion"
# Builder options that do not change what is written; every other one is recorded in
# dataset.json as `build_args`, so that a dataset can be matched against a config.
NOT_RECORDED = {"output_dir", "overwrite", "progress", "workers"}


def build_record(cfg: pydantic.BaseModel) -> dict:
    """A builder config's arguments as dataset.json records them (JSON values, normalised).
    `val_size` is among them (0 without val/); `write_dataset` records it in val/dataset.json
    only, so that train/ and test/ are the same files with and without a validation split."""
    return cfg.model_dump(mode="json", exclude=NOT_RECORDED)


# ---------------------------------------------------------------------------------------------
# The validation split. A builder gets it by (1) a `val_size: int = val_size_field()` field,
# (2) drawing val instances like test ones (not augmented) from `val_rng(seed)`, a seed
# stream of its own, after train and test, skipping any instance equal to a train or test
# one (so train/ and test/ do not change), and (3) passing `"val": (meta, arrays)` to
# `writer.write_dataset` when val_size > 0.

VAL_SIZE_ARG = "val_size"
# SeedSequence spawn key of the val stream: far above the small child indices builders use
# (`SeedSequence(seed).spawn(k)`, `spawn_key=(split, ...)`), so it collides with none of them.
VAL_STREAM_KEY = 0x76616C  # "val"


def val_size_field(drawn: str = "drawn like test/") -> Any:
    """The `val_size` field every builder config declares (the same bounds and help; `drawn`
    says from what, for a builder whose val/ is not drawn like test/)."""
    return pydantic.Field(0, ge=0, le=MAX_INSTANCES, description=f"validation instances (val/: held out like test/, "
                          f"{drawn} from a seed stream of their own, none equal to a train or test instance; "
                          "not augmented). 0 = no val/; train/ and test/ are the same files either way")


def val_seed_sequence(seed: int) -> np.random.SeedSequence:
    """The val split's own seed stream (independent of every stream train/ and test/ use)."""
    return np.random.SeedSequence(seed, spawn_key=(VAL_STREAM_KEY,))


def val_rng(seed: int) -> np.random.Generator:
    return np.random.default_rng(val_seed_sequence(seed))


def recorded_build_args(data_path: Path | str) -> Optional[dict]:
    """The builder arguments a dataset records: train/dataset.json's `build_args` plus
    `val_size` from val/dataset.json (0 without val/); None when train/ records none."""
    data_path = Path(data_path)
    recorded = read_metadata(data_path / "train" / "dataset.json").model_dump()
    args = recorded.get("build_args")
    if not isinstance(args, dict):
        return None
    return {**args, VAL_SIZE_ARG: recorded_val_size(data_path)}


def recorded_val_size(data_path: Path | str) -> int:
    """The val_size a dataset was built with: 0 without val/ (val/dataset.json records it)."""
    val_meta = Path(data_path) / VAL_SPLIT / "dataset.json"
    if not val_meta.is_file():
        return 0
    args = read_metadata(val_meta).model_dump().get("build_args")
    size = args.get(VAL_SIZE_ARG) if isinstance(args, dict) else None
    if not isinstance(size, int) or isinstance(size, bool) or size < 1:
        raise DatasetError(f"{val_meta}: build_args.{VAL_SIZE_ARG} is {size!r}, expected a positive integer")
    return size
SET_NAME = r"[A-Za-z0-9][A-Za-z0-9_.-]*"


class DatasetMetadata(pydantic.BaseModel):
    """`dataset.json`. Extra fields (task name, n, base, ...) are kept and ignored by the loader.
    Numbers must be finite and within their ranges; the special ids must exist."""

    model_config = pydantic.ConfigDict(extra="allow", allow_inf_nan=False)

    pad_id: int = pydantic.Field(ge=0)
    ignore_label_id: Optional[int]
    blank_identifier_id: int = pydantic.Field(ge=0)
    vocab_size: int = pydantic.Field(ge=1, le=MAX_TABLE_ROWS)
    seq_len: int = pydantic.Field(ge=1)
    num_puzzle_identifiers: int = pydantic.Field(ge=1, le=MAX_TABLE_ROWS)
    total_groups: int = pydantic.Field(ge=1)
    mean_puzzle_examples: float = pydantic.Field(gt=0)
    total_puzzles: int = pydantic.Field(ge=1)
    sets: list[pydantic.constr(pattern=f"^{SET_NAME}$")] = pydantic.Field(min_length=1)  # type: ignore[valid-type]

    @pydantic.model_validator(mode="after")
    def _special_ids(self) -> "DatasetMetadata":
        if self.pad_id >= self.vocab_size:
            raise ValueError(f"pad_id={self.pad_id} is not a token id (vocab_size={self.vocab_size})")
        if self.blank_identifier_id >= self.num_puzzle_identifiers:
            raise ValueError(f"blank_identifier_id={self.blank_identifier_id} is not a puzzle identifier "
                             f"(num_puzzle_identifiers={self.num_puzzle_identifiers})")
        if len(set(self.sets)) != len(self.sets):
            raise ValueError(f"sets={self.sets} names a set twice")
        return self

    _split_dir: Optional[Path] = pydantic.PrivateAttr(None)  # set by read_metadata

    @property
    def split_dir(self) -> Optional[Path]:
        """The directory this metadata was read from (None when it was made in memory)."""
        return self._split_dir


@dataclass
class SplitArrays:
    """One set of one split, validated. Shapes: inputs/labels (E, L); identifiers (P,);
    puzzle_indices (P+1,); group_indices (G+1,)."""

    inputs: np.ndarray
    labels: np.ndarray
    puzzle_identifiers: np.ndarray
    puzzle_indices: np.ndarray
    group_indices: np.ndarray

    @property
    def num_examples(self) -> int:
        return int(self.inputs.shape[0])

    @property
    def num_puzzles(self) -> int:
        return int(self.puzzle_identifiers.shape[0])

    @property
    def num_groups(self) -> int:
        return int(self.group_indices.shape[0] - 1)


def token_dtype(vocab_size: int) -> np.dtype:
    """Smallest integer dtype for tokens (the reference stores small vocabularies as uint8)."""
    return np.dtype(np.uint8) if vocab_size <= 256 else np.dtype(np.int32)


def build_indices(puzzles_per_group: list[int] | np.ndarray, examples_per_puzzle: int = 1):
    """Index arrays for groups of puzzles with a fixed number of examples each."""
    per_group = np.asarray(puzzles_per_group, dtype=np.int64)
    group_indices = np.concatenate([[0], np.cumsum(per_group)]).astype(np.int32)
    num_puzzles = int(group_indices[-1])
    puzzle_indices = (np.arange(num_puzzles + 1, dtype=np.int64) * examples_per_puzzle).astype(np.int32)
    return puzzle_indices, group_indices


# ---------------------------------------------------------------------------------------------
# Writing


def write_split(split_dir: Path, metadata: DatasetMetadata, sets: dict[str, SplitArrays],
                example_arrays: Optional[dict[str, np.ndarray]] = None, build_args: Optional[dict] = None) -> None:
    """`example_arrays`: optional per-example arrays of a single set, `<set>__<field>.npy`
    (read back with `read_example_array`; the reference's loader ignores them)."""
    split_dir.mkdir(parents=True, exist_ok=True)
    for set_name, arrays in sets.items():
        for field in ARRAY_FIELDS:
            np.save(split_dir / f"{set_name}__{field}.npy", getattr(arrays, field), allow_pickle=False)
    if example_arrays:
        (set_name,) = sets
        for field, values in example_arrays.items():
            if field in ARRAY_FIELDS or values.shape != (arrays.num_examples,):
                raise ValueError(f"example array {field!r}: shape {values.shape}, expected ({arrays.num_examples},)")
            np.save(split_dir / f"{set_name}__{field}.npy", values, allow_pickle=False)
    record = {**metadata.model_dump(), MARKER_FIELD: MARKER, **({"build_args": build_args} if build_args else {})}
    (split_dir / "dataset.json").write_text(json.dumps(record, indent=2, sort_keys=True) + "\n")


# What a builder writes: anything else in a directory means it is not (only) a built dataset.
TOP_LEVEL_FILES = ("identifiers.json", "vocab.json")
SPLIT_FILE = re.compile(rf"^(dataset\.json|{SET_NAME}__[a-z_]+\.npy)$")
LEGACY_TASKS = ("lsa", "sudoku", "arith")  # datasets this project wrote before the marker


def check_memory(what: str, nbytes: int) -> None:
    """Refuse a build whose arrays alone would exceed this machine's memory (a one-line error
    naming the flags instead of an allocation failure or a swap storm)."""
    try:
        total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):  # not POSIX: no bound to check against
        return
    if nbytes > total:
        raise DatasetError(f"{what}: the arrays would need {nbytes / 2**30:.1f} GiB, more than this machine's "
                           f"{total / 2**30:.1f} GiB of memory")


def open_lock_file(path: Path) -> int:
    """A regular file to flock, opened without following a symlink or blocking on a FIFO."""
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_NONBLOCK, 0o644)
    except OSError as exc:
        raise InputError(f"{path}: cannot open this lock file ({exc.strerror or exc})") from exc
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise InputError(f"{path}: is not a regular file (a lock file is expected there)")
    return fd


@contextmanager
def build_lock(data_path: Path):
    """Hold an exclusive lock while building `data_path`, so that concurrent runs wait for one
    builder instead of racing it. The lock is a file beside the dataset (`.<name>.lock`)."""
    import fcntl

    data_path = Path(data_path)
    try:
        data_path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise DatasetError(f"data.path={data_path}: cannot create its parent directory ({exc.strerror or exc})") from exc
    fd = open_lock_file(data_path.parent / f".{data_path.name}.lock")
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            print(f"waiting for another process to finish building {data_path} ...", file=sys.stderr, flush=True)
            fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # closing drops the lock


_UMASK_LOCK = threading.Lock()


def _umask() -> int:
    """The process's umask. os.umask can only read it by setting it, and a file another thread
    creates in between (a data loader, wandb, the progress bar's monitor) gets the stand-in mask:
    so it is read from /proc/self/status where Linux gives it (4.7 on); elsewhere the stand-in is
    0o077, on the safe side (a file made in that instant is private, never world-writable)."""
    try:
        with open("/proc/self/status", encoding="ascii", errors="replace") as status:
            for line in status:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    with _UMASK_LOCK:
        mask = os.umask(0o077)
        os.umask(mask)
    return mask


def write_identifiers(output_dir: Path, names: list[str]) -> None:
    (output_dir / "identifiers.json").write_text(json.dumps(names) + "\n")


# ---------------------------------------------------------------------------------------------
# Reading and validation


def read_metadata(path: Path) -> DatasetMetadata:
    if not path.is_file():
        raise DatasetError(f"{path}: file not found")
    try:
        raw = json.loads(path.read_text())
    except (ValueError, RecursionError) as exc:  # bad JSON or UTF-8, over-long integers, absurd nesting
        raise DatasetError(f"{path}: not valid JSON ({str(exc)[:200]})") from exc
    try:
        meta = DatasetMetadata.model_validate(raw)
    except pydantic.ValidationError as exc:
        raise DatasetError(f"{path}: {one_line(exc)}") from exc
    meta._split_dir = path.parent
    return meta


def read_example_array(meta: DatasetMetadata, field: str, num_examples: int, first: bool = False) -> Optional[np.ndarray]:
    """An optional per-example integer array stored beside a split's standard ones
    (`<set>__<field>.npy` for every set, concatenated in set order as the loader concatenates
    the sets), or None when the metadata was not read from disk or a set lacks the file.
    `first`: the caller scored only the split's first `num_examples` examples
    (train.eval_max_examples, ttc_sweep.py --max-examples): their entries are returned."""
    if meta.split_dir is None:
        return None
    files = [meta.split_dir / f"{name}__{field}.npy" for name in meta.sets]
    if not all(f.is_file() for f in files):
        return None
    parts = [_load_array(f) for f in files]
    for f, arr in zip(files, parts):
        if arr.ndim != 1 or not np.issubdtype(arr.dtype, np.integer):
            raise DatasetError(f"{f}: expected a 1-D integer array, got shape {arr.shape} dtype {arr.dtype}")
    values = np.concatenate(parts)
    if first and values.shape[0] > num_examples:
        return values[:num_examples]
    if values.shape[0] != num_examples:
        raise DatasetError(f"{files[0] if len(files) == 1 else files}: {values.shape[0]} entries for {num_examples} examples")
    return values


def _load_array(path: Path) -> np.ndarray:
    if not path.is_file():
        raise DatasetError(f"{path}: file not found")
    try:
        return np.load(path, allow_pickle=False)
    except (ValueError, OSError, EOFError, MemoryError) as exc:
        raise DatasetError(f"{path}: cannot read .npy ({exc})") from exc


def _check_index(name: Path, arr: np.ndarray, end: int, what: str) -> None:
    if arr.ndim != 1 or arr.shape[0] < 1:
        raise DatasetError(f"{name}: expected a 1-D array with at least one entry, got shape {arr.shape}")
    if arr[0] != 0 or arr[-1] != end:
        raise DatasetError(f"{name}: must start at 0 and end at the number of {what} ({end}); got {arr[0]}..{arr[-1]}")
    if arr.shape[0] > 1 and np.any(np.diff(arr.astype(np.int64)) <= 0):
        raise DatasetError(f"{name}: indices must be strictly increasing")


def validate_set(split_dir: Path, set_name: str, meta: DatasetMetadata) -> SplitArrays:
    """Load one set's arrays and check shapes, dtypes, token ranges and index monotonicity."""
    files = {f: split_dir / f"{set_name}__{f}.npy" for f in ARRAY_FIELDS}
    arrays = {f: _load_array(p) for f, p in files.items()}
    for field, arr in arrays.items():
        if not np.issubdtype(arr.dtype, np.integer):
            raise DatasetError(f"{files[field]}: dtype {arr.dtype} is not an integer type")

    inputs, labels = arrays["inputs"], arrays["labels"]
    for field, arr in (("inputs", inputs), ("labels", labels)):
        if arr.ndim != 2 or arr.shape[1] != meta.seq_len:
            raise DatasetError(f"{files[field]}: expected shape (examples, seq_len={meta.seq_len}), got {arr.shape}")
    if labels.shape[0] != inputs.shape[0]:
        raise DatasetError(f"{files['labels']}: {labels.shape[0]} rows but inputs has {inputs.shape[0]}")
    if inputs.shape[0] == 0:
        raise DatasetError(f"{files['inputs']}: dataset is empty (0 examples)")
    if inputs.min() < 0 or inputs.max() >= meta.vocab_size:
        raise DatasetError(
            f"{files['inputs']}: tokens must lie in [0, vocab_size={meta.vocab_size}), got {inputs.min()}..{inputs.max()}"
        )
    scored = labels if meta.ignore_label_id is None else labels[labels != meta.ignore_label_id]
    if scored.size and (scored.min() < 0 or scored.max() >= meta.vocab_size):
        raise DatasetError(
            f"{files['labels']}: labels must lie in [0, vocab_size={meta.vocab_size}), got {scored.min()}..{scored.max()}"
        )

    ids, puzzle_indices, group_indices = arrays["puzzle_identifiers"], arrays["puzzle_indices"], arrays["group_indices"]
    if ids.ndim != 1:
        raise DatasetError(f"{files['puzzle_identifiers']}: expected a 1-D array, got shape {ids.shape}")
    _check_index(files["puzzle_indices"], puzzle_indices, inputs.shape[0], "examples")
    if puzzle_indices.shape[0] != ids.shape[0] + 1:
        raise DatasetError(
            f"{files['puzzle_indices']}: has {puzzle_indices.shape[0]} entries, expected puzzles+1 = {ids.shape[0] + 1}"
        )
    _check_index(files["group_indices"], group_indices, ids.shape[0], "puzzles")
    if ids.size and (ids.min() < 0 or ids.max() >= meta.num_puzzle_identifiers):
        raise DatasetError(
            f"{files['puzzle_identifiers']}: identifiers must lie in [0, num_puzzle_identifiers="
            f"{meta.num_puzzle_identifiers}), got {ids.min()}..{ids.max()}"
        )
    return SplitArrays(**arrays)


def load_split(data_path: Path | str, split: str) -> tuple[DatasetMetadata, dict[str, SplitArrays]]:
    data_path = Path(data_path)
    if not data_path.is_dir():
        link = broken_link_on(data_path)  # a link that leads nowhere: name it, not just "not found"
        raise DatasetError(f"{data_path}: dataset directory not found"
                           + (f" ({broken_link_text(link)})" if link is not None else ""))
    split_dir = data_path / split
    meta = read_metadata(split_dir / "dataset.json")
    sets = {name: validate_set(split_dir, name, meta) for name in meta.sets}
    groups = sum(s.num_groups for s in sets.values())
    if groups != meta.total_groups:
        raise DatasetError(f"{split_dir / 'dataset.json'}: total_groups={meta.total_groups} but the arrays hold {groups} groups")
    return meta, sets


# Fields that must agree between train and test for one model to serve both.
SHARED_FIELDS = ("pad_id", "ignore_label_id", "blank_identifier_id", "vocab_size", "seq_len", "num_puzzle_identifiers")


def check_splits_agree(data_path: Path, train: DatasetMetadata, other: DatasetMetadata, split: str = "test") -> None:
    for field in (*SHARED_FIELDS, "task"):  # a val/ of another task would be scored by this one's evaluator
        a, b = getattr(train, field, None), getattr(other, field, None)
        if a != b:
            raise DatasetError(f"{data_path}: train/dataset.json and {split}/dataset.json disagree on '{field}' ({a} vs {b})")


def dataset_exists(data_path: Path | str) -> bool:
    data_path = Path(data_path)
    return all((data_path / split / "dataset.json").is_file() for split in SPLITS)


ETA_AFTER = 0.05  # the share of a build done before its progress bar shows an ETA


class ProgressBar(tqdm):
    """A builder's progress bar with an honest ETA: the average rate over everything done so far
    (smoothing=0, not tqdm's moving average of the last few items), and no ETA at all until
    ETA_AFTER of the total is done. The first items (starting worker processes, the first
    rounds of a generator that schedules by hit rates) once made the Sudoku builder's ETA
    read 26 h for a 6-minute build."""

    def __init__(self, *args: Any, **kwargs: Any):
        kwargs.setdefault("smoothing", 0)
        super().__init__(*args, **kwargs)

    @property
    def format_dict(self) -> dict[str, Any]:
        values = super().format_dict
        total = values.get("total")
        if total and values["n"] < ETA_AFTER * total:
            values["bar_format"] = ("{l_bar}{bar}| {n_fmt}/{total_fmt} [{elapsed}, ETA once "
                                    f"{ETA_AFTER:.0%} is done" + "{postfix}]")
        return values


# The public puzzle CSVs (sudoku-extreme, Maze-Hard): a header naming these columns, any order.
PUZZLE_CSV_COLUMNS = ("source", "question", "answer", "rating")


def puzzle_csv_columns(reader, fail) -> tuple[int, int, int, int]:
    """Read a puzzle CSV's header row from `reader` (a csv.reader): the indices of its question,
    answer and rating columns and its number of fields. `fail(line, message)` makes the error
    (naming the file) raised for an empty file or a missing column."""
    header = next(reader, None)
    if header is None:
        raise fail(1, "file is empty (expected a header row: source,question,answer,rating)")
    columns = [name.strip() for name in header]
    missing = [name for name in PUZZLE_CSV_COLUMNS if name not in columns]
    if missing:
        raise fail(1, f"header lacks column(s) {missing} (expected source,question,answer,rating)")
    q_col, a_col, r_col = (columns.index(name) for name in ("question", "answer", "rating"))
    return q_col, a_col, r_col, len(columns)
