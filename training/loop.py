"""The training loop, readable in one sitting: setup, then one ACT step per iteration.

Per iteration (`train_step`): gather a batch on the device, run one ACT step (halted examples
take fresh data), backward, clip, AdamATan2 for the weights and sign-SGD for the puzzle
embedding, EMA update. A step whose loss or gradient is not finite is skipped on the device
(no update anywhere); too many in a row roll training back to the last checkpoint with a
lower LR. Metrics stay on the device and are read back every `log_every` steps; the EMA
weights are swapped in for evaluation every `eval_interval` steps, then a checkpoint. A
SIGTERM/SIGINT finishes the step, checkpoints and returns. Everything that evolves lives in
one `TrainState`, checkpointed together (training/resume.py).
"""

from __future__ import annotations

import json
import math
import random
import sys
import time
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional

import coolname
import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from dataset import build_dataset
from dataset.common import DatasetError, dataset_exists
from dataset.loader import DeviceArrays, PuzzleDataset, TrainSampler, fits_on_device
from evaluators import build_evaluator
from models import build_model
from models.losses import ACTLossHead
from training.checkpoint import (
    MODEL_DATA_FIELDS, check_data_compatible, list_checkpoints, load_meta, load_weights, resolve_checkpoint, save_checkpoint,
)
from training.config import Config, ConfigError, inductor_option
from training.ema import EMA
from training.evaluation import EvaluationInterrupted, evaluate
from training.examples import log_eval_examples
from training.inference import task_facts
from training.logger import RunLogger, truncate_metrics
from training.optim import AdamATan2, SignSGD, lr_at, set_lr
from training.preemption import StopSignal
from training.resume import check_resume_config, restore_train_state, resume_target, train_state_payload

TRAIN_METRIC_KEYS = ("count", "accuracy", "exact_accuracy", "q_halt_accuracy", "steps", "lm_loss", "q_halt_loss",
                     "grad_norm", "skipped")


class TrainingDiverged(RuntimeError):
    """Training kept producing non-finite losses or gradients."""


# ---------------------------------------------------------------------------------------------
# Setup


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    try:
        device = torch.device(name)
    except RuntimeError as exc:
        raise ConfigError(f"train.device={name!r}: not a device name ({exc})") from exc
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise ConfigError(f"train.device={name!r}: CUDA is not available on this machine")
        if device.index is None:
            device = torch.device("cuda", torch.cuda.current_device())
        elif device.index >= torch.cuda.device_count():
            raise ConfigError(f"train.device={name!r}: this machine has {torch.cuda.device_count()} CUDA device(s)")
    return device


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def prepare_data(cfg: Config, progress: bool) -> PuzzleDataset:
    """Load the dataset, building it first when the config names a builder and it is missing."""
    path = Path(cfg.data.path)
    if not dataset_exists(path):
        if cfg.data.builder is None:
            raise DatasetError(f"data.path={path}: no dataset there (and data.builder is not set to build one)")
        if path.exists() and any(path.iterdir()):
            raise DatasetError(f"data.path={path}: directory is not empty but holds no complete dataset; remove it to rebuild")
        print(f"Building dataset {path} (builder {cfg.data.builder!r})", flush=True)
        build_dataset(cfg.data.builder, cfg.data.build_args, path, progress=progress)
    return PuzzleDataset.load(path)


def total_steps_of(cfg: Config, data: PuzzleDataset) -> int:
    if cfg.train.max_steps is not None:
        return cfg.train.max_steps
    examples_per_epoch = data.train_meta.total_groups * data.train_meta.mean_puzzle_examples
    return max(1, int(cfg.train.epochs * examples_per_epoch / cfg.train.global_batch_size))


def new_run_name(project_dir: Path) -> str:
    """A fresh coolname slug, drawn from OS entropy so the training seed does not fix it."""
    coolname.replace_random(random.Random())
    for _ in range(100):
        name = coolname.generate_slug(2)
        if not (project_dir / name).exists():
            return name
    raise RuntimeError(f"no unused run name found in {project_dir}")


