"""Writing a run's files by replacing them, never by writing into them.

A run directory may share its files with a backup made by `cp -al` (hard links: one file, two
names). Opening such a file for writing would change the backup too, so every write here goes
to a new file created exclusively in the same directory (never an existing file or link), is
fsynced, and then renamed over the target: the backup keeps the old file, the run gets the new
one. Append-only files (metrics.jsonl) are first copied the same way when they have more than
one link (`own_file`), so that appending never reaches a backup.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path
from typing import BinaryIO, Callable, Union

from dataset.common import _umask


def fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def replace_file(path: Path, content: Union[bytes, str, Callable[[BinaryIO], None]]) -> None:
    """Write `content` (bytes, text, or a function that writes to a binary file) as `path`:
    into a fresh temporary file beside it, then renamed over it. OSError propagates; the
    temporary file is removed then."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.tmp-", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            if callable(content):
                content(f)
            else:
                f.write(content.encode() if isinstance(content, str) else content)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes it private; the run's files are not
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    fsync_dir(path.parent)


def own_file(path: Path) -> bool:
    """Before appending to `path`: a regular file with more than one hard link is replaced by
    a copy of itself, so the other names keep their content. Returns whether it copied."""
    path = Path(path)
    try:
        info = os.lstat(path)
    except FileNotFoundError:
        return False
    if not (info.st_nlink > 1 and os.path.isfile(path) and not os.path.islink(path)):
        return False
    with open(path, "rb") as src:
        replace_file(path, lambda dst: shutil.copyfileobj(src, dst))
    return True
