"""Dataset builders and the loader. Builders are looked up by name for configs that build
their dataset on first use (`data.builder`); they are imported lazily so that
`python -m dataset.build_X` runs each module once."""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import Any

# name -> (module, config class, build function)
BUILDERS: dict[str, tuple[str, str, str]] = {
    "lsa": ("dataset.build_lsa_dataset", "LSABuildConfig", "build_lsa_dataset"),
    "sudoku": ("dataset.build_sudoku_dataset", "SudokuBuildConfig", "build_sudoku_dataset"),
    "arith": ("dataset.build_arith_dataset", "ArithBuildConfig", "build_arith_dataset"),
}


def builder_config(builder: str, args: dict[str, Any], output_dir: Path | str, progress: bool = True):
    """The validated build config of `builder` for `args` (its CLI flags with underscores); a
    bad name or argument is a DatasetError naming it. Nothing is written."""
    import pydantic

    from core.errors import DatasetError, one_line

    if builder not in BUILDERS:
        raise DatasetError(f"data.builder={builder!r}: unknown builder; known: {sorted(BUILDERS)}")
    module_name, config_name, _ = BUILDERS[builder]
    module = importlib.import_module(module_name)
    try:
        return getattr(module, config_name).model_validate({**args, "output_dir": output_dir, "progress": progress})
    except pydantic.ValidationError as exc:
        raise DatasetError(f"data.build_args: {one_line(exc)}") from exc


def build_dataset(builder: str, args: dict[str, Any], output_dir: Path | str, progress: bool = True) -> Path:
    """Build dataset `builder` with `args` (its CLI flags with underscores) into `output_dir`."""
    cfg = builder_config(builder, args, output_dir, progress)
    module_name, _, fn_name = BUILDERS[builder]
    return getattr(importlib.import_module(module_name), fn_name)(cfg)
