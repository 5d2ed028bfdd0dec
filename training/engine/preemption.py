"""Stopping on SIGTERM / SIGINT (pre-emption, Ctrl-C, `kill`), in every phase of a run.

Before the first training step has finished there is nothing worth a checkpoint, and the
phases there (building a dataset, compiling) can take minutes: a signal raises `Interrupted`
at once, `finally` blocks clean up, and the run exits 128 + signal. Once training runs, the
first signal only sets a flag: the loop finishes its step (or evaluation batch), writes a
checkpoint and exits 0. A second signal exits at once (exit code 128 + signal number): a
checkpoint write cut short this way is harmless, because saves are atomic
(training/engine/checkpoint.py).

A standard stream whose reader went away (`pretrain.py ... | head`: the next print or progress
bar finds its pipe closed, core/streams.py) is a stop too, the SIGPIPE Python ignores: the same
as a first signal in every phase, with one line on stderr (stdout, if stderr is the closed one)
when the run has stopped. It never counts as the "again" of a signal.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
from types import FrameType
from typing import Optional

from core.early_signals import STOP_SIGNALS
from core.signals import Interrupted

SIGNALS = STOP_SIGNALS  # SIGTERM, SIGINT and SIGHUP (a closed terminal)


class StopSignal:
    """Context manager installing the handlers (main thread only; elsewhere a no-op). It starts
    in "interrupt" mode; `defer()` switches to "finish the step, then checkpoint"."""

    def __init__(self) -> None:
        self.signum: Optional[int] = None
        self.closed_stream = ""  # "stdout" or "stderr" when a closed stream stopped the run (signum: SIGPIPE)
        self.deferred = False
        self._signalled = False
        self._previous: dict[int, object] = {}

    @property
    def requested(self) -> bool:
        return self.signum is not None

    def defer(self) -> None:
        self.deferred = True

    def _handle(self, signum: int, frame: Optional[FrameType]) -> None:
        name = signal.Signals(signum).name
        if self._signalled:
            print(f"\n{name} again: exiting now without a checkpoint", file=sys.stderr, flush=True)
            os._exit(128 + signum)
        self._signalled = True
        if self.signum is None:
            self.signum = signum
            if not self.deferred:
                raise Interrupted(signum)
        elif not self.deferred:  # a closed stream is ending the run already (Interrupted is on its way)
            return
        print(f"\n{name} received: finishing this step and writing a checkpoint "
              f"(send it again to exit at once)", file=sys.stderr, flush=True)

    def output_closed(self, stream: str) -> None:
        """core.streams: `stream` ("stdout" or "stderr") lost its reader; the rest of its output is
        dropped. Before the first step finished: Interrupted at once; afterwards: stop after this step."""
        if self.signum is not None:  # already stopping
            return
        self.signum, self.closed_stream = signal.SIGPIPE, stream
        if not self.deferred:
            raise Interrupted(signal.SIGPIPE, cause=self.interrupted_by)

    @property
    def cause(self) -> str:
        """What stopped the run when it was not a signal: "stdout closed"; "" for a signal."""
        return f"{self.closed_stream} closed" if self.closed_stream else ""

    @property
    def interrupted_by(self) -> str:
        """What Interrupted names when the stop was not a signal ("" for a signal: its name)."""
        return f"a closed {self.closed_stream} (broken pipe)" if self.closed_stream else ""

    def __enter__(self) -> "StopSignal":
        if threading.current_thread() is threading.main_thread():
            for sig in SIGNALS:
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous.clear()
