"""Which run directory a training run writes to, and what it starts from.

A run writes only inside `runs_dir/<project>/<run name>` (both names are single path
components, checked by the config). The cases:
  new run           the name given (or a fresh coolname slug); a directory that already holds a
                    checkpoint is refused, one without (a run stopped before its first save) is
                    started again, its old metrics moved aside;
  train.resume=true continue `logging.run_name` in place from its latest checkpoint;
  train.resume=PATH read the checkpoint at PATH; if it belongs to the configured run directory
                    the run continues in place, otherwise the continued run is written to the
                    configured (or a fresh) run directory, never beside the checkpoint;
  load_checkpoint   a new run whose weights start from a checkpoint (read only).
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import coolname

from training.checkpoint import CheckpointError, list_checkpoints, resolve_checkpoint
from training.config import Config, ConfigError
from training.resume import check_resume_config


@dataclass
class RunPlan:
    run_dir: Path
    resume_from: Optional[Path] = None  # checkpoint whose whole train state is restored
    in_place: bool = False  # resume_from belongs to run_dir: keep its metrics and wandb run
    warm_start: Optional[Path] = None  # checkpoint whose (EMA) weights start a new run
    changes: list[str] = field(default_factory=list)  # settings that differ from the checkpoint's


def new_run_name(project_dir: Path) -> str:
    """A fresh coolname slug, drawn from OS entropy so the training seed does not fix it."""
    coolname.replace_random(random.Random())
    for _ in range(100):
        name = coolname.generate_slug(2)
        if not (project_dir / name).exists():
            return name
    raise ConfigError(f"no unused run name found in {project_dir}; set logging.run_name")


def has_checkpoint(run_dir: Path) -> bool:
    return (run_dir / "checkpoints" / "latest").is_file() or bool(list_checkpoints(run_dir))


def _refuse_if_taken(run_dir: Path) -> None:
    if has_checkpoint(run_dir):
        raise ConfigError(f"logging.run_name={run_dir.name}: {run_dir} already holds a run; choose another name "
                          "or continue it with train.resume=true")


def plan_run(cfg: Config) -> RunPlan:
    """Decide the run directory and starting point; nothing is written here."""
    project_dir = Path(cfg.logging.runs_dir) / cfg.logging.project
    resume, name = cfg.train.resume, cfg.logging.run_name
    if resume is False:
        run_dir = project_dir / (name or new_run_name(project_dir))
        _refuse_if_taken(run_dir)
        warm = resolve_checkpoint(cfg.train.load_checkpoint) if cfg.train.load_checkpoint else None
        return RunPlan(run_dir, warm_start=warm)
    if resume is True:
        if not name:
            raise ConfigError("train.resume=true needs logging.run_name (the run to continue), or give a path")
        run_dir = project_dir / name
        if not run_dir.is_dir():
            raise ConfigError(f"train.resume=true: no run directory {run_dir}")
        if not has_checkpoint(run_dir):
            raise ConfigError(f"train.resume=true: {run_dir} has no checkpoint (it stopped before its first save); "
                              "start it again without train.resume")
        ckpt = resolve_checkpoint(run_dir)
        return RunPlan(run_dir, resume_from=ckpt, in_place=True, changes=check_resume_config(cfg, ckpt))
    ckpt = resolve_checkpoint(resume)
    source_run = ckpt.parent.parent if ckpt.parent.name == "checkpoints" else None
    if name is None and source_run is not None and source_run.parent.resolve() == project_dir.resolve():
        name = source_run.name  # a checkpoint of a run in this project continues that run
    run_dir = project_dir / (name or new_run_name(project_dir))
    in_place = source_run is not None and run_dir.resolve() == source_run.resolve()
    if not in_place:
        if run_dir.resolve() == ckpt.resolve() or run_dir.resolve() in ckpt.resolve().parents:
            raise CheckpointError(f"train.resume={resume}: the checkpoint lies inside the run directory {run_dir}, "
                                  "which is not its run; copy it elsewhere first")
        _refuse_if_taken(run_dir)
    return RunPlan(run_dir, resume_from=ckpt, in_place=in_place, changes=check_resume_config(cfg, ckpt))