@dataclass
class TrainState:
    """Everything training needs and changes: built by `build_train_state`, advanced by
    `train_step`, saved and restored by training/resume.py."""

    cfg: Config
    device: torch.device
    data: PuzzleDataset
    train_arrays: DeviceArrays
    test_arrays: DeviceArrays
    sampler: TrainSampler
    model: nn.Module
    step_fn: Callable  # the (compiled) ACTLossHead
    adam: AdamATan2
    sign: Optional[SignSGD]
    ema: Optional[EMA]
    total_steps: int
    compiled: bool
    clip_params: list = field(default_factory=list)
    step: int = 0
    train_seconds: float = 0.0
    carry: Optional[dict[str, torch.Tensor]] = None
    lr_scale: float = 1.0  # lowered by each rollback
    rollbacks: int = 0
    skipped_steps: int = 0  # non-finite steps so far (read back at log time)
    best_value: Optional[float] = None
    bad_in_a_row: Optional[torch.Tensor] = None  # device counter of consecutive skipped steps


def configure_kernels(cfg: Config) -> None:
    """Apply train.inductor (torch._inductor.config options, process-wide) before compiling.
    Inductor's options are part of its cache keys; torch's global SDPA backend switches are not
    (a cached graph keeps the kernel it was compiled with), so there is no knob for those."""
    for name, value in cfg.train.inductor.items():
        setattr(*inductor_option(name), value)  # names were checked by the config's validation


def build_train_state(cfg: Config, progress: bool = True) -> TrainState:
    device = resolve_device(cfg.train.device)
    compiled = cfg.train.compile == "on" or (cfg.train.compile == "auto" and device.type == "cuda")
    if device.type == "cuda":
        torch.cuda.set_device(device)
        torch.set_float32_matmul_precision("high")
    configure_kernels(cfg)
    if cfg.train.num_threads is not None:
        torch.set_num_threads(cfg.train.num_threads)
    seed_everything(cfg.train.seed)

    data = prepare_data(cfg, progress)
    resident = {"always": True, "never": False}.get(cfg.data.device_resident)
    if resident is None:
        resident = fits_on_device(data.train, device)
    model = build_model(cfg.arch, data.meta, device)
    o = cfg.optim
    weights = [p for name, p in model.named_parameters() if name != "puzzle_emb"]
    adam = AdamATan2(weights, lr=0.0, betas=(o.beta1, o.beta2), weight_decay=o.weight_decay, compile_update=compiled)
    sign = None
    if getattr(model, "puzzle_emb", None) is not None:
        sign = SignSGD([model.puzzle_emb], lr=0.0, weight_decay=o.puzzle_emb_weight_decay)
    loss_head = ACTLossHead(model)
    return TrainState(
        cfg=cfg,
        device=device,
        data=data,
        train_arrays=DeviceArrays(data.train, data.train_meta, device, resident),
        test_arrays=DeviceArrays(data.test, data.test_meta, device, resident),
        sampler=TrainSampler(data.train, cfg.train.global_batch_size, cfg.train.seed),
        model=model,
        step_fn=torch.compile(loss_head, dynamic=False, mode=cfg.train.compile_mode) if compiled else loss_head,
        adam=adam,
        sign=sign,
        ema=EMA(model, cfg.train.ema_rate, compile_update=compiled) if cfg.train.ema else None,
        total_steps=total_steps_of(cfg, data),
        compiled=compiled,
        clip_params=weights,
        bad_in_a_row=torch.zeros((), dtype=torch.int32, device=device),
    )


# ---------------------------------------------------------------------------------------------
# One step


