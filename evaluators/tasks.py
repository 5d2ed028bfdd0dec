"""The task registry: one entry per task, and everything the project knows about a task reached
from it.

A task is a builder module under `dataset/` (an argdantic config + a build function) and an
evaluator module under `evaluators/` that defines `TASK = Task(...)`: its builder, evaluator,
headline metric, the encoding facts its datasets record, pictures and text of an example, and
how `scripts/solve.py` reads, answers and shows a user's instances. `TASKS` maps the task's name
(a config's `data.builder`, its `evaluators: [{name: ...}]`, dataset.json's `task`) to that
module, which is imported on first use: one task never imports another's dependencies, and a
name read from a file is looked up here before anything is imported.

Nothing in `training/`, `models/`, `scripts/` or `pretrain.py` names a task: they ask this
registry (tests/test_task_registry.py checks it).
"""

from __future__ import annotations

import importlib
import os
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable, NamedTuple, Optional, Protocol

from core.errors import InputError

if TYPE_CHECKING:
    import numpy as np
    import pydantic
    from matplotlib.figure import Figure

    from evaluators.base import Evaluator

# name -> the module that defines the task's `TASK`
TASKS: dict[str, str] = {
    "lsa": "evaluators.lsa",
    "sudoku": "evaluators.sudoku",
    "arith": "evaluators.arith",
    "maze": "evaluators.maze",
}
# The facts every task's datasets record (dataset.json) beside their shape; `Task.fact_fields`
# adds the task's own. Checkpoint meta and exports keep both, and solve.py reads tokens by them.
COMMON_FACT_FIELDS = ("task", "pad_id", "ignore_label_id", "blank_identifier_id")


class Solver(Protocol):
    """What a task's `solve` asks of a model (training.inference.ReadyModel is one; evaluators
    do not import training): the dataset facts it was trained on, and numpy tokens (N, seq_len)
    in -> {"preds": (N, L), "logits": (N, L, V), "steps": (N,)} out."""

    facts: dict[str, Any]

    def solve(self, tokens: "np.ndarray", batch_size: int = ...) -> dict[str, "np.ndarray"]: ...


class UnknownTask(InputError):
    """A task name the registry does not hold; the message lists the known ones."""


class Symmetry(NamedTuple):
    """One transformation a task's answers follow (a relabelling, a transpose, a permutation):
    `augment` maps a batch of input tokens (N, seq_len) to the transformed instances, and
    `map_back` maps the model's predicted tokens (N, seq_len) on those back to the original
    instances, so that answers to several transformed copies can be compared or voted on."""

    name: str
    augment: Callable[["np.ndarray"], "np.ndarray"]
    map_back: Callable[["np.ndarray"], "np.ndarray"]


# A task's symmetries: (facts, rng, count) -> up to `count` Symmetry objects drawn with `rng`
# (the identity not included), for the dataset these encoding facts describe.
Symmetries = Callable[[dict[str, Any], "np.random.Generator", int], list[Symmetry]]
# A task's check of answers without their labels: (facts, inputs (N, L), preds (N, L)) -> (N,)
# float64 penalties: +inf where the answer breaks the task's rules, else how good it is (lower is
# better; 0 where every passing answer is as good, e.g. a Sudoku grid; LSA: the assignment's cost).
CheckAnswers = Callable[[dict[str, Any], "np.ndarray", "np.ndarray"], "np.ndarray"]
# The positions of a sequence that hold the answer (seq_len,) bool, where not all of them do
# (arithmetic: the answer field): answers are compared there when votes are counted.
AnswerPositions = Callable[[dict[str, Any]], "np.ndarray"]
# How a dataset folder's name says its instance size: (name, the config's size, another size) ->
# the name for the other size, or None when the name says no size; a name that says a size other
# than the config's raises an InputError saying what it says ("its name says 3x3").
SizeInName = Callable[[str, int, int], Optional[str]]


def square_size_in_name(name: str, size: int, new: int) -> Optional[str]:
    """`<k>x<k>` in a folder name is the size: lsa-9x9-10k -> lsa-4x4-10k (LSA's n, a maze's size)."""
    named = {int(a) for a, b in re.findall(r"(?<!\d)(\d+)x(\d+)(?!\d)", name) if a == b}
    if not named:
        return None
    if named != {size}:
        raise InputError(f"its name says {'/'.join(f'{k}x{k}' for k in sorted(named))}")
    return re.sub(rf"(?<!\d){size}x{size}(?!\d)", f"{new}x{new}", name)


