"""Opening a run: which directory it writes to, what it starts from, and everything checked
before the first step.

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
`open_run` then builds the train state, checks what needs the data (evaluators, best_metric,
the batch), restores or warm-starts it, and only then creates the run directory, its
config.json and its logger.
"""

from __future__ import annotations

import json
import os
import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

import coolname

from dataset.common import open_lock_file
from evaluators import build_evaluators
from training.checkpoint import (
    MODEL_DATA_FIELDS, CheckpointError, CheckpointManager, check_data_compatible, list_checkpoints, load_checkpoint_files,
    load_config, load_meta, load_weights, resolve_checkpoint,
)
from training.config import Config, ConfigError, did_you_mean, flatten
from training.distributed import World
from training.ema import EMA
from training.evaluation import METRIC_NAMES as EVAL_METRICS
from training.inference import task_facts
from training.logger import RunLogger, truncate_metrics, write_text
from training.runs import locate_run
from training.setup import build_train_state
from training.state import TrainState

# Config sections a checkpoint's weights depend on. The data may move or be rebuilt; its
# shape facts (vocab_size, seq_len, identifiers) are checked against the checkpoint instead.
FIXED_SECTIONS = ("arch",)


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
    ckpt = resolve_checkpoint(locate_run(resume, cfg.logging.runs_dir, cfg.logging.project))  # path, name or wandb id
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


def check_resume_config(cfg: Config, ckpt: Path) -> list[str]:
    """Refuse a resume whose model differs from the checkpoint's; list other changed settings."""
    saved = flatten(load_config(ckpt))
    current = flatten(cfg.to_dict())
    changed = sorted(k for k in set(saved) | set(current) if saved.get(k) != current.get(k))
    fixed = [k for k in changed if k.split(".")[0] in FIXED_SECTIONS]
    if fixed:
        k = fixed[0]
        raise ConfigError(f"train.resume: {k}={current.get(k)!r} differs from the checkpoint's {saved.get(k)!r} "
                          f"({ckpt}); the model settings must match to resume")
    ignored = {"train.resume", "train.load_checkpoint", "logging.run_name"}
    return [f"{k}: {saved.get(k)!r} -> {current.get(k)!r}" for k in changed if k not in ignored]


def check_before_training(state: TrainState) -> None:
    """Everything about the config that needs the data, checked before a run directory exists:
    each evaluator fits the dataset, `best_metric` names a metric evaluation will report, the
    batch fits the training split."""
    cfg, data = state.cfg, state.data
    evaluators = build_evaluators(cfg.evaluators, data)
    if cfg.train.best_metric is not None:
        names = {f"eval/{k}" for k in EVAL_METRICS} | {f"eval/{ev.name}/{m}" for ev in evaluators for m in ev.metric_names()}
        if cfg.train.best_metric not in names:
            raise ConfigError(f"train.best_metric={cfg.train.best_metric!r} is not an evaluation metric of this run"
                              f"{did_you_mean(cfg.train.best_metric, sorted(names))}; available: {', '.join(sorted(names))}")
    world = state.world
    if data.test.num_examples < world.world_size:
        raise ConfigError(f"{data.path}: {data.test.num_examples} test examples cannot be shared by {world.world_size} ranks")
    if cfg.train.global_batch_size > data.train.num_examples:
        raise ConfigError(f"train.global_batch_size={cfg.train.global_batch_size} is larger than the training split "
                          f"of {data.path} ({data.train.num_examples} examples)")


RUN_FILES = ("config.json", "metrics.jsonl", "run.json")  # regular files a run writes at its top
RUN_DIRS = ("checkpoints", "eval", "wandb")


def check_run_dir(run_dir: Path) -> None:
    """What a run will write into must be what it looks like: no symbolic link out of the run
    at its top or among its checkpoints, evaluation outputs and wandb files (a write or a
    pruning would follow it), files that are regular files, directories that are directories."""
    if not run_dir.is_dir():
        return
    inside = run_dir.resolve()

    def refuse_links_out(entry: Path) -> None:  # wandb's own latest-run link points inside: fine
        if entry.is_symlink() and inside not in entry.resolve().parents:
            raise ConfigError(f"{entry}: is a symbolic link out of the run; a run writes only inside its own directory")

    for entry in run_dir.iterdir():
        refuse_links_out(entry)
    for name in RUN_FILES:
        path = run_dir / name
        if path.exists() and not path.is_file():
            raise ConfigError(f"{path}: is not a regular file (a run writes its {name} there)")
    for name in RUN_DIRS:
        path = run_dir / name
        if path.exists() and not path.is_dir():
            raise ConfigError(f"{path}: is not a directory (a run writes its {name} there)")
        if path.is_dir():
            for entry in path.iterdir():
                refuse_links_out(entry)


