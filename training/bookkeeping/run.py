"""Opening a run: which directory it writes to, what it starts from, and everything checked
before the first step.

A run writes only inside `runs_dir/<project>/<run name>` (both names are single path
components, checked by the config). The cases:
  new run           the name given (or a fresh coolname slug); a directory that already holds a
                    checkpoint is refused, one without (a run stopped before its first save) is
                    started again, its old metrics moved aside;
  train.resume=true continue `logging.run_name` in place from its latest checkpoint;
  train.resume=PATH read the checkpoint at PATH; the latest checkpoint of a run in this project
                    continues that run in place; an older one starts a new run, a fork
                    (`<run>-from-<step>`, its run.json names the parent), unless
                    train.rewind=true continues the run from it with its later checkpoints
                    moved aside (kept); a checkpoint elsewhere, or with another
                    logging.run_name, is continued in the configured (or a fresh) run
                    directory, never beside the checkpoint;
  load_checkpoint   a new run whose weights start from a checkpoint (read only).
A run is owned before any work (`plan_and_own`, rank 0): its directory created (a real
directory: no symbolic link at or below the runs dir), its lock taken, and the plan checked
again under the lock (a run that appeared, or a `latest` that moved, since planning is refused).
`open_run` then builds the train state (the dataset included), checks what needs the data
(evaluators, best_metric, the batch), restores or warm-starts it, and only then writes the
run's config.json and starts its logger; a launch refused before that removes the empty
directories it made, and only those.
"""

from __future__ import annotations

import fnmatch
import json
import os
import random
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

import coolname
import torch

from core.dicts import flatten
from core.errors import DatasetError, InputError, os_error_line
from core.paths import broken_link_text
from dataset.common import open_lock_file
from evaluators import build_evaluators
from training.engine.checkpoint import (
    MODEL_DATA_FIELDS, CheckpointError, CheckpointManager, check_data_compatible, list_checkpoints, load_checkpoint_files,
    load_config, load_meta, load_weights, resolve_checkpoint, set_aside_after,
)
from training.config import PATH_COMPONENT, Config, ConfigError, did_you_mean, validate_config
from training.engine.distributed import World, on_rank_zero
from training.files import replace_file
from training.engine.ema import EMA
from training.engine.evaluation import METRIC_NAMES as EVAL_METRICS
from training.inference import task_facts
from training.engine.threads import threads_text
from training.bookkeeping.logger import RunLogger, truncate_metrics, write_text
from training.bookkeeping.runs import locate_run, read_run_file
from training.engine.setup import build_train_state
from training.engine.state import TrainState

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
    latest: Optional[Path] = None  # in place: the run's latest checkpoint when planned (checked again once owned)
    rewind: bool = False  # in place from an older checkpoint: the later ones are moved aside first
    parent: Optional[dict[str, Any]] = None  # not in place, or a rewind: the run and checkpoint it continues (run.json)
    fork: bool = False  # an older checkpoint of a run, continued as a new run


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
    real_dir = run_dir.is_dir() and not run_dir.is_symlink()  # a link: check_real_dirs names it
    foreign = sorted(entry.name for entry in run_dir.iterdir() if not is_run_entry(entry.name)) if real_dir else []
    if foreign:  # a folder of the user's that happens to have the name: a run would write among their files
        more = f" and {len(foreign) - 1} more" if len(foreign) > 1 else ""
        raise ConfigError(f"logging.run_name={run_dir.name}: {run_dir} exists and holds files that are not a run's "
                          f"({foreign[0]!r}{more}); choose another name")


def is_run_entry(name: str) -> bool:
    """A name a run of this project writes at the top of its directory (its files and folders, its
    lock, metrics set aside on resume, an atomic write's temporary file of any of these, NFS's
    renamed open files): a directory holding only these (a run that stopped before its first
    checkpoint, say) may be started again."""
    if name.startswith(".") and ".tmp-" in name:  # an atomic write's temporary file of one of these
        name = name[1:name.index(".tmp-")]
    return (name in RUN_FILES or name in RUN_DIRS or name == ".lock" or name.startswith(".nfs")
            or fnmatch.fnmatchcase(name, "metrics.stale-*.jsonl"))


