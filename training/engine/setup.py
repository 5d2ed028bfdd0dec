"""Building a fresh train state from a config: device, kernels, seeds, the dataset (built
first when missing), the model, optimizers, EMA and the (compiled) step function."""

from __future__ import annotations

import inspect
import random
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from torch.nn.parallel import DistributedDataParallel
from torch.torch_version import TorchVersion

from dataset import build_dataset, builder_config
from core.errors import DatasetError
from core.paths import broken_link_on, broken_link_text
from dataset.common import (
    MARKER, MARKER_FIELD, VAL_SIZE_ARG, VAL_SPLIT, build_lock, build_record, dataset_exists, read_metadata,
    recorded_build_args,
)
from dataset.loader import DeviceArrays, PuzzleDataset, TrainSampler, fits_on_device, missing_val_message
from models import build_model
from models.act import block_region, check_model_cost, check_step_cost
from models.layers import Block
from models.losses import ACTLossHead
from training.config import Config, ConfigError, check_inductor_options, inductor_option
from training.engine.curriculum import DepthSchedule
from training.engine.ema import EMA
from training.engine.optim import AdamATan2, SignSGD
from training.engine.distributed import World
from training.engine.state import TrainState
from training.engine.threads import apply_threads


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    try:
        device = torch.device(name)
    except RuntimeError as exc:
        raise ConfigError(f"train.device={name!r}: not a device name ({exc})") from exc
    if device.type not in ("cpu", "cuda"):
        raise ConfigError(f"train.device={name!r}: this project runs on cpu or cuda devices")
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


def build_differences(cfg: Config) -> list[str]:
    """How the dataset at data.path was built differently from what the config's builder
    and data.build_args (defaults included) would build now: ['n=3 (the config: 4)', ...].
    Empty when nothing differs, and for data this project's builders did not write. Datasets
    from before `build_args` was recorded are compared on the arguments they record by name."""
    meta_file = Path(cfg.data.path) / "train" / "dataset.json"
    if cfg.data.builder is None or not meta_file.is_file():
        return []
    recorded = read_metadata(meta_file).model_dump()
    if recorded.get(MARKER_FIELD) != MARKER:
        return []
    wanted = build_record(builder_config(cfg.data.builder, cfg.data.build_args, cfg.data.path))
    if isinstance(recorded.get("build_args"), dict):
        have, keys = recorded_build_args(cfg.data.path), list(wanted)  # val_size from val/dataset.json
    else:
        have, keys = recorded, [key for key in cfg.data.build_args if key in recorded and key in wanted]
    # A val/ the config does not ask for (val_size 0) is no difference: train/ and test/ are the
    # same files with and without it (dataset/writer.py).
    keys = [key for key in keys if not (key == VAL_SIZE_ARG and not wanted[key])]
    return [f"{key}={have.get(key)!r} (the config: {wanted[key]!r})" for key in keys if have.get(key) != wanted[key]]


def check_val_request(cfg: Config) -> None:
    """Before a dataset is loaded or built: a config that evaluates on val/ (data.eval_split=val)
    or asks for one (data.build_args.val_size > 0) gets the dataset it asks for, or one line
    saying why not. A dataset's val/ is part of its build: a val_size other than the one the
    dataset at data.path was built with is refused (never rebuilt in place), and the message
    names a new data.path; train/ and test/ of a build with val/ are the same files as without."""
    path = Path(cfg.data.path)
    wanted = 0
    if cfg.data.builder is not None:
        wanted = getattr(builder_config(cfg.data.builder, cfg.data.build_args, path), VAL_SIZE_ARG, 0)
    if dataset_exists(path):
        if cfg.data.builder is not None and wanted and (path / "train" / "dataset.json").is_file():
            recorded = read_metadata(path / "train" / "dataset.json").model_dump()
            if recorded.get(MARKER_FIELD) == MARKER and isinstance(recorded.get("build_args"), dict):
                have = recorded_build_args(path)[VAL_SIZE_ARG]
                if have != wanted:
                    raise DatasetError(
                        f"data.path={path} was built with {VAL_SIZE_ARG}={have} (the config: {wanted}); its val split "
                        f"is part of the build, so it is not rebuilt in place: set data.path to a new directory "
                        f"(e.g. data.path={path}-val{wanted}) to build one with train/ and test/ unchanged")
        if cfg.data.eval_split == VAL_SPLIT and not ((path / VAL_SPLIT).exists() or (path / VAL_SPLIT).is_symlink()):
            raise DatasetError(f"data.eval_split=val: {missing_val_message(path)}")
    elif cfg.data.eval_split == VAL_SPLIT and cfg.data.builder is not None and not wanted:
        raise DatasetError(f"data.eval_split=val: data.path={path} would be built without val/ "
                           f"(data.build_args.{VAL_SIZE_ARG} is 0); set data.build_args.{VAL_SIZE_ARG}=N")


