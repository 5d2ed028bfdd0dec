"""The one guard for everything that deletes or replaces a directory: the dataset builders'
`--overwrite`, `scripts/export.py --overwrite`, and any later one.

A directory is replaced only when it is output this project wrote and marked, of the kind
being written (`DATASET`: only builder files, dataset.json marked `written_by`; `EXPORT`: only
model.safetensors and a marked config.json), and never when it is a place whose loss cannot be
what the user meant: a symbolic link, the current, home or project directory, `/`, an ancestor
of one of these, a mount point, a run directory, or anything inside or holding a run.

`check_target` runs before any work; `write_atomically` writes the new directory beside the
target and checks again right before the swap that the target is still the same directory
(device and inode) and still passes, so what changed meanwhile is never destroyed. The swap is
an atomic exchange where the system has one; elsewhere two renames with the stop signals
deferred at Python level (on every thread), and the next write restores or removes the parked
`.old` that a process killed between the renames left behind. That fallback swap and the recovery
of one target hold one lock (`swap_lock`), so no recovery takes a `.old` that a live swap still needs.
"""

from __future__ import annotations

import contextlib
import glob
import json
import os
import shutil
import signal
import stat
import sys
import tempfile
import threading
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator, Optional

from core.early_signals import STOP_SIGNALS
from core.errors import DatasetError, InputError
from core.paths import refuse_broken_link
from dataset.common import LEGACY_TASKS, MARKER, MARKER_FIELD, SPLITS, SPLIT_FILE, TOP_LEVEL_FILES, VAL_SPLIT, _umask

EXPORT_FORMAT = "tinyrecursion-export"
EXPORT_WEIGHTS, EXPORT_CONFIG = "model.safetensors", "config.json"
# A run directory holds config.json and at least one of these (training/bookkeeping/run.py writes them).
RUN_MARKS = ("checkpoints", "run.json", "metrics.jsonl", ".lock")
PARKED = ".old"  # the old directory's name suffix between the renames of a fallback swap
SWAP_LOCK = ".swap-lock"  # `.<name>.swap-lock` beside a target: held around its fallback swap and recovery


# ---------------------------------------------------------------------------------------------
# What each kind of project output holds


def _regular(path: Path) -> bool:
    return path.is_file() and not path.is_symlink()


def _read_record(path: Path) -> object:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError, RecursionError):
        return None


def dataset_refusal(path: Path) -> Optional[str]:
    """Why `path` is not (only) a dataset this project's builders wrote (None: it is one)."""
    present = SPLITS + ((VAL_SPLIT,) if os.path.lexists(path / VAL_SPLIT) else ())
    for split in present:
        record = _read_record(path / split / "dataset.json")
        if record is None:
            return f"it holds no readable {split}/dataset.json, so it is not a dataset this project built"
        if not isinstance(record, dict) or not (
            record.get(MARKER_FIELD) == MARKER or (record.get("task") in LEGACY_TASKS and "seed" in record)
        ):
            return f"{split}/dataset.json does not say it was written by this project's builders"
    for entry in path.iterdir():
        if entry.name in present and entry.is_dir() and not entry.is_symlink():
            for item in entry.iterdir():
                if not (SPLIT_FILE.match(item.name) and _regular(item)):
                    return f"it holds {item}, which the builders do not write"
        elif not (entry.name in TOP_LEVEL_FILES and _regular(entry)):
            return f"it holds {entry}, which the builders do not write"
    return None


def export_refusal(path: Path) -> Optional[str]:
    """Why `path` is not (only) an export this project wrote (None: it is one). Exports made
    before the marker carry the export format name instead."""
    record = _read_record(path / EXPORT_CONFIG)
    if record is None:
        return f"it holds no readable {EXPORT_CONFIG}, so it is not an export this project wrote"
    if not isinstance(record, dict) or not (
        record.get(MARKER_FIELD) == MARKER or record.get("format") == EXPORT_FORMAT
    ):
        return f"{EXPORT_CONFIG} does not say it was written by this project's export"
    for entry in path.iterdir():
        if not (entry.name in (EXPORT_WEIGHTS, EXPORT_CONFIG) and _regular(entry)):
            return f"it holds {entry}, which an export does not hold"
    return None


