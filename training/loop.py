"""The training loop, readable in one sitting: open the run, then one ACT step per iteration.

Per iteration (`train_step`): gather a batch on the device, run one ACT step (halted examples
take fresh data), backward, clip, AdamATan2 for the weights and sign-SGD for the puzzle
embedding, EMA update. A step whose loss or gradient is not finite is skipped on the device
(no update anywhere); too many in a row roll training back to the last checkpoint with a
lower LR. Metrics stay on the device and are read back every `log_every` steps; the EMA
weights are swapped in for evaluation every `eval_interval` steps, then a checkpoint. A
SIGTERM/SIGINT finishes the step, checkpoints and returns.

Where the rest lives: training/bookkeeping/run.py opens a run (new, resumed, warm-started; every check
before the first step), training/engine/state.py is the train state that saves and restores itself,
training/engine/checkpoint.py the checkpoint policy and files, training/engine/setup.py builds the state.
"""

from __future__ import annotations

import math
import os
import sys
import time
import traceback
from contextlib import nullcontext, redirect_stdout
from pathlib import Path
from typing import Any, Callable, Optional

import torch
from tqdm import tqdm

from core.errors import ReportedError
from core.signals import Interrupted
from core.streams import reporting_stream, watch_output
from evaluators import build_evaluator
from training.engine.checkpoint import load_meta
from training.config import Config
from training.engine.evaluation import EvaluationInterrupted, evaluate
from training.engine.distributed import World, all_reduce_, check_same_everywhere, close_world, init_world, lost_peer
from training.bookkeeping.examples import log_eval_examples
from training.engine.optim import lr_at, lr_at_time, set_lr
from training.engine.preemption import StopSignal
from training.bookkeeping.run import Run, has_checkpoint, open_run, plan_and_own, restore
from training.engine.state import TrainState

TRAIN_METRIC_KEYS = ("count", "accuracy", "exact_accuracy", "q_halt_accuracy", "steps", "lm_loss", "q_halt_loss",
                     "grad_norm", "skipped")


class TrainingDiverged(ReportedError, RuntimeError):
    """Training kept producing non-finite losses or gradients."""


# ---------------------------------------------------------------------------------------------
# One step


def train_step(state: TrainState) -> torch.Tensor:
    """One ACT step and one (possibly skipped) optimizer update. Returns the step's metric
    sums as one device tensor in TRAIN_METRIC_KEYS order; nothing here waits for the device."""
    o = state.cfg.optim
    batch = state.train_arrays.gather(state.sampler.next_indices())
    if state.carry is None:
        state.carry = state.model.initial_carry(batch)
    state.carry, loss, metrics, _ = state.train_fn(state.carry, batch)
    # DDP averages gradients over ranks, so each rank divides by its own share of the batch.
    (loss / state.sampler.local_batch_size).backward()
    grad_norm = torch.nn.utils.clip_grad_norm_(state.clip_params, o.grad_clip or math.inf, foreach=True)
    # The gradients (and their norm) are the same on every rank after DDP's all-reduce; the loss
    # is reduced too, so that every rank takes the same skip decision.
    total_loss = all_reduce_(loss.detach().clone(), state.world) if state.world.distributed else loss.detach()
    ok = torch.isfinite(total_loss) & torch.isfinite(grad_norm)
    if state.sign is not None:
        ok = ok & torch.isfinite(state.model.puzzle_emb.grad).all()

    state.step += 1
    scale = state.lr_scale
    set_lr(state.adam, scale * scheduled_lr(state, o.lr))
    state.adam.step(ok=ok)
    state.adam.zero_grad(set_to_none=True)
    if state.sign is not None:
        set_lr(state.sign, scale * scheduled_lr(state, o.puzzle_emb_lr))
        state.sign.step(ok=ok)
        state.sign.zero_grad(set_to_none=True)
    if state.ema is not None:
        state.ema.update(ok=ok)
    # After a bad step every example restarts: the carried latent state may hold NaN.
    state.carry["halted"] = state.carry["halted"] | ~ok
    state.bad_in_a_row = torch.where(ok, 0, state.bad_in_a_row + 1)
    values = torch.stack([metrics[k].float() for k in TRAIN_METRIC_KEYS[:-2]] + [grad_norm.float()])
    return torch.cat([torch.where(ok, values, 0.0), (~ok).float().reshape(1)])