def train_step(state: TrainState) -> torch.Tensor:
    """One ACT step and one (possibly skipped) optimizer update. Returns the step's metric
    sums as one device tensor in TRAIN_METRIC_KEYS order; nothing here waits for the device."""
    cfg, o = state.cfg, state.cfg.optim
    batch = state.train_arrays.gather(state.sampler.next_indices())
    if state.carry is None:
        state.carry = state.model.initial_carry(batch)
    state.carry, loss, metrics, _ = state.step_fn(state.carry, batch)
    (loss / cfg.train.global_batch_size).backward()
    grad_norm = torch.nn.utils.clip_grad_norm_(state.clip_params, o.grad_clip or math.inf, foreach=True)
    ok = torch.isfinite(loss.detach()) & torch.isfinite(grad_norm)
    if state.sign is not None:
        ok = ok & torch.isfinite(state.model.puzzle_emb.grad).all()

    state.step += 1
    scale = state.lr_scale
    set_lr(state.adam, scale * lr_at(state.step, o.lr, o.lr_warmup_steps, state.total_steps, o.lr_min_ratio))
    state.adam.step(ok=ok)
    state.adam.zero_grad(set_to_none=True)
    if state.sign is not None:
        set_lr(state.sign, scale * lr_at(state.step, o.puzzle_emb_lr, o.lr_warmup_steps, state.total_steps, o.lr_min_ratio))
        state.sign.step(ok=ok)
        state.sign.zero_grad(set_to_none=True)
    if state.ema is not None:
        state.ema.update(ok=ok)
    # After a bad step every example restarts: the carried latent state may hold NaN.
    state.carry["halted"] = state.carry["halted"] | ~ok
    state.bad_in_a_row = torch.where(ok, 0, state.bad_in_a_row + 1)
    values = torch.stack([metrics[k].float() for k in TRAIN_METRIC_KEYS[:-2]] + [grad_norm.float()])
    return torch.cat([torch.where(ok, values, 0.0), (~ok).float().reshape(1)])


def eval_examples(cfg: Config, available: int) -> int:
    """How many test examples evaluation scores: all, or the first train.eval_max_examples."""
    return min(available, cfg.train.eval_max_examples or available)


def run_evaluation(state: TrainState, save_path: Optional[Path], progress: bool = False,
                   should_stop: Callable[[], bool] = lambda: False) -> dict[str, float]:
    """Evaluate with the EMA weights swapped in (the model's own come back afterwards)."""
    cfg = state.cfg
    evaluators = [build_evaluator(spec, state.data.test_meta) for spec in cfg.evaluators]
    with state.ema.swapped() if state.ema is not None else nullcontext():
        return evaluate(state.step_fn, state.model, state.test_arrays, eval_examples(cfg, state.data.test.num_examples),
                        cfg.train.eval_batch_size or cfg.train.global_batch_size, evaluators,
                        save_path=save_path, progress=progress, should_stop=should_stop,
                        halting=cfg.train.eval_halting)


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


# ---------------------------------------------------------------------------------------------
# The loop