def check_missing_data(cfg: Config, path: Path) -> None:
    """A dataset missing at data.path must be buildable there (`--check` and the run alike): the
    config names a builder and its arguments validate, and no symbolic link that leads nowhere
    (dangling, or a loop) stands at or above the path (one line naming the link, not "no dataset
    there", nor a build that would follow it)."""
    link = broken_link_on(path)
    if link is not None:
        raise DatasetError(f"data.path={path}: no dataset there, and none can be built there ({broken_link_text(link)})")
    if cfg.data.builder is None:
        raise DatasetError(f"data.path={path}: no dataset there (and data.builder is not set to build one)")
    builder_config(cfg.data.builder, cfg.data.build_args, path)  # bad arguments fail before anything is written


def prepare_data(cfg: Config, progress: bool) -> PuzzleDataset:
    """Load the dataset, building it first when the config names a builder and it is missing.
    Runs that need the same missing dataset wait for one builder (a lock beside it). Data
    that was built with other arguments than the config's is used as it is, with a note
    (except a different val_size, `check_val_request`)."""
    path = Path(cfg.data.path)
    check_val_request(cfg)
    built = False
    if not dataset_exists(path):
        check_missing_data(cfg, path)
        with build_lock(path):
            if not dataset_exists(path):  # another run may have built it while this one waited
                if path.exists() and any(path.iterdir()):
                    raise DatasetError(f"data.path={path}: directory is not empty but holds no complete dataset; "
                                       "remove it to rebuild")
                print(f"Building dataset {path} (builder {cfg.data.builder!r})", flush=True)
                build_dataset(cfg.data.builder, cfg.data.build_args, path, progress=progress)
                built = True
    if not built:
        differences = build_differences(cfg)
        if differences:  # e.g. data.build_args.n changed but data.path did not: say which data this is
            print(f"note: {path} was built with {', '.join(differences)}; training on it as it is", flush=True)
    return PuzzleDataset.load(path)


def total_steps_of(cfg: Config, data: PuzzleDataset) -> int:
    if cfg.train.max_steps is not None:
        return cfg.train.max_steps
    examples_per_epoch = data.train_meta.total_groups * data.train_meta.mean_puzzle_examples
    return max(1, int(cfg.train.epochs * examples_per_epoch / cfg.train.global_batch_size))


def apply_inductor_options(options: dict[str, Any]) -> None:
    """Set torch._inductor.config options (process-wide) before compiling; `options` passed the
    allow-list in training/config.py. Inductor's options are part of its cache keys; torch's
    global SDPA backend switches are not (a cached graph keeps the kernel it was compiled with),
    so there is no knob for those."""
    for name, value in check_inductor_options(options).items():
        setattr(*inductor_option(name), value)


def compile_step(loss_head: ACTLossHead, scope: str, mode: str = "default", depths: int = 1) -> Callable[..., Any]:
    """The ACT step, compiled as train.compile_scope says. Cold compile on one H200 (TRM,
    docs/BENCHMARKS.md, issue 18): "step" traces the recursion unrolled (42 block applications
    in one graph; ~59 s, the fastest steps); "region" keeps one graph but makes each block
    application a nested compile region (torch >= 2.8, else the same as "step"; ~47 s: the
    tracing still visits every call site); "blocks" compiles each block module alone (one graph
    per gradient mode, reused by every block and application) and runs the rest of the step
    eagerly (~17 s, ~3% slower steps).

    `depths`: the training depths a depth curriculum runs (train.depth_curriculum). Under
    "blocks" a depth changes nothing compiled (the same block graphs, the same shapes); under
    "step" and "region" Dynamo guards on the model's depth_override, so each depth is one more
    trace of the step: the recompile limit is raised by that many, so that none falls back to eager."""
    model = loss_head.model
    if scope != "blocks" and depths > 1:
        limit = "recompile_limit" if hasattr(torch._dynamo.config, "recompile_limit") else "cache_size_limit"
        setattr(torch._dynamo.config, limit, getattr(torch._dynamo.config, limit) + depths - 1)
    model.block_regions = scope == "region" and block_region is not None
    if scope == "blocks":
        # One graph for every block instance needs Dynamo to take a module's parameters as graph
        # inputs (inline_inbuilt_nn_modules, the default from torch 2.5 on; test_compile_scope.py
        # counts the frames). torch 2.4 guards each instance apart: past its recompile limit (8) the
        # transformer's other blocks would silently run eagerly.
        if TorchVersion(torch.__version__) < "2.5":  # later versions warn that the setting is always on
            torch._dynamo.config.inline_inbuilt_nn_modules = True
        for module in model.modules():
            if isinstance(module, Block):
                module.compile(dynamic=False, mode=mode)
        return loss_head
    return torch.compile(loss_head, dynamic=False, mode=mode)