def scheduled_lr(state: TrainState, base_lr: float) -> float:
    """The LR schedule at the step being taken (state.step counts it), before a rollback's scale:
    the cosine over the planned steps (optim.lr_schedule_clock=steps), or over
    train.max_train_seconds by the clock agreed at the last log step (time). That clock, not the
    rank's own, also in one process: every rank takes the same LR, one rank and several follow one
    schedule, and a resumed run (the clock is checkpointed) the uninterrupted one's."""
    o = state.cfg.optim
    if o.lr_schedule_clock == "time":
        return lr_at_time(state.step, state.agreed_seconds, base_lr, o.lr_warmup_steps,
                          state.cfg.train.max_train_seconds, o.lr_min_ratio)
    return lr_at(state.step, base_lr, o.lr_warmup_steps, state.total_steps, o.lr_min_ratio)


def set_training_depth(state: TrainState) -> Optional[int]:
    """The depth curriculum (train.depth_curriculum) at this point of the run: its phase's cycle
    counts set on the model for the next training step (None in the last phase: the config's full
    depth); returns the phase, or None without a curriculum. Its clock: the steps done, or the
    training seconds (under torchrun the most any rank counted at the last log step, so that the
    ranks switch together)."""
    schedule = state.depth_schedule
    if schedule is None:
        return None
    seconds = state.agreed_seconds if state.world.distributed else state.train_seconds
    phase = schedule.phase(schedule.progress(state.step, state.total_steps, seconds))
    state.model.depth_override = None if phase == len(schedule.ends) else schedule.depths[phase]
    return phase


def eval_examples(cfg: Config, available: int) -> int:
    """How many examples of the evaluation split (data.eval_split) evaluation scores: all, or the first train.eval_max_examples."""
    return min(available, cfg.train.eval_max_examples or available)