def fork_name(project_dir: Path, source: str, ckpt: str) -> str:
    """`<run>-from-<checkpoint>` (then -2, -3, ...): a fork's name says where it came from."""
    base = f"{source}-from-{ckpt}"
    for n in range(1, 1000):
        name = base if n == 1 else f"{base}-{n}"
        if PATH_COMPONENT.fullmatch(name) and not (project_dir / name).exists() and not (project_dir / name).is_symlink():
            return name
    return new_run_name(project_dir)


def latest_of(run_dir: Path) -> Optional[Path]:
    """The run's latest checkpoint; None when it has none or its `latest` cannot be followed."""
    if not has_checkpoint(run_dir):
        return None
    try:
        return resolve_checkpoint(run_dir)
    except CheckpointError:
        return None


def work_left(step: int, total_steps: int, meta: dict) -> bool:
    """True when a resume at `step` of a run that ends at `total_steps` has work left: steps to
    train, or the final step's evaluation that a stop interrupted (meta.json's eval_pending)."""
    return step < total_steps or (step == total_steps and bool(meta.get("eval_pending")))


def check_steps_left(cfg: Config, ckpt: Path) -> None:
    """A resume with train.max_steps at or below the checkpoint's step has nothing to train:
    said before any work, instead of an exit 0 that did nothing. A checkpoint whose evaluation a
    stop cut short may resume at its own step: that evaluation is what is left to do."""
    meta = load_meta(ckpt)
    step = meta.get("step", 0)
    if cfg.train.max_steps is not None and not work_left(step, cfg.train.max_steps, meta):
        raise ConfigError(f"train.max_steps={cfg.train.max_steps} is not above the step of the checkpoint it resumes "
                          f"from ({ckpt}, step {step}): nothing is left to train; set train.max_steps above {step}")


def plan_run(cfg: Config) -> RunPlan:
    """Decide the run directory and starting point; nothing is written here."""
    project_dir = Path(cfg.logging.runs_dir) / cfg.logging.project
    resume, name = cfg.train.resume, cfg.logging.run_name
    if resume is False:
        run_dir = project_dir / (name or new_run_name(project_dir))
        _refuse_if_taken(run_dir)
        warm = (resolve_checkpoint(locate_run(cfg.train.load_checkpoint, cfg.logging.runs_dir, cfg.logging.project))
                if cfg.train.load_checkpoint else None)  # a path, a run name or a wandb id
        return RunPlan(run_dir, warm_start=warm)
    if resume is True:
        if not name:
            raise ConfigError("train.resume=true needs logging.run_name (the run to continue), or give a path")
        run_dir = project_dir / name
        if not run_dir.is_dir():
            raise ConfigError(f"train.resume=true: no run directory {run_dir}")
        if not has_checkpoint(run_dir):
            holder = lock_holder(run_dir)
            if holder is not None:  # still before its first save, and still running
                raise ConfigError(f"train.resume=true: {run_dir} is in use by another process (pid {holder}), which "
                                  "has not saved a checkpoint yet; wait for it to finish or stop it first")
            raise ConfigError(f"train.resume=true: {run_dir} has no checkpoint (it stopped before its first save); "
                              "start it again without train.resume")
        ckpt = resolve_checkpoint(run_dir)
        changes = check_resume_config(cfg, ckpt)
        check_steps_left(cfg, ckpt)
        return RunPlan(run_dir, resume_from=ckpt, in_place=True, changes=changes, latest=ckpt)
    ckpt = resolve_checkpoint(locate_run(resume, cfg.logging.runs_dir, cfg.logging.project))  # path, name or wandb id
    source_run = ckpt.parent.parent if ckpt.parent.name == "checkpoints" else None
    in_project = source_run is not None and source_run.parent.resolve() == project_dir.resolve()
    latest = latest_of(source_run) if source_run is not None else None
    older = source_run is not None and (latest is None or latest.resolve() != ckpt.resolve())
    changes = check_resume_config(cfg, ckpt)
    check_steps_left(cfg, ckpt)
    fork = False
    if cfg.train.rewind:
        if not in_project or (name is not None and name != source_run.name):
            raise ConfigError(f"train.rewind=true: {ckpt} is not a checkpoint of the run logging.run_name="
                              f"{name or '(unset)'} in {project_dir}; a rewind continues the checkpoint's own run "
                              "(leave train.rewind out to continue it as another run)")
        # wandb drops steps that do not increase: a rewind logs to a new wandb run, its parent recorded.
        parent = {"run": str(source_run), "checkpoint": ckpt.name, "step": load_meta(ckpt).get("step", 0),
                  "rewind": True} if older else None
        return RunPlan(project_dir / source_run.name, resume_from=ckpt, in_place=True, changes=changes, latest=latest,
                       rewind=older, parent=parent)
    if in_project and older:
        if name == source_run.name:
            raise ConfigError(f"train.resume={resume}: {ckpt.name} is not the latest checkpoint of run {name} "
                              f"({latest.name if latest else 'unknown'}); add train.rewind=true to continue {name} from "
                              "it (its later checkpoints are moved aside, not deleted), or leave logging.run_name unset "
                              "to continue it as a new run (a fork)")
        if name is None:
            name, fork = fork_name(project_dir, source_run.name, ckpt.name), True
    elif name is None and in_project:
        name = source_run.name  # the latest checkpoint of a run in this project continues that run
    run_dir = project_dir / (name or new_run_name(project_dir))
    in_place = source_run is not None and run_dir.resolve() == source_run.resolve()
    parent = None
    if not in_place:
        if run_dir.resolve() == ckpt.resolve() or run_dir.resolve() in ckpt.resolve().parents:
            raise CheckpointError(f"train.resume={resume}: the checkpoint lies inside the run directory {run_dir}, "
                                  "which is not its run; copy it elsewhere first")
        _refuse_if_taken(run_dir)
        step = load_meta(ckpt).get("step", 0)
        parent = ({"run": str(source_run), "checkpoint": ckpt.name, "step": step} if source_run is not None
                  else {"checkpoint": str(ckpt), "step": step})
    return RunPlan(run_dir, resume_from=ckpt, in_place=in_place, changes=changes, latest=latest if in_place else None,
                   parent=parent, fork=fork)


