"""Reading a file that may come from anywhere (a run's files, checkpoint metadata, an export):
only a regular file, opened without blocking, at most a bounded number of bytes, JSON decoded
with every failure as one line naming the file."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path
from typing import Any

from core.errors import InputError

MAX_JSON_BYTES = 16 << 20  # config.json, run.json, meta.json


def open_regular(path: Path):
    """A binary file object for a regular file; anything else (a directory, a FIFO, a device,
    an unreadable file) is an InputError naming it. Opening never blocks (O_NONBLOCK)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    except OSError as exc:
        raise InputError(f"{path}: cannot read ({exc.strerror or exc})") from exc
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise InputError(f"{path}: is not a regular file")
    return os.fdopen(fd, "rb")


def read_limited(path: Path, limit: int) -> bytes:
    """A regular file's bytes, refused (InputError) beyond `limit` bytes."""
    with open_regular(path) as f:
        try:
            data = f.read(limit + 1)
        except OSError as exc:
            raise InputError(f"{path}: cannot read ({exc.strerror or exc})") from exc
    if len(data) > limit:
        raise InputError(f"{path}: larger than {limit} bytes; not a file this project writes")
    return data


def decode_json(data: bytes, where: str, problem: str = "cannot read JSON") -> Any:
    """JSON from bytes; bad UTF-8, bad JSON, over-long integers, absurd nesting -> InputError."""
    try:
        return json.loads(data.decode("utf-8"))
    except UnicodeDecodeError as exc:
        raise InputError(f"{where}: not UTF-8 text ({exc.reason} at byte {exc.start})") from exc
    except (ValueError, RecursionError) as exc:
        raise InputError(f"{where}: {problem} ({str(exc)[:200]})") from exc