def run_evaluation(state: TrainState, save_path: Optional[Path], progress: bool = False,
                   should_stop: Callable[[], bool] = lambda: False) -> dict[str, float]:
    """Evaluate with the EMA weights swapped in (the model's own come back afterwards). With
    several ranks each scores a contiguous shard (every example once) and the results are
    reduced; `should_stop` ends it early (EvaluationInterrupted; with several ranks all stop at
    the same batch)."""
    cfg, world = state.cfg, state.world
    meta, arrays = state.data.split(cfg.data.eval_split)
    evaluators = [build_evaluator(spec, meta) for spec in cfg.evaluators]
    batch_size = -(-(cfg.train.eval_batch_size or cfg.train.global_batch_size) // world.world_size)
    with state.ema.swapped() if state.ema is not None else nullcontext():
        return evaluate(state.step_fn, state.model, state.eval_arrays, eval_examples(cfg, arrays.num_examples),
                        batch_size, evaluators, save_path=save_path, rank=world.rank, world_size=world.world_size,
                        progress=progress and world.is_main,
                        should_stop=should_stop,
                        halting=cfg.train.eval_halting)


def read_back(window: torch.Tensor, state: TrainState, out_of_time: bool, stop: bool, save_time: bool = False,
              seconds: float = 0.0) -> tuple[dict[str, float], float, tuple[bool, bool, bool], float]:
    """The window's metric sums (over all ranks), the non-finite streak, whether any rank is
    out of time, was asked to stop, or finds a timed checkpoint due, and the most training
    `seconds` any rank counts (the agreed clock, TrainState.agreed_seconds): one host sync (and,
    with several ranks, two small all-reduces)."""
    flags = torch.tensor([float(out_of_time), float(stop), float(save_time), seconds], device=window.device)
    if state.world.distributed:
        window = all_reduce_(window.clone(), state.world)
        window[TRAIN_METRIC_KEYS.index("grad_norm"):] /= state.world.world_size  # the same on every rank
        all_reduce_(flags, state.world, "max")
    *sums, bad_in_a_row, any_out_of_time, any_stop, any_save_time, most_seconds = torch.cat(
        [window, state.bad_in_a_row.float().reshape(1), flags]).tolist()
    return (dict(zip(TRAIN_METRIC_KEYS, sums)), bad_in_a_row,
            (bool(any_out_of_time), bool(any_stop), bool(any_save_time)), most_seconds)


def summarize_window(values: dict[str, float], steps: int, seconds: float, state: TrainState) -> dict[str, float]:
    batch_size = state.cfg.train.global_batch_size
    count = max(values["count"], 1.0)
    good = max(steps - values["skipped"], 1.0)
    sampler = state.sampler
    return {
        "train/lm_loss": values["lm_loss"] / (batch_size * good),
        "train/q_halt_loss": values["q_halt_loss"] / (batch_size * good),
        "train/accuracy": values["accuracy"] / count,
        "train/exact_accuracy": values["exact_accuracy"] / count,
        "train/q_halt_accuracy": values["q_halt_accuracy"] / count,
        "train/steps": values["steps"] / count,
        "train/grad_norm": values["grad_norm"] / good,
        "train/skipped_steps": values["skipped"],
        "train/lr": state.adam.param_groups[0]["lr"],
        "train/steps_per_sec": steps / seconds,
        "train/samples_per_sec": steps * batch_size / seconds,
        "train/epoch": sampler.epoch + sampler.offset / max(1, len(sampler.epoch_order(sampler.epoch))),
    }


def format_metrics(metrics: dict[str, float], keys: tuple[str, ...]) -> str:
    return ", ".join(f"{k.split('/', 1)[-1]}={metrics[k]:.4g}" for k in keys if k in metrics)


def format_duration(seconds: float) -> str:
    """4321.0 -> '1h 12m'; 75 -> '1m 15s'; 9.5 -> '10s'."""
    seconds = max(0, round(seconds))
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours}h {minutes:02d}m"
    return f"{minutes}m {secs:02d}s" if minutes else f"{secs}s"


def seconds_left(state: TrainState, rate: float) -> float:
    """Training time left at `rate` steps/s: the steps left, or train.max_train_seconds if sooner."""
    left = (state.total_steps - state.step) / rate
    limit = state.cfg.train.max_train_seconds
    return min(left, max(0.0, limit - state.train_seconds)) if limit is not None else left


# A run planned longer than this at the speed measured is far beyond the device: say so once.
PACE_WARNING_SECONDS = 12 * 3600
PACE_STEPS = 10  # timed steps (the first, which compiles, excluded) before the speed is judged


def cpu_preset_projects() -> set[str]:
    """The wandb projects the CPU presets set (config/device/<preset>/cpu.yaml): a run in one of
    them was made with device=cpu. (A run does not record which config file it was composed from.)"""
    import yaml

    from training.config import CONFIG_DIR

    projects = set()
    for path in sorted((Path(CONFIG_DIR) / "device").glob("*/cpu.yaml")):
        project = ((yaml.safe_load(path.read_text()) or {}).get("logging") or {}).get("project")
        if project:
            projects.add(project)
    return projects