def check_resume_config(cfg: Config, ckpt: Path) -> list[str]:
    """Refuse a resume whose model differs from the checkpoint's; list other changed settings."""
    raw = load_config(ckpt)
    saved = flatten(raw)
    try:  # a setting added since the checkpoint was saved (arch.norm) is not in its config.json: it ran as the default
        saved = {**flatten(validate_config(raw).to_dict()), **saved}
    except ConfigError:  # a config this code no longer reads: compared as it was written
        pass
    current = flatten(cfg.to_dict())
    changed = sorted(k for k in set(saved) | set(current) if saved.get(k) != current.get(k))
    fixed = [k for k in changed if k.split(".")[0] in FIXED_SECTIONS]
    if fixed:
        k = fixed[0]
        raise ConfigError(f"train.resume: {k}={current.get(k)!r} differs from the checkpoint's {saved.get(k)!r} "
                          f"({ckpt}); the model settings must match to resume")
    if "train.seed" in changed and not cfg.train.allow_seed_change:
        raise ConfigError(f"train.resume: train.seed={current.get('train.seed')!r} differs from the checkpoint's "
                          f"{saved.get('train.seed')!r} ({ckpt}): the sampler would draw another order mid-epoch, "
                          "revisiting some examples and skipping others; keep the seed, or set "
                          "train.allow_seed_change=true")
    ignored = {"train.resume", "train.load_checkpoint", "logging.run_name", "train.rewind", "train.allow_seed_change"}
    return [f"{k}: {saved.get(k)!r} -> {current.get(k)!r}" for k in changed if k not in ignored]


def check_before_training(state: TrainState) -> None:
    """Everything about the config that needs the data, checked before a run directory exists."""
    check_config_against_data(state.cfg, state.data, state.world)


