"""A path a tool is about to create: no folder can be made through a symbolic link that leads
nowhere (a dangling one, or a loop of them). Followed naively (os.path.realpath, then mkdir with
parents), a dangling link makes its target's folders and sends the output there; refused here
in one line that names the option and the link, before anything is written."""

from __future__ import annotations

import errno
import os
from pathlib import Path
from typing import Optional

from core.errors import InputError


def broken_link_kind(link: Path) -> str:
    """What a symbolic link that leads to nothing is: one that never ends (ELOOP: it names itself,
    directly or through others) or one whose target does not exist."""
    try:
        os.stat(link)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            return "a symbolic link loop"
    return "a dangling symbolic link"


def broken_link_on(path: Path) -> Optional[Path]:
    """The symbolic link that leads nowhere at `path` or at the nearest of its ancestors that is
    there at all; None when that level leads somewhere (or no level of the path is there)."""
    for level in (path, *path.parents):
        if os.path.exists(level):  # follows links: a real place, whatever it is
            return None
        if os.path.islink(level):  # there, yet it leads nowhere
            return level
    return None


def broken_link_text(link: Path) -> str:
    """'<link> is a dangling symbolic link, to <target>' (or a symbolic link loop)."""
    return f"{link} is {broken_link_kind(link)}, to {os.readlink(link)}"


def refuse_broken_link(path: Path | str, flag: str, error: type[InputError] = InputError) -> None:
    """Raise `error` (one line naming `flag`, `path` and the link) when `path` would have to be
    created at or through a symbolic link that leads nowhere."""
    path = Path(path)
    link = broken_link_on(path)
    if link is not None:
        raise error(f"{flag} {path}: cannot create it ({broken_link_text(link)}); nothing was written")
