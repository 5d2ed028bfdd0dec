"""The project's error types and how an error becomes one printable line.

Every layer (datasets, evaluators, training, scripts) raises these; entry points print a
`ReportedError` as one line and exit with code 2 (`core.cli.run_cli`).
"""

from __future__ import annotations

import pydantic


class ReportedError(Exception):
    """An error whose message tells the whole story: entry points print it as one line and
    exit with code 2, no traceback."""


class InputError(ReportedError, ValueError):
    """Bad user input (arguments, config, dataset, checkpoint): the message names the file,
    field or value at fault. Entry points print it as one line and exit with code 2."""


class DatasetError(InputError):
    """A dataset (or a builder's arguments) is invalid."""


def os_error_line(exc: OSError) -> str:
    """'<file>: <reason>' for an OSError that reached an entry point."""
    where = f"{exc.filename}: " if exc.filename else ""
    return printable_line(f"{where}{exc.strerror or exc}")


def printable_line(text: str) -> str:
    """`text` as one printable line: newlines become spaces, every other control or unprintable
    character (a carriage return, an escape sequence, a file name's undecodable byte) is escaped,
    so that a name quoted in a message can neither forge a line nor fail to print."""
    return "".join(ch if ch.isprintable() else ascii(ch)[1:-1] for ch in text.replace("\n", " "))


def one_line(exc: Exception, flags: bool = False) -> str:
    """A one-line message for our error types; pydantic errors name the field (as --flag-name
    when `flags`) and the offending value."""
    if isinstance(exc, pydantic.ValidationError):
        parts = []
        for err in exc.errors():
            value = err.get("input")
            shown = "" if isinstance(value, (dict, list)) or err["type"] == "value_error" else f" (got {value!r})"
            msg = err["msg"].removeprefix("Value error, ")
            if not err["loc"]:  # a whole-model check: its message names the fields itself
                parts.append(f"{msg}{shown}")
                continue
            loc = ".".join(str(x) for x in err["loc"])
            if flags:
                loc = "--" + loc.replace("_", "-")
            parts.append(f"{loc}: {msg}{shown}")
        return printable_line("; ".join(parts))
    return printable_line(str(exc))
