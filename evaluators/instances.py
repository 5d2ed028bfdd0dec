"""Reading a user's instances (scripts/solve.py, through each task's `Task.parse`) and checking
encoding facts: helpers every task may use. Input is bytes already read with a size limit; every
error is an InputError naming `where`, the line and the column."""

from __future__ import annotations

import io
import math
import re
from typing import Any

import numpy as np

from core.errors import InputError

MAX_NPY_HEADER = 10_000  # numpy's own default limit
NUMBER = re.compile(r"[+-]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?")


def is_integer(value: Any) -> bool:
    """An int that is not a bool (JSON facts: `true` is no size)."""
    return isinstance(value, int) and not isinstance(value, bool)


def content_lines(text: str) -> list[tuple[int, str]]:
    """(line number, stripped text) of the lines that are neither blank nor comments."""
    return [(i, line.strip()) for i, line in enumerate(text.splitlines(), 1)
            if line.strip() and not line.lstrip().startswith("#")]


def csv_row(line: str, number: int, where: str) -> list[float]:
    """One CSV row: comma-separated fields (spaces around them allowed), or whitespace-separated
    ones when the line has no comma. An empty field (`1,,2`) is an error naming line and column."""
    text = line.strip()
    fields = text.split(",") if "," in text else text.split()
    values = []
    for column, field in enumerate(fields, 1):
        field = field.strip()
        if not field:
            raise InputError(f"{where}: line {number}, column {column}: empty field")
        if not NUMBER.fullmatch(field):
            raise InputError(f"{where}: line {number}, column {column}: {field[:20]!r} is not a number")
        values.append(float(field))
    return values


def read_npy(raw: bytes, where: str) -> np.ndarray:
    """A .npy of integers or real numbers, its header checked before anything is allocated: the
    data must be exactly what the header claims (no huge shape over a small file)."""
    f = io.BytesIO(raw)
    try:
        version = np.lib.format.read_magic(f)
        if version == (1, 0):
            shape, fortran_order, dtype = np.lib.format.read_array_header_1_0(f, max_header_size=MAX_NPY_HEADER)
        elif version == (2, 0):
            shape, fortran_order, dtype = np.lib.format.read_array_header_2_0(f, max_header_size=MAX_NPY_HEADER)
        else:
            raise InputError(f"{where}: .npy format version {version}; expected 1.0 or 2.0")
    except ValueError as exc:  # a bad magic, a header too long or not a dict
        raise InputError(f"{where}: cannot read .npy ({str(exc)[:200]})") from exc
    if dtype.kind not in "iuf" or dtype.hasobject:
        raise InputError(f"{where}: .npy of dtype {dtype}; costs are integers")
    claimed = math.prod(shape) * dtype.itemsize
    if claimed != len(raw) - f.tell():
        raise InputError(f"{where}: the .npy header claims shape {shape} ({claimed} bytes of data), "
                         f"the file holds {len(raw) - f.tell()}")
    try:
        return np.load(io.BytesIO(raw), allow_pickle=False)
    except (ValueError, EOFError, OSError) as exc:
        raise InputError(f"{where}: cannot read .npy ({str(exc)[:200]})") from exc
