"""No import circles among the project's modules, and training/'s rooms import downwards only
(issue 19, item 2).

Every `import` statement of core/, dataset/, evaluators/, models/, training/, scripts/ and
pretrain.py counts, at module level, inside functions (a lazy import only moves a circle to
run time) and under `if TYPE_CHECKING:` (a type named across a circle ties the modules as much
as a call: the type belongs lower, or a Protocol stands for it). The task registry's
`importlib.import_module` of a task's module is not an import statement: it is the one way
down from the generic layers to a task. `from a import b` counts as an import of
`a.b` when that is a module, else of `a`.
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("core", "dataset", "evaluators", "models", "training", "scripts")


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def project_modules() -> dict[str, Path]:
    files = [p for package in PACKAGES for p in sorted((ROOT / package).rglob("*.py"))] + [ROOT / "pretrain.py"]
    return {module_name(p): p for p in files}


def imports(path: Path, modules: dict[str, Path], lazy: bool) -> set[str]:
    """The project modules `path` imports: at module level (`if TYPE_CHECKING:` included), and
    inside functions when `lazy`."""
    def project_module(name: str) -> str | None:
        while name and name not in modules:
            name = name.rpartition(".")[0]
        return name or None

    found: set[str] = set()

    def visit(nodes: list[ast.stmt]) -> None:
        for node in nodes:
            if isinstance(node, ast.Import):
                found.update(m for a in node.names if (m := project_module(a.name)))
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                for alias in node.names:
                    module = project_module(f"{node.module}.{alias.name}") or project_module(node.module)
                    if module:
                        found.add(module)
            elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and not lazy:
                continue
            for child in ast.iter_child_nodes(node):  # bodies of if/try/with/for/def/class
                if isinstance(child, ast.stmt):
                    visit([child])
                elif isinstance(child, ast.excepthandler):
                    visit(child.body)

    visit(ast.parse(path.read_text(), str(path)).body)
    return found - {module_name(path)}


def circles(lazy: bool) -> set[frozenset[str]]:
    """The strongly connected components of more than one module (Tarjan)."""
    modules = project_modules()
    graph = {name: imports(path, modules, lazy) for name, path in modules.items()}
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: set[frozenset[str]] = set()

    def connect(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in graph[v]:
            if w not in index:
                connect(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = set()
            while True:
                w = stack.pop()
                component.add(w)
                if w == v:
                    break
            if len(component) > 1:
                found.add(frozenset(component))

    for v in graph:
        if v not in index:
            connect(v)
    return found


def test_module_level_imports_have_no_circle():
    assert circles(lazy=False) == set()


def test_imports_inside_functions_add_no_circle():
    assert circles(lazy=True) == set()


# training/'s rooms, from the top down (docs/ARCHITECTURE.md): a room may import only rooms below it.
TRAINING_ROOMS = ("training.loop", "training.bookkeeping", "training.inference", "training.engine")


def room_of(module: str) -> int | None:
    for level, room in enumerate(TRAINING_ROOMS):
        if module == room or module.startswith(room + "."):
            return level
    return None


def upward_imports() -> set[tuple[str, str]]:
    """(importer, imported) pairs where a room of training/ imports one above it."""
    modules = project_modules()
    found = set()
    for name, path in modules.items():
        mine = room_of(name)
        for other in imports(path, modules, lazy=True):
            theirs = room_of(other)
            if mine is not None and theirs is not None and theirs < mine:
                found.add((name, other))
    return found


def test_training_rooms_import_downwards():
    assert upward_imports() == set()


def test_an_upward_import_is_seen(tmp_path, monkeypatch):
    for package in PACKAGES:
        (tmp_path / package).mkdir()
    (tmp_path / "pretrain.py").write_text("")
    for room in ("engine", "bookkeeping"):
        (tmp_path / "training" / room).mkdir()
    (tmp_path / "training" / "bookkeeping" / "run.py").write_text("from training.engine import state\n")
    (tmp_path / "training" / "engine" / "state.py").write_text("def f():\n    import training.loop\n")
    (tmp_path / "training" / "loop.py").write_text("import training.bookkeeping.run\n")
    monkeypatch.setattr(sys.modules[__name__], "ROOT", tmp_path)
    assert upward_imports() == {("training.engine.state", "training.loop")}


def test_a_circle_is_seen(tmp_path, monkeypatch):
    """The walk finds a circle, also one closed by an import inside a function or under
    `if TYPE_CHECKING:`."""
    for package in PACKAGES:
        (tmp_path / package).mkdir()
    (tmp_path / "pretrain.py").write_text("")
    (tmp_path / "core" / "a.py").write_text("from core import b\n")
    (tmp_path / "core" / "b.py").write_text("def f():\n    import core.a\n")
    monkeypatch.setattr(sys.modules[__name__], "ROOT", tmp_path)
    assert circles(lazy=False) == set()
    assert circles(lazy=True) == {frozenset({"core.a", "core.b"})}
    (tmp_path / "core" / "b.py").write_text("import core.a\n")
    assert circles(lazy=False) == {frozenset({"core.a", "core.b"})}
    (tmp_path / "core" / "b.py").write_text("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from core.a import A\n")
    assert circles(lazy=False) == {frozenset({"core.a", "core.b"})}