def train(cfg: Config) -> dict[str, Any]:
    """Train as configured; returns the final evaluation metrics plus run facts."""
    progress = cfg.logging.progress
    project_dir = Path(cfg.logging.runs_dir) / cfg.logging.project
    resume = resume_target(cfg, project_dir)
    changes = check_resume_config(cfg, resume[1]) if resume else []
    init_ckpt = resolve_checkpoint(cfg.train.load_checkpoint) if cfg.train.load_checkpoint else None
    state = build_train_state(cfg, progress)

    # ----- run directory, restored state, logging --------------------------------------------
    wandb_id = None
    if resume:
        run_dir, ckpt = resume
        check_data_compatible(ckpt, load_meta(ckpt), state.data.meta, state.data.path)
        wandb_id = restore_train_state(state, ckpt).get("wandb_id")
        stale = truncate_metrics(run_dir, state.step)
        print(f"resuming {run_dir} from {ckpt.name} (step {state.step})"
              + (f"; moved {stale} metric lines past it aside" if stale else "")
              + "".join(f"\n  changed: {c}" for c in changes), flush=True)
    else:
        run_name = cfg.logging.run_name or new_run_name(project_dir)
        run_dir = project_dir / run_name
        if run_dir.exists() and any(run_dir.iterdir()):
            raise ConfigError(f"logging.run_name={run_name}: {run_dir} already holds a run; choose another name "
                              "or continue it with train.resume=true")
        if init_ckpt is not None:
            which = load_weights(state.model, init_ckpt, use_ema=True)
            if state.ema is not None:
                state.ema = EMA(state.model, cfg.train.ema_rate, compile_update=state.compiled)
            print(f"initialised from {init_ckpt} ({which} weights)", flush=True)
    run_dir.mkdir(parents=True, exist_ok=True)
    config_dict = cfg.to_dict()
    (run_dir / "config.json").write_text(json.dumps(config_dict, indent=2) + "\n")
    logger = RunLogger(run_dir, cfg.logging.project, run_dir.name, config_dict, cfg.logging.wandb_mode, wandb_id)
    data, device = state.data, state.device
    print(
        f"run {run_dir.name}: {sum(p.numel() for p in state.model.parameters()) / 1e6:.2f}M params on {device}"
        f"{' (compiled)' if state.compiled else ''}, {data.train.num_examples} train / {data.test.num_examples} test "
        f"examples, {state.total_steps} steps of {cfg.train.global_batch_size}; run dir {run_dir}",
        flush=True,
    )
    dataset_facts = {f: getattr(data.meta, f) for f in MODEL_DATA_FIELDS} | {"path": str(data.path)}
    dataset_facts |= task_facts(data.meta)  # how solve.py and exports read and write the task's tokens

    def save(metrics: dict[str, float], **meta: Any) -> None:
        if not cfg.train.save_checkpoints:
            return
        is_best = False
        if cfg.train.best_metric and cfg.train.best_metric in metrics:
            value, best = metrics[cfg.train.best_metric], state.best_value
            is_best = best is None or (value > best if cfg.train.best_mode == "max" else value < best)
            if is_best:
                state.best_value = value
        save_checkpoint(run_dir, state.step, train_state_payload(state, logger.wandb_id), config_dict,
                        {"metrics": metrics, "dataset": dataset_facts, **meta}, cfg.train.keep_checkpoints, is_best)

    def evaluate_and_save(stop: StopSignal) -> dict[str, float]:
        metrics = run_evaluation(state, run_dir / "eval" / f"step_{state.step:07d}", progress, lambda: stop.requested)
        if cfg.train.best_metric and cfg.train.best_metric not in metrics:
            raise ConfigError(f"train.best_metric={cfg.train.best_metric!r} is not an evaluation metric; "
                              f"available: {sorted(metrics)}")
        if device.type == "cuda":
            metrics["perf/peak_memory_gib"] = torch.cuda.max_memory_allocated(device) / 2**30
        logger.log({**metrics, "train/seconds": state.train_seconds}, state.step)
        log_eval_examples(logger, state)  # wandb only: a table and pictures of a few answers
        tqdm.write(f"step {state.step}: " + format_metrics(metrics, tuple(metrics)), file=sys.stdout)
        save(metrics)
        return metrics

    def roll_back() -> None:
        """Too many non-finite steps in a row: back to the last checkpoint, lower LR."""
        ckpts = list_checkpoints(run_dir)
        if not ckpts:
            raise TrainingDiverged(f"step {state.step}: {cfg.train.max_bad_steps} non-finite steps in a row and no "
                                   f"checkpoint to roll back to; lower optim.lr or check the data")
        if state.rollbacks >= cfg.train.max_rollbacks:
            raise TrainingDiverged(f"step {state.step}: still non-finite after {state.rollbacks} rollbacks "
                                   f"(train.max_rollbacks); last good checkpoint: {resolve_checkpoint(run_dir)}")
        ckpt = resolve_checkpoint(run_dir)
        rollbacks, lr_scale, skipped = state.rollbacks + 1, state.lr_scale * cfg.train.rollback_lr_factor, state.skipped_steps
        restore_train_state(state, ckpt)
        state.rollbacks, state.lr_scale, state.skipped_steps = rollbacks, lr_scale, skipped
        state.bad_in_a_row.zero_()
        logger.log({"train/rollbacks": rollbacks, "train/lr_scale": lr_scale}, state.step)
        tqdm.write(f"rolled back to {ckpt.name} (step {state.step}) with LR x{lr_scale:g} "
                   f"after {cfg.train.max_bad_steps} non-finite steps in a row", file=sys.stdout)

    last_eval: dict[str, float] = {}
    window: Optional[torch.Tensor] = None
    window_steps, window_start, compile_seconds, preempted = 0, time.perf_counter(), None, False
    max_seconds = cfg.train.max_train_seconds
    bar = tqdm(total=state.total_steps, initial=state.step, desc=run_dir.name, unit="step", mininterval=1.0,
               disable=not progress)
    try:
        with StopSignal() as stop:
            if cfg.train.eval_at_start and not resume:
                last_eval = evaluate_and_save(stop)
            while state.step < state.total_steps:
                t0 = time.perf_counter()
                stacked = train_step(state)
                window = stacked if window is None else window + stacked
                window_steps += 1
                bar.update(1)
                if compile_seconds is None:  # the first step includes compilation: time it once
                    if device.type == "cuda":
                        torch.cuda.synchronize(device)
                    compile_seconds = time.perf_counter() - t0
                    logger.log({"perf/first_step_seconds": compile_seconds}, state.step)

                # ----- read metrics back every log_every steps (the only regular host sync) -----
                out_of_time = max_seconds is not None and state.train_seconds + time.perf_counter() - t0 >= max_seconds
                finished = state.step >= state.total_steps or out_of_time
                if state.step % cfg.train.log_every == 0 or finished or stop.requested:
                    *sums, bad_in_a_row = torch.cat([window, state.bad_in_a_row.float().reshape(1)]).tolist()
                    values = dict(zip(TRAIN_METRIC_KEYS, sums))
                    logged = summarize_window(values, window_steps, time.perf_counter() - window_start, state)
                    state.skipped_steps += int(values["skipped"])
                    logger.log(logged, state.step)
                    bar.set_postfix_str(format_metrics(logged, ("train/lm_loss", "train/accuracy", "train/exact_accuracy")))
                    window, window_steps, window_start = None, 0, time.perf_counter()
                    if bad_in_a_row >= cfg.train.max_bad_steps:
                        roll_back()
                        bar.reset(total=state.total_steps)
                        bar.update(state.step)
                        continue
                state.train_seconds += time.perf_counter() - t0

                # ----- pre-emption: checkpoint now and stop ----------------------------------------
                if stop.requested:
                    save(last_eval, preempted=True)
                    preempted = True
                    tqdm.write(f"stopped at step {state.step}: checkpoint written; continue with train.resume=true "
                               f"logging.run_name={run_dir.name}", file=sys.stdout)
                    break

                # ----- evaluate with the EMA weights, then checkpoint ------------------------------
                if state.step % cfg.train.eval_interval == 0 or finished:
                    try:
                        last_eval = evaluate_and_save(stop)
                    except EvaluationInterrupted:
                        save(last_eval, preempted=True)
                        preempted = True
                        tqdm.write(f"stopped at step {state.step} during evaluation: checkpoint written", file=sys.stdout)
                        break
                    window_start = time.perf_counter()
                if out_of_time:
                    tqdm.write(f"stopping: train.max_train_seconds={max_seconds} reached at step {state.step}", file=sys.stdout)
                    break
    finally:
        bar.close()
        logger.close()
    return {**last_eval, "step": state.step, "train_seconds": state.train_seconds, "skipped_steps": state.skipped_steps,
            "rollbacks": state.rollbacks, "preempted": preempted, "perf/first_step_seconds": compile_seconds,
            "run_dir": str(run_dir)}
