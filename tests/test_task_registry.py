"""The task registry (evaluators/tasks.py): every task reachable from one entry, and no task named
outside it. Issue 19, items 1 and 2."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

from evaluators.tasks import TASKS, Task, UnknownTask, all_tasks, get_task, task_for_facts, task_names

ROOT = Path(__file__).resolve().parents[1]
# The machinery that must stay task-blind: it asks the registry.
GENERIC = [*sorted((ROOT / "training").rglob("*.py")), *sorted((ROOT / "models").rglob("*.py")),
           *sorted((ROOT / "scripts").rglob("*.py")), ROOT / "pretrain.py"]


def task_modules() -> set[str]:
    """Every module that belongs to one task: its registry module and its builder."""
    return set(TASKS.values()) | {task.builder for task in all_tasks()}


def words(text: str) -> set[str]:
    """The words of `text` (split at anything but letters and digits), leaving out config names:
    `cfg_<task>...` names a file of config/, which is per task by design (a default, an example)."""
    tokens = [t for t in re.findall(r"[a-z0-9_]+", text.lower()) if not t.startswith("cfg_")]
    return {word for token in tokens for word in token.split("_")}


def task_mentions(path: Path) -> list[str]:
    """Where a file names a task: a string (not a docstring; prose may give examples) or an
    identifier holding a task name as a word (`"lsa"`, `"eval/lsa/..."`, `solve_lsa`), or an
    import of a task's module."""
    tree = ast.parse(path.read_text(), str(path))
    names, modules = set(TASKS), task_modules()
    docstrings = {id(node.body[0].value) for node in ast.walk(tree)
                  if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef))
                  and node.body and isinstance(node.body[0], ast.Expr) and isinstance(node.body[0].value, ast.Constant)}
    found = []
    for node in ast.walk(tree):
        where = f"{path.relative_to(ROOT) if path.is_relative_to(ROOT) else path.name}:{getattr(node, 'lineno', '?')}"
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in docstrings:
            text = node.value
        elif isinstance(node, ast.Name):
            text = node.id
        elif isinstance(node, ast.Attribute):
            text = node.attr
        elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            text = node.name
        elif isinstance(node, ast.arg):
            text = node.arg
        elif isinstance(node, ast.Import):
            found += [f"{where}: imports {a.name}" for a in node.names if a.name in modules]
            continue
        elif isinstance(node, ast.ImportFrom):
            module = node.module or ""
            imported = {module} | {f"{module}.{a.name}" for a in node.names}
            found += [f"{where}: imports {m}" for m in sorted(imported & modules)]
            continue
        else:
            continue
        if words(text) & names:
            found.append(f"{where}: {text[:60]!r}")
    return found


def test_machinery_names_no_task():
    """No file of training/, models/, scripts/ or pretrain.py names a task; a new task's name
    is caught too, since the names come from the registry."""
    found = [hit for path in GENERIC for hit in task_mentions(path)]
    assert not found, "task names outside the task modules (ask evaluators.tasks instead):\n" + "\n".join(found)


def test_the_scan_sees_a_task_name(tmp_path, monkeypatch):
    """The check above can fail: each way of naming a task is seen, and a new registry entry
    is a new name to look for."""
    sample = tmp_path / "sample.py"
    sample.write_text('"""Docstrings may say lsa."""\nimport evaluators.sudoku\nfrom dataset import build_arith_dataset\n'
                      'PRESET = "cfg_lsa_cpu"\nMETRIC = "eval/lsa/exact"\n\ndef solve_sudoku(arith):\n    return "unregistered"\n')
    hits = task_mentions(sample)
    assert len(hits) == 5 and not any(":1:" in hit for hit in hits), hits
    monkeypatch.setitem(TASKS, "unregistered", "evaluators.lsa")
    monkeypatch.setattr("evaluators.tasks.get_task", lambda name: get_task("lsa" if name == "unregistered" else name))
    assert any("'unregistered'" in hit for hit in task_mentions(sample))


def test_every_entry_is_a_whole_task():
    """Each entry's module defines TASK for its own name, with every part reachable."""
    for name in task_names():
        task = get_task(name)
        assert isinstance(task, Task) and task.name == name
        assert task.evaluator.name == name and task.evaluator.task == name
        assert task.headline_metric.startswith(f"eval/{name}/")
        assert task.config_class().__name__ == task.builder_config and callable(task.build)
        for part in ("check_facts", "facts_from_build_args", "render", "describe", "parse", "solve", "show"):
            assert callable(getattr(task, part)), (name, part)
        assert task.input_help and (task.symmetries is None or callable(task.symmetries))


# Names no task will take (a future task's name here would make this test fail when it lands).
@pytest.mark.parametrize("name", [None, "", "unregistered", "os.system", ["lsa"], 3])
def test_unknown_task_is_one_line_listing_the_known_ones(name):
    with pytest.raises(UnknownTask) as err:
        get_task(name, where="data.builder")
    message = str(err.value)
    assert "\n" not in message and message.startswith(f"data.builder={name!r}")
    assert message.endswith("known: " + ", ".join(task_names()))


def test_facts_find_their_task():
    assert task_for_facts({"task": "arith"}).name == "arith"
    assert task_for_facts({"seq_len": 81, "vocab_size": 11}).name == "sudoku"  # the reference's format
    assert task_for_facts({"task": "other", "seq_len": 10, "vocab_size": 4}) is None
