"""Pictures and text of task examples, with a model's answer when given: for looking at a
dataset (scripts/visualize_dataset.py) and at predictions (wandb, at each evaluation).

Each task's `Task.render` and `Task.describe` (evaluators/tasks.py) take one example as dataset
tokens (inputs, labels, optional predictions) and the task's encoding facts (see
training/inference.task_facts); this module dispatches to them and holds what they share: a
figure (matplotlib with the Agg backend: files, no display), the colours, and writing a PNG.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any, Optional

import numpy as np

from core.errors import InputError
from dataset.common import _umask
from evaluators.tasks import get_task, task_for_facts, task_names
from training.files import replace_file

if TYPE_CHECKING:
    from matplotlib.figure import Figure

# Right and wrong are told apart by shape as well as colour (blue and vermillion, a pair that
# colour-blind readers tell apart too): each task marks a wrong answer with `wrong_cell` (a
# hatched box) or the WRONG_MARKER shape, a right one plainly or with RIGHT_MARKER, and names the
# marks in the picture's caption.
RIGHT, WRONG, GIVEN = "#0072b2", "#d55e00", "#000000"
RIGHT_MARKER, WRONG_MARKER = "o", "X"
WRONG_HATCH = "////"


def wrong_cell(x: float, y: float, width: float = 1.0, height: float = 1.0):
    """A hatched box over the cell centred at (x, y): what marks a wrong answer besides its colour."""
    from matplotlib.patches import Rectangle

    return Rectangle((x - width / 2, y - height / 2), width, height, fill=False, hatch=WRONG_HATCH,
                     edgecolor=WRONG, linewidth=0.0, zorder=0)


def new_figure(width: float, height: float) -> "Figure":
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure

    return Figure(figsize=(width, height), dpi=100, layout="constrained")


def check_new_output(path: Path, overwrite: bool, flag: str = "--out") -> None:
    """An output file may replace only a regular file, and only with `overwrite` (`flag` names the
    option in the message)."""
    if not os.path.lexists(path):
        return
    if not overwrite:
        raise InputError(f"{flag} {path}: exists (pass --overwrite to replace it)")
    if path.is_symlink() or not path.is_file():
        raise InputError(f"{flag} {path}: exists and is not a regular file (a symbolic link, a directory, ...); "
                         "not replaced")


def save(fig: "Figure", path: Path | str, overwrite: bool = False) -> Path:
    """Write the PNG beside `path`, then move it into place: a reader never sees half a file, and
    an existing `path` (a symbolic link included) is replaced, never written through; without
    `overwrite` an existing file is an InputError (os.link refuses it atomically)."""
    path = Path(path)
    check_new_output(path, overwrite)
    if overwrite:
        replace_file(path, lambda f: fig.savefig(f, format="png"))
        return path
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.tmp-", suffix=".png", dir=path.parent)
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, "wb") as f:
            fig.savefig(f, format="png")
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp made it private
        try:
            os.link(tmp, path)  # unlike a rename, refuses a file that appeared meanwhile
        except FileExistsError as exc:
            raise InputError(f"--out {path}: exists (pass --overwrite to replace it)") from exc
    finally:
        tmp.unlink(missing_ok=True)
    return path


def known_task(facts: dict[str, Any]) -> Optional[str]:
    """The task whose pictures fit these facts; None when there are none (a foreign dataset)."""
    task = task_for_facts(facts)
    return None if task is None else task.name


def task_of(facts: dict[str, Any]) -> str:
    task = known_task(facts)
    if task is None:
        raise ValueError(f"dataset task {facts.get('task')!r}: pictures exist for {', '.join(task_names())}")
    return task


def render_example(facts: dict[str, Any], inputs: np.ndarray, labels: Optional[np.ndarray] = None,
                   preds: Optional[np.ndarray] = None, title: str = "") -> "Figure":
    """One example as a matplotlib Figure (save it with `save`)."""
    return get_task(task_of(facts)).render(facts, np.asarray(inputs), labels, preds, title)


def describe_example(facts: dict[str, Any], inputs: np.ndarray, labels: np.ndarray,
                     preds: np.ndarray) -> dict[str, Any]:
    """One example as text columns (input, target, prediction, correct): a wandb table row."""
    task = get_task(task_of(facts))
    inputs, labels, preds = (np.asarray(x).astype(np.int64) for x in (inputs, labels, preds))
    return task.describe(facts, inputs, labels, preds)