def check_config_against_data(cfg: Config, data: Any, world: World) -> None:
    """The evaluation split (data.eval_split) exists, each evaluator fits it (its task, and a dry
    run on its labels), `best_metric` names a metric evaluation will report, the batch fits the
    training split. The run calls this through `check_before_training`, `pretrain.py --check`
    directly (`preflight`)."""
    try:
        _, eval_arrays = data.split(cfg.data.eval_split)
    except DatasetError as exc:
        raise DatasetError(f"data.eval_split={cfg.data.eval_split}: {exc}") from exc
    evaluators = build_evaluators(cfg.evaluators, data, cfg.data.eval_split)
    if cfg.train.best_metric is not None:
        names = {f"eval/{k}" for k in EVAL_METRICS} | {f"eval/{ev.name}/{m}" for ev in evaluators for m in ev.metric_names()}
        if cfg.train.best_metric not in names:
            raise ConfigError(f"train.best_metric={cfg.train.best_metric!r} is not an evaluation metric of this run"
                              f"{did_you_mean(cfg.train.best_metric, sorted(names))}; available: {', '.join(sorted(names))}")
    if eval_arrays.num_examples < world.world_size:
        raise ConfigError(f"{data.path}: {eval_arrays.num_examples} {cfg.data.eval_split} examples cannot be shared by "
                          f"{world.world_size} ranks")
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
    read_run_file(run_dir)  # a damaged run.json: one line now, before anything is written
    for name in RUN_DIRS:
        path = run_dir / name
        if path.exists() and not path.is_dir():
            raise ConfigError(f"{path}: is not a directory (a run writes its {name} there)")
        if path.is_dir():
            for entry in path.iterdir():
                refuse_links_out(entry)


class RunLock:
    """An exclusive lock on a run directory, held from before any work (the dataset build
    included) until the run ends: a second process with the same run name (a new run or a
    resume) is refused instead of interleaving its metrics and checkpoints with the first's.
    `made`: the directories this launch created, removed again (when still empty) by
    `release(abandon=True)` if it is refused before writing anything."""

    def __init__(self, run_dir: Path, made: tuple[Path, ...] = ()):
        self.path, self.made = run_dir / ".lock", made
        self.fd = self._take()
        if os.fstat(self.fd).st_nlink > 1:
            # A `cp -al` backup shares this file: lock a file of our own instead (taken while
            # still holding the shared one, so that exactly one launch wins), and never write
            # our pid into the backup's.
            shared = self.fd
            try:
                replace_file(self.path, b"")
                self.fd = self._take()
            finally:
                os.close(shared)
        os.ftruncate(self.fd, 0)
        os.pwrite(self.fd, f"{os.getpid()}\n".encode(), 0)

    def _take(self, attempts: int = 5) -> int:
        """Lock the file now at `.lock`. A lock taken on a file that another launch removed or
        replaced meanwhile (an abandon, a `cp -al` swap) guards nothing: that one is dropped and
        the file now there is locked instead, so two launches never both own the run."""
        import fcntl

        run_dir = self.path.parent
        for _ in range(attempts):
            fd = open_lock_file(self.path)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = os.pread(fd, 32, 0).decode(errors="replace").strip()
                os.close(fd)
                raise ConfigError(f"logging.run_name={run_dir.name}: another process (pid {holder or '?'}) is writing "
                                  f"{run_dir}; wait for it or choose another name") from None
            except BaseException:
                os.close(fd)
                raise
            try:
                now = os.lstat(self.path)
            except FileNotFoundError:
                now = None
            held = os.fstat(fd)
            if now is not None and (now.st_dev, now.st_ino) == (held.st_dev, held.st_ino):
                return fd
            os.close(fd)  # the file was removed or replaced after we opened it: take the one there now
        raise ConfigError(f"logging.run_name={run_dir.name}: {self.path} kept being removed or replaced by another "
                          "launch; wait for it or choose another name")

    def release(self, abandon: bool = False) -> None:
        """Drop the lock; with `abandon`, first remove the directories this launch made, if
        nothing but the lock file was written there."""
        try:
            if abandon and self.made:
                if os.fstat(self.fd).st_ino == os.lstat(self.path).st_ino:
                    os.unlink(self.path)
                remove_made_dirs(self.made)
        except OSError:
            pass  # not empty (another launch came in), or already gone: left as it is
        finally:
            os.close(self.fd)  # closing drops the lock