def pace_warning(state: TrainState, rate: float) -> Optional[str]:
    """One line when the run, at the speed its first steps showed, would take more than
    PACE_WARNING_SECONDS (e.g. the GPU preset cfg_lsa on a CPU); on a CPU, the task's CPU preset."""
    eta = seconds_left(state, rate)
    if eta <= PACE_WARNING_SECONDS:
        return None
    cfg = state.cfg
    # Under the time clock the budget is what ends the run and max_steps only caps it, unless the
    # cap comes first at this speed: then the steps are what to lower, as with the step clock.
    steps_eta = (state.total_steps - state.step) / rate
    by_time = cfg.optim.lr_schedule_clock == "time" and eta < steps_eta
    hint = "lower train.max_train_seconds" if by_time else "lower train.epochs or train.max_steps"
    if state.device.type == "cpu" and cfg.logging.project not in cpu_preset_projects():  # not a CPU preset already
        hint = f"use the task config's CPU preset (add device=cpu to the command), {hint}"
    if by_time:
        return (f"warning: train.max_train_seconds={cfg.train.max_train_seconds:g} at {rate:.3g} steps/s on "
                f"{state.device.type}: about {eta / 3600:.0f} h of training; {hint}")
    budget = "set" if cfg.train.max_train_seconds is None else "lower"
    return (f"warning: {state.total_steps - state.step} steps left at {rate:.3g} steps/s on {state.device.type}: about "
            f"{eta / 3600:.0f} h of training; {hint}, or {budget} train.max_train_seconds")


def progress_line(state: TrainState, logged: dict[str, float], rate: float) -> str:
    """The log's line every logging.progress_every steps (train_lsa.sh's log shows no bar frames).
    With optim.lr_schedule_clock=time, where train.max_steps is only a cap, its share of the budget."""
    budget = state.cfg.train.max_train_seconds
    where = (f"step {state.step} ({100 * state.train_seconds / budget:.1f}% of train.max_train_seconds={budget:g})"
             if state.cfg.optim.lr_schedule_clock == "time" else
             f"step {state.step}/{state.total_steps} ({100 * state.step / max(1, state.total_steps):.1f}%)")
    return (f"{where}: "
            f"loss {logged['train/lm_loss']:.4g}, accuracy {logged['train/accuracy']:.4g}, {rate:.3g} steps/s, "
            f"ETA {format_duration(seconds_left(state, rate))} of training (evaluations not counted)")


# ---------------------------------------------------------------------------------------------
# The loop


def train(cfg: Config) -> dict[str, Any]:
    """Train as configured; returns the final evaluation metrics plus run facts.

    Until the first training step has finished, SIGTERM/SIGINT raise `Interrupted` (there is
    nothing to checkpoint yet; a run directory without a checkpoint can be started again);
    afterwards they make the loop checkpoint and return (training/engine/preemption.py). Under
    torchrun every rank runs this; rank 0 alone prints, logs and writes the run directory."""
    world = init_world(cfg.train.device, cfg.train.dist_timeout_s)
    finished = False
    try:
        result = train_in_world(cfg, world)
        finished = True
        return result
    except BaseException as exc:
        if world.distributed:
            # The traceback's frames hold the run (its DDP model holds the process group): free
            # them now, so that the group is torn down below, not during interpreter shutdown.
            clear_traceback_frames(exc)
        raise
    finally:
        close_world(world, finished)


def clear_traceback_frames(exc: BaseException) -> None:
    """The locals of every frame in `exc`'s traceback and in those of its causes and contexts."""
    seen: set[int] = set()
    todo = [exc]
    while todo:
        current = todo.pop()
        if current is None or id(current) in seen:
            continue
        seen.add(id(current))
        traceback.clear_frames(current.__traceback__)
        todo += [current.__cause__, current.__context__]