@dataclass(frozen=True)
class OutputKind:
    """A kind of directory this project writes and may replace."""

    name: str  # in messages: "dataset", "export"
    flag: str  # the option that names the directory
    owner: str  # who writes it, for "pass --overwrite to replace ..."
    error: type[InputError]
    contents_refusal: Callable[[Path], Optional[str]]


DATASET = OutputKind("dataset", "--output-dir", "a dataset built by this project", DatasetError, dataset_refusal)
EXPORT = OutputKind("export", "--out", "an export written by this project", InputError, export_refusal)


# ---------------------------------------------------------------------------------------------
# Places never replaced


def _protected_places() -> dict[Path, str]:
    """/, home, the current directory, this project's own directory and every ancestor of
    these -> what it is."""
    roots = {"the current directory": Path.cwd(), "this project's directory": Path(__file__).resolve().parents[1],
             "the home directory": Path.home(), "/": Path("/")}
    protected: dict[Path, str] = {}
    for what, root in roots.items():
        root = root.resolve()
        for ancestor in root.parents:
            protected.setdefault(ancestor, f"an ancestor of {what}")
        protected[root] = what if what != "/" else "the root directory"
    return protected


def is_run_dir(path: Path) -> bool:
    return _regular(path / "config.json") and any(os.path.lexists(path / mark) for mark in RUN_MARKS)


def _run_below(path: Path, depth: int = 2) -> Optional[Path]:
    """A run directory among `path`'s subdirectories down to `depth` levels (runs/<project>/<run>)."""
    for entry in sorted(path.iterdir()):
        if entry.is_dir() and not entry.is_symlink():
            if is_run_dir(entry):
                return entry
            found = _run_below(entry, depth - 1) if depth > 1 else None
            if found is not None:
                return found
    return None


def place_refusal(real: Path) -> Optional[str]:
    """Why the directory at the resolved path `real` is no place to replace, whatever it holds."""
    protected = _protected_places().get(real)
    if protected is not None:
        return f"it is {protected}"
    if os.path.ismount(real):
        return "it is a mount point"
    if is_run_dir(real):
        return "it is a run directory"
    for ancestor in real.parents:
        if is_run_dir(ancestor):
            return f"it is inside the run {ancestor}"
    run = _run_below(real)
    if run is not None:
        return f"it holds the run {run}"
    return None


# ---------------------------------------------------------------------------------------------
# The check


@dataclass(frozen=True)
class Checked:
    """A target that passed `check_target`: the path as given, where it resolves, and the
    directory's (st_dev, st_ino) then (None: it did not exist)."""

    path: Path
    real: Path
    identity: Optional[tuple[int, int]]
    kind: OutputKind
    overwrite: bool


def _identity(path: Path) -> Optional[tuple[int, int]]:
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return None
    return st.st_dev, st.st_ino


def check_target(target: Path | str, kind: OutputKind, overwrite: bool, recover: bool = True) -> Checked:
    """Refuse (kind.error, one line naming the flag and the path) to write `target` unless it is
    missing, an empty directory in a safe place, or, with `overwrite`, a directory of `kind`
    that this project wrote, in a safe place. First finishes an interrupted swap (`recover`)."""
    target = Path(target)
    where = f"{kind.flag} {target}"
    refuse_broken_link(target, kind.flag, kind.error)  # realpath would follow it, and mkdir make its target
    if recover and not os.path.islink(target):
        try:
            recover_parked(target, kind)
        except OSError as exc:
            raise kind.error(f"{where}: cannot finish an interrupted replacement there ({exc}); "
                             "nothing else was touched") from exc
    try:
        st = os.lstat(target)
    except FileNotFoundError:
        real = Path(os.path.realpath(target))
        if os.path.lexists(real):  # e.g. missing/.. : the kernel finds nothing, the path names an existing place
            raise kind.error(f"{where}: does not exist, yet it spells {real}, which does; give that path") from None
        return Checked(target, real, None, kind, overwrite)
    except OSError as exc:
        raise kind.error(f"{where}: cannot read it ({exc.strerror or exc})") from exc
    refused = f"{where}: {'--overwrite ' if overwrite else ''}refused"
    if stat.S_ISLNK(st.st_mode):
        raise kind.error(f"{refused}: it is a symbolic link (give the directory it points to); nothing was touched")
    if not stat.S_ISDIR(st.st_mode):
        raise kind.error(f"{where}: exists and is not a directory")
    real = Path(os.path.realpath(target))
    try:
        reason = place_refusal(real)
        if reason is None and any(real.iterdir()):
            if not overwrite:
                raise kind.error(f"{where}: directory is not empty (pass --overwrite to replace {kind.owner})")
            reason = kind.contents_refusal(real)
    except OSError as exc:
        raise kind.error(f"{where}: cannot read it ({exc.strerror or exc}); nothing was touched") from exc
    if reason is not None:
        raise kind.error(f"{refused}: {reason}; nothing was touched")
    return Checked(target, real, (st.st_dev, st.st_ino), kind, overwrite)


