"""Command-line glue shared by the builders and the scripts: argdantic and argparse parsers whose
errors are one line, and `run_cli`, which turns bad input, signals and file-system errors into one
line on stderr and an exit code.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
from pathlib import Path
from typing import Annotated, Any, Callable, Optional

import pydantic
from argdantic import ArgParser
from pydantic import BeforeValidator

from core.errors import ReportedError, one_line, os_error_line
from core.signals import Interrupted, interrupt_on_signals
from core.streams import line_buffer_stdout


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


def plain_parser(description: str, **kwargs: Any) -> argparse.ArgumentParser:
    """argparse for scripts that take positional arguments (argdantic has none); its usage
    errors print as one line, like CLI's."""
    parser = argparse.ArgumentParser(description=description, **kwargs)
    parser.error = _one_line_parser_error
    return parser


EMPTY_PATH = "is empty (it would mean the current directory); give a path"


def _refuse_empty_path(value: Any) -> Any:
    if value == "":
        raise ValueError(EMPTY_PATH)
    return value


# A path option of an argdantic model whose '' (an unset shell variable: --out "$DIR") is refused:
# Path("") is ".", the current directory, which nobody meant (and messages would show as ".").
GivenPath = Annotated[Path, BeforeValidator(_refuse_empty_path)]
# The same for an optional one (Annotated outside Optional, so that --help still says PATH).
OptionalGivenPath = Annotated[Optional[Path], BeforeValidator(_refuse_empty_path)]


def path_arg(text: str) -> Path:
    """argparse's `type=` for a path option: the same refusal of ''."""
    if text == "":
        raise argparse.ArgumentTypeError(EMPTY_PATH)
    return Path(text)


def run_cli(main: Callable[[], None]) -> None:
    """Run a command-line entry point: bad input -> one line on stderr and exit 2, no traceback;
    SIGTERM/SIGINT -> one line and exit 128 + signal, with temporary files removed. Standard output
    is line-buffered, so that `| tee` and `tail -f` see each line as it is printed."""
    line_buffer_stdout()
    try:
        with interrupt_on_signals():
            main()
            sys.stdout.flush()  # here, so that a reader who went away is seen below, not at exit
    except BrokenPipeError:  # `... | head`: the reader has all it wants; leave quietly, as SIGPIPE would
        _silence_stdout()
        sys.exit(128 + signal.SIGPIPE)
    except (ReportedError, pydantic.ValidationError) as exc:
        print(f"error: {one_line(exc, flags=True)}", file=sys.stderr)
        sys.exit(2)
    except OSError as exc:  # the file system refused (a name too long, a read-only or full disk): one line
        print(f"error: {os_error_line(exc)}", file=sys.stderr)
        sys.exit(2)
    except Interrupted as exc:
        print(f"error: {exc}; nothing half-written was left behind", file=sys.stderr)
        sys.exit(128 + exc.signum)


def _silence_stdout() -> None:
    """Point stdout at /dev/null, so that the interpreter's last flush does not fail again."""
    try:
        fd = sys.stdout.fileno()
    except (AttributeError, OSError, ValueError):  # not a real file (a test's StringIO)
        return
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, fd)
    os.close(devnull)
