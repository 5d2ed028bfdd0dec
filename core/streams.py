"""Standard output or error whose reader went away (`pretrain.py ... | head`, a pager quit, a log
follower stopped): Python ignores SIGPIPE, so the next print, progress bar or flush raises
BrokenPipeError wherever it happens to be, and the interpreter's last flush complains once more.

`watch_output(listener)` wraps sys.stdout and sys.stderr: the first write or flush that finds
one's pipe closed points its file descriptor at /dev/null (what is written to it from then on,
the interpreter's last flush included, goes nowhere, quietly) and tells the listener which stream
it was; the listener decides what that means (a training run takes it as a stop,
training/engine/preemption.py) and may raise. Only the standard library is imported here.
"""

from __future__ import annotations

import os
import sys
from contextlib import contextmanager
from typing import Any, Callable, Iterable, Iterator, Optional

STREAMS = ("stdout", "stderr")


class WatchedStream:
    """sys.stdout or sys.stderr, passed through until its pipe is found closed, then dropped."""

    def __init__(self, stream: Any, name: str) -> None:
        self.stream = stream
        self.name = name
        self.lost = False
        self.listeners: list[Callable[[str], None]] = []

    def write(self, text: str) -> int:
        if not self.lost:
            try:
                return self.stream.write(text)
            except BrokenPipeError:
                self._lose()
        return len(text)

    def writelines(self, lines: Iterable[str]) -> None:
        for line in lines:
            self.write(line)

    def flush(self) -> None:
        if not self.lost:
            try:
                self.stream.flush()
            except BrokenPipeError:
                self._lose()

    def __getattr__(self, name: str) -> Any:  # fileno, isatty, encoding, ...: the stream's own
        if name == "stream":  # not set yet (a copy being made): no recursion
            raise AttributeError(name)
        return getattr(self.stream, name)

    def _lose(self) -> None:
        self.lost = True
        fd = _fileno(self.stream)
        if fd is not None:
            devnull = os.open(os.devnull, os.O_WRONLY)
            try:
                os.dup2(devnull, fd)
            finally:
                os.close(devnull)
            self.stream.flush()  # what the failed write left in its buffer goes to /dev/null now, not at exit
        for listener in list(self.listeners):
            listener(self.name)


def _fileno(stream: Any) -> Optional[int]:
    try:
        return stream.fileno()
    except (AttributeError, OSError, ValueError):  # not a real file (a test's StringIO): nothing to point elsewhere
        return None


def lost(name: str) -> bool:
    """Whether sys.<name> (stdout or stderr) is watched and its reader has gone."""
    stream = getattr(sys, name)
    return isinstance(stream, WatchedStream) and stream.lost


def closed_streams() -> list[str]:
    """The watched standard streams ("stdout", "stderr") whose reader has gone."""
    return [name for name in STREAMS if lost(name)]


def reporting_stream(name: str) -> Any:
    """Where a line meant for sys.<name> ("stdout" or "stderr") goes so that it is read: there,
    or the other standard stream when <name> has lost its reader (a stop caused by the closed
    one is reported on the one left; where both are gone, nowhere: the dropped stream)."""
    other = STREAMS[1 - STREAMS.index(name)]
    return getattr(sys, other) if lost(name) and not lost(other) else getattr(sys, name)


def watch_standard_streams() -> None:
    """Watch sys.stdout and sys.stderr for the rest of the process (an entry point's first lines):
    a closed one is dropped quietly, also at the interpreter's last flush. One the process was
    started without (`>&-`, `2>&-`: Python sets it to None) writes to /dev/null instead. Standard
    output is made line-buffered first: into a pipe or file (`| tee run.log`, `> run.log` and
    `tail -f`) Python would otherwise hold a training run's lines back in 8 KB blocks, minutes of them."""
    for number, name in enumerate(STREAMS, start=1):
        if getattr(sys, name) is None:
            setattr(sys, name, _devnull_on(number))
    line_buffer_stdout()
    _watch()


def line_buffer_stdout() -> None:
    """Make a real standard output line-buffered (into a pipe or file Python buffers it in 8 KB
    blocks): every entry point's first step (pretrain.py here, the scripts through core.cli.run_cli)."""
    stdout = sys.stdout
    if stdout is not None and not isinstance(stdout, WatchedStream) and hasattr(stdout, "reconfigure"):
        stdout.reconfigure(line_buffering=True)


def _devnull_on(fd: int) -> Any:
    """A text stream to /dev/null on descriptor `fd` (1 or 2) when that descriptor is closed: so
    that faulthandler, progress bars and `print(file=sys.stderr)` have a stream, and the next
    file the process opens (a run's lock, its metrics) is not given the number that C code,
    child processes and crash reports write to as standard output or error."""
    null = os.open(os.devnull, os.O_WRONLY)
    if null != fd:
        try:
            os.fstat(fd)  # in use after all (not ours to replace): keep the new descriptor
        except OSError:
            os.dup2(null, fd)
            os.close(null)
            null = fd
    return open(null, "w", encoding="utf-8", errors="backslashreplace")


def _watch() -> dict[str, Any]:
    """Wrap whichever of sys.stdout and sys.stderr is not watched yet; returns those replaced."""
    installed = {}
    for name in STREAMS:
        stream = getattr(sys, name)
        if stream is not None and not isinstance(stream, WatchedStream):  # None: started without it (`>&-`)
            installed[name] = stream
            setattr(sys, name, WatchedStream(stream, name))
    return installed


@contextmanager
def watch_output(listener: Optional[Callable[[str], None]] = None) -> Iterator[None]:
    """Inside the block, sys.stdout and sys.stderr are watched (already watched ones stay as they
    are); `listener(name)` hears of a stream found closed inside the block, at once if it was
    found closed before."""
    installed = _watch()
    watched = [getattr(sys, name) for name in STREAMS if isinstance(getattr(sys, name), WatchedStream)]
    try:
        if listener is not None:
            for stream in watched:
                stream.listeners.append(listener)
            for stream in watched:
                if stream.lost:
                    listener(stream.name)
        yield
    finally:
        for stream in watched:
            if listener in stream.listeners:
                stream.listeners.remove(listener)
        for name, original in installed.items():
            setattr(sys, name, original)