@dataclass(frozen=True)
class Task:
    """Everything the project knows about one task. Functions take the task's encoding facts
    (`task_facts` of its dataset.json: `COMMON_FACT_FIELDS` + `fact_fields` + the shape) where
    they need them."""

    name: str
    # The builder: a module under dataset/ (imported on use, so `python -m <module>` runs it
    # once), its argdantic config class and its build function (config -> output directory).
    builder: str
    builder_config: str
    build_function: str
    # The evaluator a config names as `evaluators: [{name: <name>}]`.
    evaluator: type["Evaluator"]
    # The metric that says how well the task is solved (run tools, compare_runs, scaling plots).
    headline_metric: str
    # The task's own dataset.json fields its tokens are read and written by (e.g. lsa: n, max_cost).
    fact_fields: tuple[str, ...]
    # (facts, where, prefix) -> None: facts that contradict each other or the shape raise an
    # InputError naming `where` (a file) and `prefix` + the field.
    check_facts: Callable[[dict[str, Any], Any, str], None]
    # builder arguments (a config's data.build_args) -> the facts they imply (for checkpoints
    # written before facts were recorded and whose dataset is gone).
    facts_from_build_args: Callable[[dict[str, Any]], dict[str, Any]]
    # (facts, inputs, labels, preds, title) -> a matplotlib Figure of one example (tokens).
    render: Callable[..., "Figure"]
    # (facts, inputs, labels, preds) -> {"input", "target", "prediction", "correct"}: text columns.
    describe: Callable[..., dict[str, Any]]
    # scripts/solve.py: parse(raw bytes, where, facts) -> instances (a sequence, one per
    # instance; bad input is an InputError naming `where`); solve(Solver, instances) -> one
    # JSON-able dict per instance (with "valid" and "steps"); show(instance, answer, facts) -> text.
    parse: Callable[[bytes, str, dict[str, Any]], Any]
    solve: Callable[[Solver, Any], list[dict[str, Any]]]
    show: Callable[[Any, dict[str, Any], dict[str, Any]], str]
    # One line for solve.py --help: the input format.
    input_help: str
    # Facts of a dataset that records no task name but is this task's (the reference's Sudoku).
    recognises: Optional[Callable[[dict[str, Any]], bool]] = None
    # A build of a few instances that takes seconds (builder arguments, without output_dir and
    # progress): the tests build every registered task with it (tests/test_val_split.py).
    tiny_build_args: Optional[dict[str, Any]] = None
    # Test-time symmetries (see `Symmetries`); None: the task declares none.
    symmetries: Optional[Symmetries] = None
    # Test-time voting's label-free check (see `CheckAnswers`); None: the task has none (the
    # `check` vote policy then counts votes, `majority`).
    check_answer: Optional[CheckAnswers] = None
    # Where the answer lies (see `AnswerPositions`); None: every position.
    answer_positions: Optional[AnswerPositions] = None
    # Scaling experiments (scripts/scaling.py): the builder argument that sets the instance size
    # (an int; None: the task has no size to sweep), the plot's axis label for it, how a dataset
    # folder's name says it (see `SizeInName`; None: names never do, `-<size_arg><k>` is
    # appended), and the metrics tabulated and plotted beside `headline_metric` (which comes
    # first; label it here to name its column, else its key's last part is the label).
    size_arg: Optional[str] = None
    size_label: Optional[str] = None
    size_in_name: Optional[SizeInName] = None
    scaling_metrics: tuple[tuple[str, str], ...] = ()

    def config_class(self) -> type["pydantic.BaseModel"]:
        return getattr(importlib.import_module(self.builder), self.builder_config)

    def build(self, cfg: "pydantic.BaseModel") -> Any:
        return getattr(importlib.import_module(self.builder), self.build_function)(cfg)

    def size_data_path(self, path: str, size: int, new: int) -> str:
        """A config's data.path (for builder argument `size_arg` = `size`) for another size `new`:
        absolute and normalised, the size in its folder name replaced (`size_in_name`), or
        `-<size_arg><new>` appended to a name that says none. A name that says another size
        than `size` is an InputError (it would put one size's data under another's name)."""
        if self.size_arg is None:
            raise InputError(f"task {self.name!r} has no instance size to change (Task.size_arg is None)")
        path = os.path.abspath(path)
        parent, name = os.path.split(path)
        try:
            renamed = self.size_in_name(name, size, new) if self.size_in_name is not None else None
        except InputError as exc:
            raise InputError(f"data.path={path}: {exc} but data.build_args.{self.size_arg}={size}; give a "
                             "data.path that names the config's size, or none") from None
        if new == size:
            return path
        return os.path.join(parent, renamed if renamed is not None else f"{name}-{self.size_arg}{new}")

    def scaling_columns(self) -> list[tuple[str, str]]:
        """(metric key, label) to tabulate against size: the headline first, then `scaling_metrics`."""
        labels = dict(self.scaling_metrics)
        headline = (self.headline_metric, labels.get(self.headline_metric,
                                                     self.headline_metric.rsplit("/", 1)[-1].replace("_", " ")))
        return [headline, *((k, label) for k, label in self.scaling_metrics if k != self.headline_metric)]


def task_names() -> list[str]:
    return sorted(TASKS)


def get_task(name: Any, where: str = "task") -> Task:
    """The registered task `name`; any other name is an UnknownTask naming `where` and the known ones."""
    if not isinstance(name, str) or name not in TASKS:
        raise UnknownTask(f"{where}={name!r}: unknown task; known: {', '.join(task_names())}")
    task = importlib.import_module(TASKS[name]).TASK
    if task.name != name:  # a registry entry pointing at another task's module
        raise RuntimeError(f"evaluators.tasks: {TASKS[name]}.TASK is {task.name!r}, registered as {name!r}")
    return task


def all_tasks() -> list[Task]:
    return [get_task(name) for name in task_names()]


def task_for_facts(facts: dict[str, Any]) -> Optional[Task]:
    """The task these encoding facts are of: their `task` when registered, else the one that
    recognises them (a dataset written elsewhere); None when no task does."""
    name = facts.get("task")
    if isinstance(name, str) and name in TASKS:
        return get_task(name)
    for task in all_tasks():
        if task.recognises is not None and task.recognises(facts):
            return task
    return None