class RunLock:
    """An exclusive lock on a run directory, held while a run writes there: a second process
    with the same run name (a new run or a resume) is refused instead of interleaving its
    metrics and checkpoints with the first's."""

    def __init__(self, run_dir: Path):
        import fcntl

        self.fd = open_lock_file(run_dir / ".lock")
        try:
            fcntl.flock(self.fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(self.fd, 32, 0).decode(errors="replace").strip()
            os.close(self.fd)
            raise ConfigError(f"logging.run_name={run_dir.name}: another process (pid {holder or '?'}) is writing "
                              f"{run_dir}; wait for it or choose another name") from None
        os.ftruncate(self.fd, 0)
        os.pwrite(self.fd, f"{os.getpid()}\n".encode(), 0)

    def release(self) -> None:
        os.close(self.fd)  # closing drops the lock


@dataclass
class Run:
    """An opened run: its directory, state, logger and checkpoint policy."""

    plan: RunPlan
    state: TrainState
    logger: RunLogger
    checkpoints: CheckpointManager
    lock: Optional[RunLock] = None  # rank 0's hold on the run directory

    def close(self) -> None:
        self.logger.close()
        if self.lock is not None:
            self.lock.release()

    @property
    def dir(self) -> Path:
        return self.plan.run_dir


def restore(state: TrainState, ckpt: Path) -> list[str]:
    """Load checkpoint `ckpt` into `state` (every field checked first); returns log notes."""
    check_data_compatible(ckpt, load_meta(ckpt), state.data.meta, state.data.path)
    return state.load_state_dict(load_checkpoint_files(ckpt), source=ckpt)


def _start_writing(cfg: Config, plan: RunPlan, state: TrainState, config: dict[str, Any]) -> RunLogger:
    """Rank 0, holding the run's lock: set earlier metrics aside, write config.json, start the logger."""
    run_dir = plan.run_dir
    # In place: lines a crashed run logged past the checkpoint go aside. A new run in a directory
    # without a checkpoint (one stopped before its first save) moves its old lines aside.
    stale = truncate_metrics(run_dir, state.step if plan.in_place else -1)
    if stale:
        print(f"moved {stale} metric lines of an earlier attempt aside ({run_dir}/metrics.stale-*.jsonl)", flush=True)
    write_text(run_dir / "config.json", json.dumps(config, indent=2) + "\n")
    logger = RunLogger(run_dir, cfg.logging.project, run_dir.name, config, cfg.logging.wandb_mode, state.wandb_id)
    state.wandb_id = logger.wandb_id
    return logger


def open_run(cfg: Config, plan: RunPlan, world: World = World()) -> Run:
    """Every rank builds, checks and restores its state; rank 0 alone creates the run
    directory, writes config.json and logs."""
    if world.is_main:
        check_run_dir(plan.run_dir)  # cheap: before the dataset and the model are built
    state = build_train_state(cfg, cfg.logging.progress and world.is_main, world)
    check_before_training(state)
    run_dir = plan.run_dir
    if plan.resume_from is not None:
        notes = restore(state, plan.resume_from)
        if not plan.in_place:
            state.wandb_id = None  # a new run directory gets its own wandb run
        where = (f"resuming {run_dir} from {plan.resume_from.name}" if plan.in_place
                 else f"continuing {plan.resume_from} as run {run_dir}")
        print(f"{where} (step {state.step})" + "".join(f"\n  changed: {c}" for c in plan.changes)
              + "".join(f"\n  note: {n}" for n in notes), flush=True)
    elif plan.warm_start is not None:
        which = load_weights(state.model, plan.warm_start, use_ema=True)
        if state.ema is not None:
            state.ema = EMA(state.model, cfg.train.ema_rate, compile_update=state.compiled)
        print(f"initialised from {plan.warm_start} ({which} weights)", flush=True)

    # ----- only now, with everything checked: the run directory (rank 0) -----------------------
    config = cfg.to_dict()
    data = state.data
    dataset_facts = {f: getattr(data.meta, f) for f in MODEL_DATA_FIELDS} | {"path": str(data.path)}
    dataset_facts |= task_facts(data.meta)  # how solve.py and exports read and write the task's tokens
    checkpoints = CheckpointManager(run_dir, cfg.train, config, dataset_facts, world)
    if not world.is_main:
        return Run(plan, state, RunLogger(run_dir, cfg.logging.project, run_dir.name, config, "disabled",
                                          enabled=False), checkpoints)
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ConfigError(f"logging.runs_dir: cannot create {run_dir} ({exc.strerror or exc})") from exc
    lock = RunLock(run_dir)
    try:
        logger = _start_writing(cfg, plan, state, config)
    except BaseException:
        lock.release()
        raise
    print(
        f"run {run_dir.name}: {sum(p.numel() for p in state.model.parameters()) / 1e6:.2f}M params on {state.device}"
        f"{' (compiled)' if state.compiled else ''}, {data.train.num_examples} train / {data.test.num_examples} test "
        f"examples, {state.total_steps} steps of {cfg.train.global_batch_size}"
        f"{f' ({world.world_size} ranks of {state.sampler.local_batch_size})' if world.distributed else ''}; "
        f"run dir {run_dir}",
        flush=True,
    )
    return Run(plan, state, logger, checkpoints, lock)
