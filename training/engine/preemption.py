"""Stopping on SIGTERM / SIGINT (pre-emption, Ctrl-C, `kill`), in every phase of a run.

Before the first training step has finished there is nothing worth a checkpoint, and the
phases there (building a dataset, compiling) can take minutes: a signal raises `Interrupted`
at once, `finally` blocks clean up, and the run exits 128 + signal. Once training runs, the
first signal only sets a flag: the loop finishes its step (or evaluation batch), writes a
checkpoint and exits 0. A second signal exits at once (exit code 128 + signal number): a
checkpoint write cut short this way is harmless, because saves are atomic
(training/engine/checkpoint.py).
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
        self.deferred = False
        self._previous: dict[int, object] = {}

    @property
    def requested(self) -> bool:
        return self.signum is not None

    def defer(self) -> None:
        self.deferred = True

    def _handle(self, signum: int, frame: Optional[FrameType]) -> None:
        name = signal.Signals(signum).name
        if self.signum is not None:
            print(f"\n{name} again: exiting now without a checkpoint", file=sys.stderr, flush=True)
            os._exit(128 + signum)
        self.signum = signum
        if not self.deferred:
            raise Interrupted(signum)
        print(f"\n{name} received: finishing this step and writing a checkpoint "
              f"(send it again to exit at once)", file=sys.stderr, flush=True)

    def __enter__(self) -> "StopSignal":
        if threading.current_thread() is threading.main_thread():
            for sig in SIGNALS:
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous.clear()
