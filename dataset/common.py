"""The on-disk puzzle dataset format (compatible with the TRM/HRM reference) and its validation.

A dataset directory holds `train/` and `test/`, each with `dataset.json` and, per set name,
`<set>__{inputs,labels,puzzle_identifiers,puzzle_indices,group_indices}.npy`, plus
`identifiers.json` at the top. Everything here is plain numpy so builders, the loader and
scripts share one definition of "valid".
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Optional

import numpy as np
import pydantic
from argdantic import ArgParser

ARRAY_FIELDS = ("inputs", "labels", "puzzle_identifiers", "puzzle_indices", "group_indices")
SPLITS = ("train", "test")


class InputError(ValueError):
    """Bad user input (arguments, config, dataset, checkpoint): the message names the file,
    field or value at fault. Entry points print it as one line and exit with code 2."""


class DatasetError(InputError):
    """A dataset (or a builder's arguments) is invalid."""


class DatasetMetadata(pydantic.BaseModel):
    """`dataset.json`. Extra fields (task name, n, base, ...) are kept and ignored by the loader."""

    model_config = pydantic.ConfigDict(extra="allow")

    pad_id: int
    ignore_label_id: Optional[int]
    blank_identifier_id: int
    vocab_size: int
    seq_len: int
    num_puzzle_identifiers: int
    total_groups: int
    mean_puzzle_examples: float
    total_puzzles: int
    sets: list[str]
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
                example_arrays: Optional[dict[str, np.ndarray]] = None) -> None:
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
    (split_dir / "dataset.json").write_text(json.dumps(metadata.model_dump(), indent=2, sort_keys=True) + "\n")


def check_output_dir(output_dir: Path, overwrite: bool) -> None:
    """Refuse to write into a non-empty directory unless asked to overwrite it."""
    if output_dir.exists() and not output_dir.is_dir():
        raise DatasetError(f"--output-dir {output_dir}: exists and is not a directory")
    if output_dir.is_dir() and any(output_dir.iterdir()) and not overwrite:
        raise DatasetError(f"--output-dir {output_dir}: directory is not empty (pass --overwrite to replace it)")


def write_dataset_atomically(output_dir: Path, overwrite: bool, write: Callable[[Path], None]) -> None:
    """Run `write(tmp_dir)` and move the result into place only once it is complete.

    The old directory (with --overwrite) survives until the new one is fully written, so an
    interrupted build never leaves a half-written dataset behind at `output_dir`.
    """
    output_dir = Path(output_dir)
    check_output_dir(output_dir, overwrite)
    output_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp_dir = Path(tempfile.mkdtemp(prefix=f".{output_dir.name}.tmp-", dir=output_dir.parent))
    try:
        os.chmod(tmp_dir, 0o777 & ~_umask())  # mkdtemp makes it 0700
        write(tmp_dir)
        if output_dir.exists():
            old_dir = Path(tempfile.mkdtemp(prefix=f".{output_dir.name}.old-", dir=output_dir.parent))
            os.replace(output_dir, old_dir / "old")
            os.replace(tmp_dir, output_dir)
            shutil.rmtree(old_dir)
        else:
            os.replace(tmp_dir, output_dir)
    finally:
        if tmp_dir.exists():
            shutil.rmtree(tmp_dir, ignore_errors=True)


def write_dataset(
    output_dir: Path,
    overwrite: bool,
    splits: dict[str, tuple[DatasetMetadata, SplitArrays]],
    extra_files: Optional[dict[str, str]] = None,
    example_arrays: Optional[dict[str, dict[str, np.ndarray]]] = None,
) -> Path:
    """Write a whole dataset atomically: each split's arrays and dataset.json (set "all"),
    identifiers.json, any extra top-level text files (e.g. vocab.json), and per split any
    extra per-example arrays (`example_arrays[split][field]` -> `all__<field>.npy`)."""

    def write(tmp: Path) -> None:
        for split, (meta, arrays) in splits.items():
            write_split(tmp / split, meta, {"all": arrays}, (example_arrays or {}).get(split))
        write_identifiers(tmp, ["<blank>"])
        for name, text in (extra_files or {}).items():
            (tmp / name).write_text(text)

    write_dataset_atomically(Path(output_dir), overwrite, write)
    return Path(output_dir)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def write_identifiers(output_dir: Path, names: list[str]) -> None:
    (output_dir / "identifiers.json").write_text(json.dumps(names) + "\n")