def rank_device(name: str, world: World) -> str:
    """Under torchrun each rank takes the GPU of its local rank (or the CPU)."""
    if not world.distributed or name == "cpu":
        return name
    if name not in ("auto", "cuda"):
        raise ConfigError(f"train.device={name!r}: under torchrun each rank uses cuda:LOCAL_RANK (or the CPU); "
                          "set train.device=auto, cuda or cpu")
    return f"cuda:{world.local_rank}" if torch.cuda.is_available() else "cpu"


def check_batch_costs(cfg: Config, meta: Any, world: World) -> None:
    """Each rank's training and evaluation batch within MAX_STEP_FLOPS (models/act.py), before
    the model is built: a config whose sizes are each legal can still make one step take hours."""
    train_batch = cfg.train.global_batch_size // world.world_size
    eval_size = cfg.train.eval_batch_size or cfg.train.global_batch_size
    eval_field = "train.eval_batch_size" if cfg.train.eval_batch_size else "train.global_batch_size"
    try:
        check_model_cost(cfg.arch, meta.vocab_size, meta.seq_len, meta.num_puzzle_identifiers)
        check_step_cost(cfg.arch, meta.vocab_size, meta.seq_len, train_batch, True,
                        f"train.global_batch_size={cfg.train.global_batch_size}")
        check_step_cost(cfg.arch, meta.vocab_size, meta.seq_len, -(-eval_size // world.world_size), False,
                        f"{eval_field}={eval_size}")
    except ValueError as exc:
        raise ConfigError(str(exc)) from exc


def build_train_state(cfg: Config, progress: bool = True, world: World = World()) -> TrainState:
    """A fresh state. With several ranks the model is wrapped in DistributedDataParallel for
    training (`train_fn`); evaluation runs the unwrapped (compiled) step on each rank's shard."""
    if cfg.train.global_batch_size % world.world_size:
        raise ConfigError(f"train.global_batch_size={cfg.train.global_batch_size} is not divisible by the "
                          f"{world.world_size} ranks torchrun started")
    device = resolve_device(rank_device(cfg.train.device, world))
    compiled = cfg.train.compile == "on" or (cfg.train.compile == "auto" and device.type == "cuda")
    if device.type == "cuda":
        torch.cuda.set_device(device)
        torch.set_float32_matmul_precision("high")
    apply_inductor_options(cfg.train.inductor)
    apply_threads(cfg.train.num_threads)
    seed_everything(cfg.train.seed)

    data = prepare_data(cfg, progress)
    resident = {"always": True, "never": False}.get(cfg.data.device_resident)
    if resident is None:
        resident = fits_on_device(data.train, device)
    check_batch_costs(cfg, data.meta, world)
    model = build_model(cfg.arch, data.meta, device)
    o = cfg.optim
    weights = [p for name, p in model.named_parameters() if name != "puzzle_emb"]
    compile_update = compiled and cfg.train.compile_optimizer
    adam = AdamATan2(weights, lr=0.0, betas=(o.beta1, o.beta2), weight_decay=o.weight_decay,
                     compile_update=compile_update)
    sign = None
    if getattr(model, "puzzle_emb", None) is not None:
        sign = SignSGD([model.puzzle_emb], lr=0.0, weight_decay=o.puzzle_emb_weight_decay)
    loss_head = ACTLossHead(model)
    curriculum = cfg.train.depth_curriculum
    depths = 1 + (len(curriculum.phases) if curriculum is not None else 0)
    step_fn = compile_step(loss_head, cfg.train.compile_scope, cfg.train.compile_mode, depths) if compiled else loss_head
    train_fn = step_fn
    if world.distributed:  # the compiled module inside DDP, as PyTorch recommends
        # Buffers (initial states, rotary tables) never change: no need to sync them every step.
        quiet_buffers = ({"forward_sync_buffers": False} if "forward_sync_buffers" in
                         inspect.signature(DistributedDataParallel).parameters else {"broadcast_buffers": False})
        train_fn = DistributedDataParallel(step_fn, device_ids=[device.index] if device.type == "cuda" else None,
                                           **quiet_buffers)
    return TrainState(
        cfg=cfg,
        device=device,
        data=data,
        train_arrays=DeviceArrays(data.train, data.train_meta, device, resident),
        eval_arrays=DeviceArrays(*reversed(data.split(cfg.data.eval_split)), device, resident),
        sampler=TrainSampler(data.train, cfg.train.global_batch_size, cfg.train.seed, world.rank, world.world_size),
        model=model,
        step_fn=step_fn,
        train_fn=train_fn,
        world=world,
        adam=adam,
        sign=sign,
        ema=EMA(model, cfg.train.ema_rate, compile_update=compile_update) if cfg.train.ema else None,
        total_steps=total_steps_of(cfg, data),
        depth_schedule=(DepthSchedule(cfg.train.depth_curriculum, cfg.arch, cfg.train.max_train_seconds)
                        if cfg.train.depth_curriculum is not None else None),
        compiled=compiled,
        clip_params=weights,
        bad_in_a_row=torch.zeros((), dtype=torch.int32, device=device),
    )