def train_in_world(cfg: Config, world: World) -> dict[str, Any]:
    quiet = open(os.devnull, "w") if not world.is_main else None
    try:
        # A closed stdout or stderr (`| head`) stops the run as a signal does (its output has no reader).
        with StopSignal() as stop, watch_output(stop.output_closed), redirect_stdout(quiet) if quiet else nullcontext():
            plan = None
            try:
                check_same_everywhere("the config", cfg.to_dict(), world)
                plan, lock = plan_and_own(cfg, world)  # one run name for all ranks, owned before any work
                run = open_run(cfg, plan, world, lock)
                try:
                    result = run_loop(run, stop)
                finally:
                    run.close()
                # a signal after the last step (during the final save or the close) stopped nothing, but
                # it was sent: a -m sweep must not start its next job (pretrain.py reads this)
                return result | {"signal": stop.signum}
            except ReportedError:
                raise
            except Exception as exc:
                peer = lost_peer(exc, world)
                if peer is not None:
                    raise peer from exc
                if stop.signum is None or stop.deferred:
                    raise
                # Interrupted before the first step finished (possibly wrapped, e.g. by torch.compile).
                if plan is None:
                    detail = ""
                elif has_checkpoint(plan.run_dir):
                    detail = (" before the first training step finished; continue from its last checkpoint with "
                              f"train.resume=true logging.run_name={plan.run_dir.name}")
                else:
                    detail = restart_hint(plan.run_dir)
                raise Interrupted(stop.signum, detail, cause=stop.interrupted_by) from exc
    finally:
        if quiet is not None:
            quiet.close()


def restart_hint(run_dir: Path) -> str:
    """What starts a run stopped before its first checkpoint again: the same command with its
    name given (a generated name, or a fork's, would otherwise pick a new directory)."""
    return (f" before the first training step finished; {run_dir} has no checkpoint, so the same command with "
            f"logging.run_name={run_dir.name} starts it again")


def roll_back(run: Run) -> None:
    """Too many non-finite steps in a row: back to the last checkpoint, with a lower LR."""
    state, cfg = run.state, run.state.cfg
    ckpt = run.checkpoints.rollback_target()
    if ckpt is None:
        raise TrainingDiverged(f"step {state.step}: {cfg.train.max_bad_steps} non-finite steps in a row and no "
                               f"checkpoint to roll back to; lower optim.lr or check the data")
    if state.rollbacks >= cfg.train.max_rollbacks:
        raise TrainingDiverged(f"step {state.step}: still non-finite after {state.rollbacks} rollbacks "
                               f"(train.max_rollbacks); last good checkpoint: {ckpt}")
    rollbacks, lr_scale, skipped = state.rollbacks + 1, state.lr_scale * cfg.train.rollback_lr_factor, state.skipped_steps
    restore(state, ckpt)
    state.rollbacks, state.lr_scale, state.skipped_steps = rollbacks, lr_scale, skipped
    state.bad_in_a_row.zero_()
    run.logger.log({"train/rollbacks": rollbacks, "train/lr_scale": lr_scale}, state.step)
    tqdm.write(f"rolled back to {ckpt.name} (step {state.step}) with LR x{lr_scale:g} "
               f"after {cfg.train.max_bad_steps} non-finite steps in a row", file=sys.stdout)


def evaluate_and_save(run: Run, stop: StopSignal) -> dict[str, float]:
    state = run.state
    metrics = run_evaluation(state, run.dir / "eval" / f"step_{state.step:07d}", state.cfg.logging.progress,
                             lambda: stop.requested)
    if state.device.type == "cuda":
        metrics["perf/peak_memory_gib"] = torch.cuda.max_memory_allocated(state.device) / 2**30
    run.logger.log({**metrics, "train/seconds": state.train_seconds}, state.step,
                   labels={"eval_split": state.cfg.data.eval_split})
    log_eval_examples(run.logger, state)  # wandb only: a table and pictures of a few answers
    tqdm.write(f"step {state.step}: " + format_metrics(metrics, tuple(metrics)), file=sys.stdout)
    run.checkpoints.save(state, metrics, eval_split=state.cfg.data.eval_split)
    return metrics


def save_unevaluated(run: Run, last_eval_step: Optional[int], **meta: Any) -> None:
    """A save of weights no evaluation has seen (the cadence, a stop): its meta.json records no
    metrics (export.py copies them, pruning pins the newest checkpoint that has them), only the
    step of the evaluation before it."""
    run.checkpoints.save(run.state, {}, **({} if last_eval_step is None else {"last_eval_step": last_eval_step}), **meta)


def stopped_by(stop: StopSignal) -> str:
    """' (stdout closed)' when a closed stream stopped the run; a signal said so when it came."""
    return f" ({stop.cause})" if stop.cause else ""


