"""The training loop, readable in one sitting: setup, then one ACT step per iteration.

Per iteration (`train_step`): gather a batch on the device, run one ACT step (halted examples
take fresh data), backward, clip, AdamATan2 for the weights and sign-SGD for the puzzle
embedding, EMA update. Metrics stay on the device and are read back every `log_every` steps;
the EMA weights are swapped in for evaluation every `eval_interval` steps, then a checkpoint.
Everything that evolves during training lives in one `TrainState`, checkpointed together.
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
from training.checkpoint import MODEL_DATA_FIELDS, save_checkpoint
from training.config import Config, ConfigError
from training.ema import EMA
from training.evaluation import evaluate
from training.logger import RunLogger
from training.optim import AdamATan2, SignSGD, lr_at, set_lr

TRAIN_METRIC_KEYS = ("count", "accuracy", "exact_accuracy", "q_halt_accuracy", "steps", "lm_loss", "q_halt_loss", "grad_norm")


class TrainingDiverged(RuntimeError):
    """The loss became NaN or infinite."""


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


def rng_state() -> dict[str, Any]:
    state = {"python": random.getstate(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


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
    `train_step`, saved by `train_state_payload`."""

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
    step: int = 0
    train_seconds: float = 0.0
    carry: Optional[dict[str, torch.Tensor]] = None
    clip_params: list = field(default_factory=list)


def build_train_state(cfg: Config, progress: bool = True) -> TrainState:
    device = resolve_device(cfg.train.device)
    compiled = cfg.train.compile == "on" or (cfg.train.compile == "auto" and device.type == "cuda")
    if device.type == "cuda":
        torch.cuda.set_device(device)
        torch.set_float32_matmul_precision("high")
    seed_everything(cfg.train.seed)

    data = prepare_data(cfg, progress)
    resident = {"always": True, "never": False}.get(cfg.data.device_resident)
    if resident is None:
        resident = fits_on_device(data.train, device)
    model = build_model(cfg.arch, data.meta, device)
    o = cfg.optim
    weights = [p for name, p in model.named_parameters() if name != "puzzle_emb"]
    adam = AdamATan2(weights, lr=0.0, betas=(o.beta1, o.beta2), weight_decay=o.weight_decay)
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
        step_fn=torch.compile(loss_head, dynamic=False) if compiled else loss_head,
        adam=adam,
        sign=sign,
        ema=EMA(model, cfg.train.ema_rate) if cfg.train.ema else None,
        total_steps=total_steps_of(cfg, data),
        compiled=compiled,
        clip_params=weights,
    )


# ---------------------------------------------------------------------------------------------
# One step


def train_step(state: TrainState) -> torch.Tensor:
    """One ACT step and one optimizer update. Returns the step's metric sums as one device
    tensor (TRAIN_METRIC_KEYS order); nothing here waits for the device."""
    cfg, o = state.cfg, state.cfg.optim
    batch = state.train_arrays.gather(state.sampler.next_indices())
    if state.carry is None:
        state.carry = state.model.initial_carry(batch)
    state.carry, loss, metrics, _ = state.step_fn(state.carry, batch)
    (loss / cfg.train.global_batch_size).backward()
    grad_norm = torch.nn.utils.clip_grad_norm_(state.clip_params, o.grad_clip or math.inf, foreach=True)
    state.step += 1
    set_lr(state.adam, lr_at(state.step, o.lr, o.lr_warmup_steps, state.total_steps, o.lr_min_ratio))
    state.adam.step()
    state.adam.zero_grad(set_to_none=True)
    if state.sign is not None:
        set_lr(state.sign, lr_at(state.step, o.puzzle_emb_lr, o.lr_warmup_steps, state.total_steps, o.lr_min_ratio))
        state.sign.step()
        state.sign.zero_grad(set_to_none=True)
    if state.ema is not None:
        state.ema.update()
    return torch.stack([metrics[k].float() for k in TRAIN_METRIC_KEYS[:-1]] + [grad_norm.float()])


def run_evaluation(state: TrainState, save_path: Optional[Path], progress: bool = False) -> dict[str, float]:
    """Evaluate with the EMA weights swapped in (the model's own come back afterwards)."""
    cfg = state.cfg
    evaluators = [build_evaluator(spec, state.data.test_meta) for spec in cfg.evaluators]
    with state.ema.swapped() if state.ema is not None else nullcontext():
        return evaluate(state.step_fn, state.model, state.test_arrays, state.data.test.num_examples,
                        cfg.train.eval_batch_size or cfg.train.global_batch_size, evaluators,
                        save_path=save_path, progress=progress)


def train_state_payload(state: TrainState, wandb_id: Optional[str]) -> dict[str, Any]:
    """The checkpoint's tensors and plain data (loadable with weights_only=True)."""
    return {
        "model": state.model.state_dict(),
        "ema": state.ema.state_dict() if state.ema is not None else {},
        "optim": {"adam": state.adam.state_dict(), "sign": state.sign.state_dict() if state.sign is not None else {}},
        "state": {
            "step": state.step,
            "train_seconds": state.train_seconds,
            "sampler": state.sampler.state_dict(),
            "carry": {k: v.detach().cpu() for k, v in state.carry.items()} if state.carry is not None else {},
            "rng": rng_state(),
            "wandb_id": wandb_id,
        },
    }