def recheck(checked: Checked) -> None:
    """Right before the swap: the target must still be the directory that was checked (or still
    be missing) and still pass the check."""
    now = _identity(checked.path)
    if now != checked.identity or Path(os.path.realpath(checked.path)) != checked.real:
        was = "missing" if checked.identity is None else "a directory that was checked"
        raise checked.kind.error(
            f"{checked.kind.flag} {checked.path}: changed while this {checked.kind.name} was written (it was {was}); "
            "it was left as it is and the new one was discarded")
    if now is not None:
        check_target(checked.path, checked.kind, checked.overwrite, recover=False)


# ---------------------------------------------------------------------------------------------
# Writing and swapping


def write_atomically(checked: Checked, write: Callable[[Path], None]) -> None:
    """Run `write(tmp_dir)` beside the target and move the result into place only once it is
    complete: an interrupted write (a signal, a full disk) leaves the old directory as it was
    and removes its temporary directory."""
    kind, real, where = checked.kind, checked.real, f"{checked.kind.flag} {checked.path}"
    try:
        real.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{real.name}.tmp-", dir=real.parent))
    except OSError as exc:
        raise kind.error(f"{where}: cannot create it ({exc.strerror or exc})") from exc
    keep = False
    try:
        os.chmod(tmp, 0o777 & ~_umask())  # mkdtemp makes it 0700
        write(tmp)
        recheck(checked)
        if checked.identity is None:
            os.rename(tmp, real)
        else:
            swap_directories(tmp, real)
            if _identity(tmp) != checked.identity:  # swapped in meanwhile: not ours to delete
                keep = True
                raise kind.error(f"{where}: changed during the swap; what was there is now at {tmp}")
            shutil.rmtree(tmp)  # the old directory, now at the temporary name
    except SwapUnfinished as exc:
        raise kind.error(f"{where}: the new {kind.name} is in place, but the old one stays at {exc.parked} "
                         f"({exc.__cause__.strerror or exc.__cause__}); the next write there removes it") from exc
    except OSError as exc:
        raise kind.error(f"{where}: cannot write the {kind.name} ({exc.strerror or exc}); "
                         "nothing was changed there") from exc
    finally:
        if not keep and tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def _exchange(a: Path, b: Path) -> bool:
    """Swap two paths in one step (Linux renameat2 RENAME_EXCHANGE); False where unsupported."""
    import ctypes
    import errno

    try:
        renameat2 = ctypes.CDLL(None, use_errno=True).renameat2
    except (OSError, AttributeError):
        return False
    at_fdcwd, rename_exchange = -100, 2
    if renameat2(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), rename_exchange) == 0:
        return True
    err = ctypes.get_errno()
    if err in (errno.ENOSYS, errno.EINVAL, errno.ENOTSUP):
        return False
    raise OSError(err, os.strerror(err), str(b))