class CLI(ArgParser):
    """argdantic's parser, but validation errors propagate (to `run_cli`) instead of being
    printed under a usage block, and argparse's own errors print as one line."""

    def __call__(self, args: Optional[list[str]] = None) -> Any:
        if self.entrypoint is None:
            self.entrypoint = self._build_entrypoint()
            self.entrypoint.error = _one_line_parser_error
        parsed = self.entrypoint.parse_args(args)
        return parsed.__func__(parsed)


def _one_line_parser_error(message: str) -> None:
    print(f"error: {message} (see --help)", file=sys.stderr)
    sys.exit(2)


def run_cli(main: Callable[[], None]) -> None:
    """Run a command-line entry point: bad input -> one line on stderr and exit 2, no traceback."""
    try:
        main()
    except (InputError, pydantic.ValidationError) as exc:
        print(f"error: {one_line(exc, flags=True)}", file=sys.stderr)
        sys.exit(2)


def one_line(exc: Exception, flags: bool = False) -> str:
    """A one-line message for our error types; pydantic errors name the field (as --flag-name
    when `flags`) and the offending value."""
    if isinstance(exc, pydantic.ValidationError):
        parts = []
        for err in exc.errors():
            value = err.get("input")
            shown = "" if isinstance(value, (dict, list)) or err["type"] == "value_error" else f" (got {value!r})"
            msg = err["msg"].removeprefix("Value error, ")
            if not err["loc"]:  # a whole-model check: its message names the fields itself
                parts.append(f"{msg}{shown}")
                continue
            loc = ".".join(str(x) for x in err["loc"])
            if flags:
                loc = "--" + loc.replace("_", "-")
            parts.append(f"{loc}: {msg}{shown}")
        return "; ".join(parts)
    return str(exc).replace("\n", " ")


# ---------------------------------------------------------------------------------------------
# Reading and validation


def read_metadata(path: Path) -> DatasetMetadata:
    if not path.is_file():
        raise DatasetError(f"{path}: file not found")
    try:
        raw = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise DatasetError(f"{path}: not valid JSON ({exc})") from exc
    try:
        meta = DatasetMetadata.model_validate(raw)
    except pydantic.ValidationError as exc:
        raise DatasetError(f"{path}: {one_line(exc)}") from exc
    meta._split_dir = path.parent
    return meta


def read_example_array(meta: DatasetMetadata, field: str, num_examples: int) -> Optional[np.ndarray]:
    """An optional per-example integer array stored beside a split's standard ones
    (`<set>__<field>.npy` for every set, concatenated in set order as the loader concatenates
    the sets), or None when the metadata was not read from disk or a set lacks the file."""
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
    if values.shape[0] != num_examples:
        raise DatasetError(f"{files[0] if len(files) == 1 else files}: {values.shape[0]} entries for {num_examples} examples")
    return values


def _load_array(path: Path) -> np.ndarray:
    if not path.is_file():
        raise DatasetError(f"{path}: file not found")
    try:
        return np.load(path, allow_pickle=False)
    except (ValueError, OSError, EOFError) as exc:
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
        raise DatasetError(f"{data_path}: dataset directory not found")
    split_dir = data_path / split
    meta = read_metadata(split_dir / "dataset.json")
    if not meta.sets:
        raise DatasetError(f"{split_dir / 'dataset.json'}: field 'sets' is empty")
    for field in ("vocab_size", "seq_len", "num_puzzle_identifiers"):
        if getattr(meta, field) < 1:
            raise DatasetError(f"{split_dir / 'dataset.json'}: field '{field}' must be >= 1, got {getattr(meta, field)}")
    sets = {name: validate_set(split_dir, name, meta) for name in meta.sets}
    groups = sum(s.num_groups for s in sets.values())
    if groups != meta.total_groups:
        raise DatasetError(f"{split_dir / 'dataset.json'}: total_groups={meta.total_groups} but the arrays hold {groups} groups")
    return meta, sets


# Fields that must agree between train and test for one model to serve both.
SHARED_FIELDS = ("pad_id", "ignore_label_id", "blank_identifier_id", "vocab_size", "seq_len", "num_puzzle_identifiers")


def check_splits_agree(data_path: Path, train: DatasetMetadata, test: DatasetMetadata) -> None:
    for field in SHARED_FIELDS:
        a, b = getattr(train, field), getattr(test, field)
        if a != b:
            raise DatasetError(f"{data_path}: train/dataset.json and test/dataset.json disagree on '{field}' ({a} vs {b})")


def dataset_exists(data_path: Path | str) -> bool:
    data_path = Path(data_path)
    return all((data_path / split / "dataset.json").is_file() for split in SPLITS)