def summarize_window(values: dict[str, float], steps: int, seconds: float, state: TrainState) -> dict[str, float]:
    batch_size = state.cfg.train.global_batch_size
    count = max(values["count"], 1.0)
    sampler = state.sampler
    return {
        "train/lm_loss": values["lm_loss"] / (batch_size * steps),
        "train/q_halt_loss": values["q_halt_loss"] / (batch_size * steps),
        "train/accuracy": values["accuracy"] / count,
        "train/exact_accuracy": values["exact_accuracy"] / count,
        "train/q_halt_accuracy": values["q_halt_accuracy"] / count,
        "train/steps": values["steps"] / count,
        "train/grad_norm": values["grad_norm"] / steps,
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
    state = build_train_state(cfg, progress)

    # ----- run directory and logging -------------------------------------------------------------
    project_dir = Path(cfg.logging.runs_dir) / cfg.logging.project
    run_name = cfg.logging.run_name or new_run_name(project_dir)
    run_dir = project_dir / run_name
    if run_dir.exists() and any(run_dir.iterdir()):
        raise ConfigError(f"logging.run_name={run_name}: {run_dir} already holds a run; choose another name")
    run_dir.mkdir(parents=True, exist_ok=True)
    config_dict = cfg.to_dict()
    (run_dir / "config.json").write_text(json.dumps(config_dict, indent=2) + "\n")
    logger = RunLogger(run_dir, cfg.logging.project, run_name, config_dict, cfg.logging.wandb_mode)
    data, device = state.data, state.device
    print(
        f"run {run_name}: {sum(p.numel() for p in state.model.parameters()) / 1e6:.2f}M params on {device}"
        f"{' (compiled)' if state.compiled else ''}, {data.train.num_examples} train / {data.test.num_examples} test "
        f"examples, {state.total_steps} steps of {cfg.train.global_batch_size}; run dir {run_dir}",
        flush=True,
    )
    dataset_facts = {f: getattr(data.meta, f) for f in MODEL_DATA_FIELDS} | {"path": str(data.path)}

    def evaluate_and_save() -> dict[str, float]:
        metrics = run_evaluation(state, run_dir / "eval" / f"step_{state.step:07d}", progress)
        if device.type == "cuda":
            metrics["perf/peak_memory_gib"] = torch.cuda.max_memory_allocated(device) / 2**30
        logger.log({**metrics, "train/seconds": state.train_seconds}, state.step)
        tqdm.write(f"step {state.step}: " + format_metrics(metrics, tuple(metrics)), file=sys.stdout)
        if cfg.train.save_checkpoints:
            save_checkpoint(run_dir, state.step, train_state_payload(state, logger.wandb_id), config_dict,
                            {"metrics": metrics, "dataset": dataset_facts}, cfg.train.keep_checkpoints)
        return metrics

    last_eval: dict[str, float] = {}
    if cfg.train.eval_at_start:
        last_eval = evaluate_and_save()
    window: Optional[torch.Tensor] = None
    window_steps, window_start, compile_seconds = 0, time.perf_counter(), None
    max_seconds = cfg.train.max_train_seconds
    bar = tqdm(total=state.total_steps, initial=state.step, desc=run_name, unit="step", mininterval=1.0, disable=not progress)
    try:
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
            if state.step % cfg.train.log_every == 0 or finished:
                values = dict(zip(TRAIN_METRIC_KEYS, window.tolist()))
                logged = summarize_window(values, window_steps, time.perf_counter() - window_start, state)
                if not (math.isfinite(logged["train/lm_loss"]) and math.isfinite(logged["train/grad_norm"])):
                    raise TrainingDiverged(
                        f"step {state.step}: training loss or gradient is not finite (lm_loss={logged['train/lm_loss']}, "
                        f"grad_norm={logged['train/grad_norm']}); lower optim.lr or check the data. "
                        f"Checkpoints before this step are intact in {run_dir / 'checkpoints'}"
                    )
                logger.log(logged, state.step)
                bar.set_postfix_str(format_metrics(logged, ("train/lm_loss", "train/accuracy", "train/exact_accuracy")))
                window, window_steps, window_start = None, 0, time.perf_counter()
            state.train_seconds += time.perf_counter() - t0

            # ----- evaluate with the EMA weights, then checkpoint ------------------------------
            if state.step % cfg.train.eval_interval == 0 or finished:
                last_eval = evaluate_and_save()
                window_start = time.perf_counter()
            if out_of_time:
                tqdm.write(f"stopping: train.max_train_seconds={max_seconds} reached at step {state.step}", file=sys.stdout)
                break
    finally:
        bar.close()
        logger.close()
    return {**last_eval, "step": state.step, "train_seconds": state.train_seconds,
            "perf/first_step_seconds": compile_seconds, "run_dir": str(run_dir)}