@contextmanager
def signals_deferred() -> Iterator[None]:
    """Inside the block, a stop signal is only recorded; it is re-delivered after the block.
    Python runs signal handlers on the main thread only, whichever thread the system gave the
    signal to, so replacing the handlers holds a signal back on every thread (blocking it with
    pthread_sigmask would hold it on the calling thread only). Off the main thread there is
    nothing to do: no Python handler can interrupt that thread."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    arrived: list[int] = []
    previous: dict[int, object] = {}

    def record(signum: int, frame: object) -> None:
        arrived.append(signum)

    try:
        for sig in STOP_SIGNALS:
            previous[sig] = signal.signal(sig, record)
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler if handler is not None else signal.SIG_DFL)
        for sig in dict.fromkeys(arrived):
            signal.raise_signal(sig)


class SwapUnfinished(Exception):
    """The fallback swap put the new directory in place but could not move the old one from
    where it was parked (the cause says why)."""

    def __init__(self, parked: Path):
        super().__init__(f"the old directory stays at {parked}")
        self.parked = parked


@contextmanager
def swap_lock(target: Path) -> Iterator[None]:
    """Hold an exclusive lock for `target` across processes (flock on `.<name>.swap-lock` beside
    it): its fallback swap and its recovery never run at once. The holder removes the file before
    letting go, so a waiter that then holds a lock on a removed file opens the path again."""
    import fcntl

    path = target.with_name(f".{target.name}{SWAP_LOCK}")
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o666)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            held = os.fstat(fd)
            try:
                now = os.lstat(path)
            except FileNotFoundError:
                now = None
        except BaseException:
            os.close(fd)
            raise
        if now is not None and (now.st_dev, now.st_ino) == (held.st_dev, held.st_ino):
            break
        os.close(fd)  # the previous holder removed it: lock the file now at the path
    try:
        yield
    finally:
        try:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path)
        finally:
            os.close(fd)


def swap_directories(new: Path, target: Path) -> None:
    """Put `new` at `target` and the old `target` at `new`'s name, with no moment at which
    `target` is missing (an atomic exchange), or, where the system has none, by two renames
    with stop signals deferred between them; should the process die there anyway (kill -9),
    the old directory waits at `<new>.old` for `recover_parked`."""
    if _exchange(new, target):
        return
    parked = new.with_name(new.name + PARKED)
    with swap_lock(target), signals_deferred():
        os.replace(target, parked)
        try:
            os.replace(new, target)
        except OSError:
            os.replace(parked, target)
            raise
        try:
            os.replace(parked, new)
        except OSError as exc:
            raise SwapUnfinished(parked) from exc


def recover_parked(target: Path, kind: OutputKind) -> None:
    """Finish a fallback swap that a process died in: beside `target`, a parked old directory
    (`.<name>.tmp-*.old`) of `kind`, marked as this project's, is moved back when `target` is
    missing (the new one beside it is removed), or removed when `target` is in place. Parked
    directories that are not this project's output are left alone. A live swap of `target` holds
    `swap_lock` while its `.old` is parked: this waits for it, then looks again."""
    real = Path(os.path.realpath(target))
    if not _parked_ours(real, kind):
        return
    with swap_lock(real):
        _recover_locked(target, real, _parked_ours(real, kind), kind)


def _parked_ours(real: Path, kind: OutputKind) -> list[Path]:
    """The parked directories of `kind` beside `real` that are this project's output."""
    parked = [Path(p) for p in sorted(glob.glob(os.path.join(glob.escape(str(real.parent)),
                                                            f".{glob.escape(real.name)}.tmp-*{PARKED}")))]
    return [p for p in parked if p.is_dir() and not p.is_symlink() and kind.contents_refusal(p) is None]


def _recover_locked(target: Path, real: Path, ours: list[Path], kind: OutputKind) -> None:
    """recover_parked's work, under the target's swap lock (`ours` was listed under it)."""
    if not ours:  # the swap that parked it has finished
        return
    if os.path.lexists(real):
        for old in ours:
            shutil.rmtree(old)
            print(f"note: {kind.flag} {target}: removed {old.name}, left by an interrupted replacement",
                  file=sys.stderr)
        return
    if len(ours) > 1:
        raise kind.error(f"{kind.flag} {target}: is missing, and interrupted replacements left "
                         f"{', '.join(p.name for p in ours)} beside it; move the one to keep back to {target}")
    (old,) = ours
    os.rename(old, real)
    print(f"note: {kind.flag} {target}: restored from {old.name}, where an interrupted replacement had left it",
          file=sys.stderr)
    new = old.with_name(old.name[: -len(PARKED)])
    if new.is_dir() and not new.is_symlink() and kind.contents_refusal(new) is None:
        shutil.rmtree(new)
