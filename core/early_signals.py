"""Signals during start-up, before the heavy imports (torch, numpy, Hydra) have finished.

Entry points call `exit_on_signals()` as their first statement: a SIGTERM, SIGINT or SIGHUP
that arrives while Python is still importing ends the process with one line and exit code
128 + signal (the default would be a KeyboardInterrupt traceback, or a silent death). Nothing
has been written at that point. Once the entry point runs, its own handlers take over
(`core.signals.interrupt_on_signals`, `training.engine.preemption.StopSignal`). Only the standard
library is imported here.
"""

from __future__ import annotations

import signal
import sys

STOP_SIGNALS = tuple(getattr(signal, name) for name in ("SIGTERM", "SIGINT", "SIGHUP") if hasattr(signal, name))


def _exit(signum: int, frame: object) -> None:
    print(f"error: interrupted by {signal.Signals(signum).name} during start-up; nothing was written", file=sys.stderr,
          flush=True)
    sys.exit(128 + signum)


def exit_on_signals() -> None:
    for sig in STOP_SIGNALS:
        signal.signal(sig, _exit)