def lock_holder(run_dir: Path) -> Optional[str]:
    """The pid (as its lock file says; '?' when unreadable) of the process that holds the run's
    lock, None when no process does. Reads only: a missing lock file is not created."""
    import fcntl

    try:
        fd = os.open(run_dir / ".lock", os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except OSError:
        return None  # no lock file (or not one we can read): no run holds it
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return os.pread(fd, 32, 0).decode(errors="replace").strip() or "?"
    finally:
        os.close(fd)  # closing drops the shared lock we may have taken
    return None


def remove_made_dirs(made: tuple[Path, ...]) -> None:
    for path in reversed(made):
        os.rmdir(path)  # only an empty directory; OSError otherwise


def check_real_dirs(run_dir: Path) -> None:
    """The project and run directories must be real directories (or not exist yet): a symbolic
    link there would send every write, and every pruning, into the folder it names. The nearest
    level that exists must be a directory, and not a dangling symbolic link (or a loop of them),
    or the run directory cannot be made (`--check` says so before a run would, in the same line)."""
    for path in (run_dir.parent, run_dir):
        if path.is_symlink():
            raise ConfigError(f"{path}: is a symbolic link; a run writes only into a real directory inside "
                              "logging.runs_dir")
    for path in (run_dir, *run_dir.parents):
        if path.exists():
            if not path.is_dir():
                raise ConfigError(f"{path}: is not a directory; a run writes only into a real directory inside "
                                  "logging.runs_dir")
            break
        if path.is_symlink():  # no directory can be made through it (mkdir says only "No such file or directory")
            raise ConfigError(f"logging.runs_dir: cannot create {run_dir} ({broken_link_text(path)})")


def make_run_dir(run_dir: Path) -> tuple[Path, ...]:
    """Create the run directory (and missing parents); returns the ones created, outermost first."""
    check_real_dirs(run_dir)
    missing = []
    for path in (run_dir, *run_dir.parents):
        if path.exists() or path.is_symlink():
            break
        missing.append(path)
    made = []
    for path in reversed(missing):
        try:
            path.mkdir()
            made.append(path)
        except FileExistsError:
            continue  # another launch made this level meanwhile (it is not ours); the levels below still are
        except OSError as exc:
            remove_made_dirs_quietly(tuple(made))
            raise ConfigError(f"logging.runs_dir: cannot create {run_dir} ({exc.strerror or exc})") from exc
    for path in (run_dir.parent, run_dir):
        if path.is_symlink() or not path.is_dir():
            remove_made_dirs_quietly(tuple(made))
            raise ConfigError(f"{path}: is {'a symbolic link' if path.is_symlink() else 'not a directory'}; a run "
                              "writes only into a real directory inside logging.runs_dir")
    return tuple(made)


def remove_made_dirs_quietly(made: tuple[Path, ...]) -> None:
    try:
        remove_made_dirs(made)
    except OSError:
        pass  # another launch wrote there meanwhile: it is theirs now


def own_run(plan: RunPlan) -> RunLock:
    """Rank 0, before any work: make the run directory, take its lock, check what is inside,
    and check the plan again now that no other launch can change the run: a new run (or a
    fork) whose name a finished run took meanwhile, or an in-place resume whose `latest`
    moved, is refused instead of written into."""
    run_dir = plan.run_dir
    made = make_run_dir(run_dir)
    try:
        lock = RunLock(run_dir, made)
    except BaseException:
        remove_made_dirs_quietly(made)
        raise
    try:
        check_run_dir(run_dir)
        if not plan.in_place:
            _refuse_if_taken(run_dir)
        else:
            now = latest_of(run_dir)  # None for both: a rewind that repairs a broken `latest`
            if (now and now.resolve()) != (plan.latest and plan.latest.resolve()):
                raise ConfigError(f"logging.run_name={run_dir.name}: the latest checkpoint of {run_dir} changed "
                                  f"while this launch started ({plan.latest.name if plan.latest else 'none'} -> "
                                  f"{now.name if now else 'none'}); start it again")
    except BaseException:
        lock.release(abandon=True)
        raise
    return lock


def plan_and_own(cfg: Config, world: World) -> tuple[RunPlan, Optional[RunLock]]:
    """Plan the run and own it on rank 0, before anything is built; every rank gets the plan
    (or rank 0's one-line error). Returns rank 0's lock (None on the other ranks)."""
    held: list[RunLock] = []

    def plan_and_lock() -> RunPlan:
        try:
            plan = plan_run(cfg)
            held.append(own_run(plan))
        except OSError as exc:  # one line that every rank raises, not a traceback the others wait on
            raise ConfigError(os_error_line(exc)) from exc
        return plan

    plan = on_rank_zero(plan_and_lock, world)
    return plan, (held[0] if held else None)


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
    """Load checkpoint `ckpt` into `state` (every field checked first); returns log notes.
    With train.allow_seed_change the sampler continues with the configured seed."""
    check_data_compatible(ckpt, load_meta(ckpt), state.data.meta, state.data.path)
    notes = state.load_state_dict(load_checkpoint_files(ckpt), source=ckpt)
    seed = state.cfg.train.seed
    if state.cfg.train.allow_seed_change and state.sampler.seed != seed:
        notes.append(f"train.seed changed ({state.sampler.seed} -> {seed}): the sampler draws a new order from here "
                     "(train.allow_seed_change)")
        state.sampler.load_state_dict({**state.sampler.state_dict(), "seed": seed})
    return notes


def _start_writing(cfg: Config, plan: RunPlan, state: TrainState, config: dict[str, Any]) -> RunLogger:
    """Rank 0, holding the run's lock: set earlier metrics aside, write config.json, start the
    logger; a rewind moves the later checkpoints aside last, once everything that can refuse
    the launch has passed (a failed launch leaves the run as it was)."""
    run_dir = plan.run_dir
    # In place: lines a crashed run logged past the checkpoint go aside. A new run in a directory
    # without a checkpoint (one stopped before its first save) moves its old lines aside.
    stale = truncate_metrics(run_dir, state.step if plan.in_place else -1)
    if stale:
        print(f"moved {stale} metric lines of an earlier attempt aside ({run_dir}/metrics.stale-*.jsonl)", flush=True)
    write_text(run_dir / "config.json", json.dumps(config, indent=2) + "\n")
    logger = RunLogger(run_dir, cfg.logging.project, run_dir.name, config, cfg.logging.wandb_mode, state.wandb_id,
                       parent=plan.parent)
    if plan.rewind:
        try:
            kept = set_aside_after(run_dir, plan.resume_from)
        except BaseException:
            logger.close()
            raise
        print(f"rewinding run {run_dir.name} to {plan.resume_from.name} (train.rewind): its later checkpoints and "
              f"evaluation outputs were moved to {', '.join(str(k) for k in kept)}; it logs to a new wandb run "
              "(wandb keeps only increasing steps), its parent recorded in run.json", flush=True)
    state.wandb_id = logger.wandb_id
    return logger


def open_run(cfg: Config, plan: RunPlan, world: World = World(), lock: Optional[RunLock] = None) -> Run:
    """Every rank builds, checks and restores its state; rank 0, which owns the run already
    (`lock`, from `plan_and_own`), alone writes config.json and logs. If this fails, the
    directories the launch made are removed again when nothing was written there."""
    try:
        return _open_run(cfg, plan, world, lock)
    except BaseException:
        if lock is not None:
            lock.release(abandon=True)
        raise


def _open_run(cfg: Config, plan: RunPlan, world: World, lock: Optional[RunLock]) -> Run:
    if world.is_main and lock is None:
        raise RuntimeError("open_run: rank 0 must own the run first (plan_and_own)")
    state = build_train_state(cfg, cfg.logging.progress and world.is_main, world)
    check_before_training(state)
    run_dir = plan.run_dir
    if plan.resume_from is not None:
        notes = restore(state, plan.resume_from)
        if not work_left(state.step, state.total_steps, load_meta(plan.resume_from)):  # train.epochs (train.max_steps was checked when planning)
            field = "train.max_steps" if cfg.train.max_steps is not None else "train.epochs"
            value = cfg.train.max_steps if cfg.train.max_steps is not None else cfg.train.epochs
            raise ConfigError(f"{field}={value} ends at step {state.total_steps}, not after the step of the checkpoint "
                              f"it resumes from ({plan.resume_from}, step {state.step}): nothing is left to train")
        budget = cfg.train.max_train_seconds
        if (budget is not None and state.train_seconds >= budget
                and not load_meta(plan.resume_from).get("eval_pending")):  # a stop cut its last evaluation: that is left
            raise ConfigError(f"train.max_train_seconds={budget:g} is not above the training seconds of the checkpoint "
                              f"it resumes from ({plan.resume_from}, {state.train_seconds:.3f} s at step {state.step}): "
                              f"nothing is left to train; set train.max_train_seconds above {state.train_seconds:.3f}")
        if not plan.in_place or plan.rewind:
            state.wandb_id = None  # a new run directory, or a rewound run, gets its own wandb run
        if plan.in_place:
            where = f"resuming {run_dir} from {plan.resume_from.name}"
        elif plan.fork:
            where = (f"fork: {plan.resume_from} is not the latest checkpoint of its run, so it continues as the new "
                     f"run {run_dir} (train.rewind=true would continue the run itself)")
        else:
            where = f"continuing {plan.resume_from} as run {run_dir}"
        print(f"{where} (step {state.step})" + "".join(f"\n  changed: {c}" for c in plan.changes)
              + "".join(f"\n  note: {n}" for n in notes), flush=True)
    elif plan.warm_start is not None:
        which = load_weights(state.model, plan.warm_start, use_ema=True)
        if state.ema is not None:
            state.ema = EMA(state.model, cfg.train.ema_rate,
                            compile_update=state.compiled and cfg.train.compile_optimizer)
        print(f"initialised from {plan.warm_start} ({which} weights)", flush=True)

    # ----- only now, with everything checked: the run's files (rank 0, which owns the run) -----
    config = cfg.to_dict()
    data = state.data
    dataset_facts = {f: getattr(data.meta, f) for f in MODEL_DATA_FIELDS} | {"path": str(data.path)}
    dataset_facts |= task_facts(data.meta)  # how solve.py and exports read and write the task's tokens
    checkpoints = CheckpointManager(run_dir, cfg.train, config, dataset_facts, world)
    if not world.is_main:
        return Run(plan, state, RunLogger(run_dir, cfg.logging.project, run_dir.name, config, "disabled",
                                          enabled=False), checkpoints)
    logger = _start_writing(cfg, plan, state, config)
    lock.made = ()  # the run has written its files: a later failure keeps its directory
    print(
        f"run {run_dir.name}: {sum(p.numel() for p in state.model.parameters()) / 1e6:.2f}M params on {state.device}"
        f"{' (compiled)' if state.compiled else ''}"
        f"{f' ({threads_text(torch.get_num_threads())})' if state.device.type == 'cpu' else ''}, "
        f"{data.train.num_examples} train / {data.split(cfg.data.eval_split)[1].num_examples} "
        f"{cfg.data.eval_split} examples, {state.total_steps} steps of {cfg.train.global_batch_size}"
        f"{f' ({world.world_size} ranks of {state.sampler.local_batch_size})' if world.distributed else ''}, "
        f"seed {cfg.train.seed}; run dir {run_dir}",
        flush=True,
    )
    return Run(plan, state, logger, checkpoints, lock)


def preflight(cfg: Any) -> Path:
    """What `train` would refuse before its first step, checked before anything starts
    (train_lsa.sh calls this through `pretrain.py --check` before it opens a screen session),
    through the run's own check functions: the device, the dataset (or the build it would
    start), the batch and model cost bounds, the evaluators' dry run, best_metric, the batch
    against the data, and the same planning `train` does. No model is built and nothing is
    written. Returns the run directory the run will write."""
    from dataset.common import dataset_exists
    from dataset.loader import PuzzleDataset
    from training.engine.setup import check_batch_costs, check_missing_data, check_val_request, resolve_device

    if cfg.train.device != "auto":
        resolve_device(cfg.train.device)
    path = Path(cfg.data.path)
    check_val_request(cfg)
    if dataset_exists(path):
        data = PuzzleDataset.load(path)
        check_batch_costs(cfg, data.meta, World())
        check_config_against_data(cfg, data, World())
    else:
        check_missing_data(cfg, path)  # what the build would refuse; the checks that need the data run once it is built
        if path.exists() and (not path.is_dir() or any(path.iterdir())):
            raise DatasetError(f"data.path={path}: directory is not empty but holds no complete dataset; "
                               "remove it to rebuild")
    if cfg.train.resume is False and not cfg.logging.run_name:
        run_dir = Path(cfg.logging.runs_dir) / cfg.logging.project / "<generated name>"
    else:
        run_dir = plan_run(cfg).run_dir
    holder = lock_holder(run_dir)
    if holder is not None:  # the run would be refused when it takes the lock: say so now
        raise InputError(f"logging.run_name={run_dir.name}: another process (pid {holder}) is writing {run_dir}; "
                         "wait for it or choose another name")
    check_real_dirs(run_dir)  # a symbolic link as the project or run directory
    check_run_dir(run_dir)  # what the run writes into is what it looks like (read only here)
    if not dataset_exists(path):  # said once everything else passed: a refusal stays one line
        print(f"note: {path} will be built first (data.builder={cfg.data.builder}); the checks that need the data run "
              "then, before the first step", file=sys.stderr)
    return run_dir
