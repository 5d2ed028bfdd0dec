"""SIGTERM/SIGINT during work that has no checkpoint to write (a dataset build, a tool): the
signal becomes `Interrupted`, raised at once, so `finally` blocks remove temporary files. Start-up
(before the heavy imports) is `core.early_signals`; a training run has `training.engine.preemption`.
"""

from __future__ import annotations

import signal
import threading
from contextlib import contextmanager
from typing import Any

from core.early_signals import STOP_SIGNALS


class Interrupted(Exception):
    """SIGTERM or SIGINT arrived during work that has no checkpoint to write (a dataset build,
    start-up): raised at once, so `finally` blocks remove temporary files on the way out."""

    def __init__(self, signum: int, detail: str = "", cause: str = ""):
        super().__init__(f"interrupted by {cause or signal.Signals(signum).name}{detail}")
        self.signum = signum


@contextmanager
def interrupt_on_signals():
    """Turn SIGTERM and SIGINT into `Interrupted` inside the block (main thread only)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum: int, frame: Any) -> None:
        raise Interrupted(signum)

    previous = {sig: signal.signal(sig, handler) for sig in STOP_SIGNALS}
    try:
        yield
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


def ignore_sigint() -> None:
    """Worker-process initializer: Ctrl-C reaches the whole process group, but only the parent
    should react (it stops the workers itself), or every worker prints a traceback."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