def say_stopped(line: str) -> None:
    """The stop's line on stdout, or on stderr when stdout has lost its reader (for a run that a
    closed stdout stopped, the one line it prints about it; nothing, if both are closed)."""
    tqdm.write(line, file=reporting_stream("stdout"))


def run_loop(run: Run, stop: StopSignal) -> dict[str, Any]:
    state, logger, cfg = run.state, run.logger, run.state.cfg
    last_eval: dict[str, float] = {}
    last_eval_step: Optional[int] = None  # the step of `last_eval`
    window: Optional[torch.Tensor] = None
    window_steps, window_start, compile_seconds, preempted = 0, time.perf_counter(), None, False
    depth_phase: Optional[int] = None  # the depth curriculum's phase (train.depth_curriculum)
    # Progress lines and the pace check time training only (state.train_seconds), from after the first step.
    progress_every = cfg.logging.progress_every
    next_progress = (state.step // progress_every + 1) * progress_every if progress_every else None
    pace_from: Optional[tuple[int, float]] = None  # (step, train seconds) after the first step
    pace_checked = False
    max_seconds = cfg.train.max_train_seconds
    distributed = state.world.distributed
    bar = tqdm(total=state.total_steps, initial=state.step, desc=run.dir.name, unit="step", mininterval=1.0,
               disable=not (cfg.logging.progress and state.world.is_main))
    try:
        if cfg.train.eval_at_start and run.plan.resume_from is None:
            last_eval, last_eval_step = evaluate_and_save(run, stop), state.step
        elif run.plan.resume_from is not None and load_meta(run.plan.resume_from).get("eval_pending"):
            # A stop cut this step's evaluation short (or came before it): redo it before training on.
            tqdm.write(f"step {state.step}: redoing the evaluation that a stop interrupted", file=sys.stdout)
            last_eval, last_eval_step = evaluate_and_save(run, stop), state.step
        if cfg.optim.lr_schedule_clock == "time":
            tqdm.write(f"LR schedule: warm-up over {cfg.optim.lr_warmup_steps} steps, then a cosine to "
                       f"{cfg.optim.lr_min_ratio:g} x the LR over train.max_train_seconds={max_seconds:g} (the training "
                       f"clock at log steps); the {state.total_steps} planned steps only cap the run", file=sys.stdout)
        # A resume whose budget was already spent (its interrupted last evaluation redone above; without
        # one, opening the run refuses it) trains no step. Decided once, from the checkpointed seconds
        # every rank restored: inside the loop, the budget is decided together at log steps.
        budget_spent = max_seconds is not None and state.train_seconds >= max_seconds
        while state.step < state.total_steps and not budget_spent:
            t0 = time.perf_counter()
            phase = set_training_depth(state)
            if phase != depth_phase:
                depth_phase = phase
                tqdm.write(f"depth curriculum from step {state.step + 1}: {state.depth_schedule.describe(phase, state.total_steps)}",
                           file=sys.stdout)
            stacked = train_step(state)
            window = stacked if window is None else window + stacked
            window_steps += 1
            bar.update(1)
            if compile_seconds is None:  # the first step includes compilation: time it once
                if state.device.type == "cuda":
                    torch.cuda.synchronize(state.device)
                compile_seconds = time.perf_counter() - t0
                logger.log({"perf/first_step_seconds": compile_seconds}, state.step)
                stop.defer()  # from now on a signal means: finish this step, checkpoint, return

            # ----- read metrics back every log_every steps (the only regular host sync) -----
            # With several ranks, stopping (a signal, the time budget) is decided together, at log steps.
            local_out_of_time = max_seconds is not None and state.train_seconds + time.perf_counter() - t0 >= max_seconds
            out_of_time, stop_now = (False, False) if distributed else (local_out_of_time, stop.requested)
            finished = state.step >= state.total_steps or out_of_time
            save_time = False  # a timed checkpoint: decided at log steps, by all ranks together
            if state.step % cfg.train.log_every == 0 or finished or stop_now:
                values, bad_in_a_row, (out_of_time, stop_now, save_time), most_seconds = read_back(
                    window, state, local_out_of_time, stop.requested, run.checkpoints.minutes_passed(),
                    state.train_seconds + time.perf_counter() - t0)
                if state.step % cfg.train.log_every == 0:
                    # The agreed clock moves at log steps only: a read-back at the end or at a stop trains
                    # no step after it, and leaves the checkpoint the value a resumed run must continue with.
                    state.agreed_seconds = most_seconds
                finished = state.step >= state.total_steps or out_of_time
                logged = summarize_window(values, window_steps, time.perf_counter() - window_start, state)
                if depth_phase is not None:  # the depth of this window's last step: curves show the switches
                    logged.update({f"train/{k}": v for k, v in state.depth_schedule.depths[depth_phase].items()})
                state.skipped_steps += int(values["skipped"])
                logger.log(logged, state.step)
                bar.set_postfix_str(format_metrics(logged, ("train/lm_loss", "train/accuracy", "train/exact_accuracy")))
                window, window_steps, window_start = None, 0, time.perf_counter()
                seconds = state.train_seconds + time.perf_counter() - t0
                if pace_from is not None and seconds > pace_from[1] and state.step > pace_from[0]:  # not after a rollback
                    rate = (state.step - pace_from[0]) / (seconds - pace_from[1])
                    if not pace_checked and state.step - pace_from[0] >= PACE_STEPS:
                        pace_checked = True
                        warning = pace_warning(state, rate)
                        if warning:
                            tqdm.write(warning, file=sys.stdout)
                    if next_progress is not None and state.step >= next_progress:
                        tqdm.write(progress_line(state, logged, rate), file=sys.stdout)
                if next_progress is not None and state.step >= next_progress:
                    next_progress = (state.step // progress_every + 1) * progress_every
                if bad_in_a_row >= cfg.train.max_bad_steps:
                    roll_back(run)
                    bar.reset(total=state.total_steps)
                    bar.update(state.step)
                    continue
            state.train_seconds += time.perf_counter() - t0
            if pace_from is None:  # the first step compiles: speed is measured from after it
                pace_from = (state.step, state.train_seconds)

            # ----- pre-emption: checkpoint now and stop ----------------------------------------
            if stop_now:
                # An evaluation due at this step has not run: the checkpoint says so, and a resume runs it first.
                save_unevaluated(run, last_eval_step, preempted=True, eval_pending=run.checkpoints.due(state.step, finished))
                preempted = True
                say_stopped(f"stopped at step {state.step}{stopped_by(stop)}: checkpoint written; continue with "
                            f"train.resume=true logging.run_name={run.dir.name}")
                break

            # ----- evaluate with the EMA weights, then checkpoint ------------------------------
            if run.checkpoints.due(state.step, finished):
                try:
                    last_eval, last_eval_step = evaluate_and_save(run, stop), state.step
                except EvaluationInterrupted:
                    save_unevaluated(run, last_eval_step, preempted=True, eval_pending=True)
                    preempted = True
                    say_stopped(f"stopped at step {state.step} during evaluation{stopped_by(stop)}: checkpoint "
                                f"written (its evaluation runs first when you continue with train.resume=true "
                                f"logging.run_name={run.dir.name})")
                    break
                window_start = time.perf_counter()
            elif run.checkpoints.save_due(state.step, save_time):  # the run's own cadence, between evaluations
                save_unevaluated(run, last_eval_step)
            if out_of_time:
                tqdm.write(f"stopping: train.max_train_seconds={max_seconds} reached at step {state.step}", file=sys.stdout)
                break
    finally:
        bar.close()
    return {**last_eval, "step": state.step, "train_seconds": state.train_seconds, "skipped_steps": state.skipped_steps,
            "rollbacks": state.rollbacks, "preempted": preempted, "perf/first_step_seconds": compile_seconds,
            "run_dir": str(run.dir)}
