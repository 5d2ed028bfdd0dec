"""The run configuration: Hydra composes YAML, this validates it before anything runs.

Every section forbids unknown keys, so a typo (`train.lrr`) fails at once with the field's
name instead of being silently ignored.

The typed models here (and each model family's config in models/) are the one place defaults
live. `register_configs` (run at import) builds Hydra's config tree from them into Hydra's
ConfigStore: the `base` config (every run section with its defaults, the `arch` group's default,
Hydra's own settings) and one `arch/<name>` option per registered model family. config/*.yaml
extend `base` and hold only what a recipe changes (tests/test_config_defaults.py refuses a YAML
that restates a default). A field without a default (data.path) is `???` in the tree: a config
or an override must set it.
"""

from __future__ import annotations

import difflib
import re
from pathlib import Path
from typing import Annotated, Any, Literal, Optional, Union

import pydantic
from pydantic import BaseModel, ConfigDict, Field, StrictInt
from pydantic_core import to_jsonable_python

from core.dicts import flatten
from core.errors import InputError, one_line
from models import DEFAULT_ARCH, MODELS, ArchConfig, validate_arch
from models.act import MAX_CYCLES


CUDA_GRAPH_MODES = ("reduce-overhead", "max-autotune")
# Measured on an H200 (docs/BENCHMARKS.md): the ACT carry that one step returns is the next step's
# input, and CUDA-graph replays overwrite it ("accessing tensor output of CUDAGraphs that has been
# overwritten"); the most they could win is the GPU's idle time, ~2.7% of a step.
CUDA_GRAPHS_REFUSED = "the training loop does not support CUDA graphs (the ACT carry crosses steps)"


# The torch._inductor.config options a config may set: tuning switches and sizes, each a bool
# or an int. Others are refused: some name programs or code to run (`cpp.cxx` picks a compiler
# binary), so a config or checkpoint that could set any option could run anything.
INDUCTOR_BOOL_OPTIONS = frozenset({
    "coordinate_descent_tuning", "coordinate_descent_check_all_directions", "max_autotune", "max_autotune_pointwise",
    "max_autotune_gemm", "epilogue_fusion", "epilogue_fusion_first", "aggressive_fusion", "benchmark_fusion",
    "benchmark_epilogue_fusion", "shape_padding", "comprehensive_padding", "pad_outputs", "split_reductions",
    "permute_fusion", "group_fusion", "pattern_matcher", "layout_optimization", "freezing", "loop_ordering_after_fusion",
    "inplace_buffers", "allow_buffer_reuse", "triton.cudagraphs", "triton.unique_kernel_names",
    "triton.autotune_pointwise", "triton.persistent_reductions", "triton.cooperative_reductions",
    "triton.prefer_nd_tiling", "triton.use_block_ptr", "triton.autotune_cublasLt",
})
INDUCTOR_INT_OPTIONS = frozenset({
    "coordinate_descent_search_radius", "max_fusion_size", "max_pointwise_cat_inputs", "unroll_reductions_threshold",
    "realize_reads_threshold", "score_fusion_memory_threshold", "triton.multi_kernel", "max_epilogue_benchmarked_choices",
})


def check_inductor_options(options: dict[str, Any]) -> dict[str, Any]:
    """Flatten {triton: {x: 1}} to {triton.x: 1} and check every name against the allow-list,
    its type and this torch; raises ValueError naming the option."""
    import torch

    flat = flatten(options)
    for name, value in flat.items():
        if name in INDUCTOR_BOOL_OPTIONS:
            if not isinstance(value, bool):
                raise ValueError(f"{name}={value!r}: expected true or false")
        elif name in INDUCTOR_INT_OPTIONS:
            if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= 1 << 20:
                raise ValueError(f"{name}={value!r}: expected an integer in 0..{1 << 20}")
        else:
            raise ValueError(f"{name!r} is not an allowed inductor option (allowed: tuning switches such as "
                             "coordinate_descent_tuning, max_autotune, epilogue_fusion, max_fusion_size; "
                             "see INDUCTOR_BOOL_OPTIONS in training/config.py)")
        if inductor_option(name) is None:
            raise ValueError(f"{name!r} is not a torch._inductor.config option in torch {torch.__version__}")
    if flat.get("triton.cudagraphs"):
        raise ValueError(f"triton.cudagraphs=true: {CUDA_GRAPHS_REFUSED}")
    return flat


def inductor_option(name: str) -> Optional[tuple[Any, str]]:
    """(config object, attribute) for a dotted torch._inductor.config option, None if there is none."""
    import torch._inductor.config as target

    *parents, leaf = name.split(".")
    for part in parents:
        target = getattr(target, part, None)
    return (target, leaf) if target is not None and hasattr(target, leaf) else None


# Bounds on the run's counts and sizes (the model's own are in models/act.py): generous, but finite,
# so that no value read from a config or a checkpoint's config.json makes a step or a loop endless.
MAX_BATCH_SIZE = 1 << 20
MAX_EXAMPLES = 10**12  # eval_max_examples
MAX_STEPS = 10**12  # max_steps, lr_warmup_steps, eval_interval, log_every
MAX_EPOCHS = 1e9
MAX_SECONDS = 1e9  # max_train_seconds (~30 years)
MAX_DIST_TIMEOUT_S = 7 * 86400.0
MAX_THREADS = 4096
MAX_COUNT = 10**6  # keep_checkpoints, max_bad_steps, max_rollbacks
MAX_WANDB_EXAMPLES = 256
MAX_GRAD_CLIP = 1e9


class ConfigError(InputError):
    """Invalid configuration; the message names the field."""


class Strict(BaseModel):
    # Unknown keys are errors; so are inf and NaN (`optim.lr=inf` would train on nonsense).
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)


class DataConfig(Strict):
    path: str = Field(min_length=1, pattern=r"\S", description="dataset directory (train/, test/)")
    builder: Optional[str] = Field(None, description="builder to run when `path` holds no dataset (a task name)")
    build_args: dict[str, Any] = Field(default_factory=dict, description="arguments for the builder (its flags, with _)")
    eval_split: Literal["test", "val"] = Field("test", description="the split evaluation, the evaluators and "
                                               "train.best_metric use: test, or val (a dataset built with val_size > 0; "
                                               "choose recipes on val, read test once per shipped recipe)")
    device_resident: Literal["auto", "always", "never"] = "auto"


class OptimConfig(Strict):
    lr: float = Field(1e-4, gt=0, le=10)
    lr_min_ratio: float = Field(1.0, ge=0, le=1)
    lr_warmup_steps: int = Field(2000, ge=0, le=MAX_STEPS, description="linear warm-up over this many steps "
                                 "(with either lr_schedule_clock)")
    lr_schedule_clock: Literal["steps", "time"] = Field(
        "steps", description="what the cosine decay (to lr * lr_min_ratio) runs over: steps: the planned steps "
        "after the warm-up (train.max_steps or epochs); time: train.max_train_seconds (needs it), by the training "
        "clock the budget and the depth curriculum count (the first step's compile included, evaluations excluded; "
        "the value all ranks agreed at the last log step, train.log_every), the cosine times the warm-up's ramp, so "
        "the LR ends near its floor when the budget does, however many steps fit; train.max_steps then only caps "
        "the steps and may be set high (docs/USAGE.md, training/engine/optim.py: lr_at_time)")
    weight_decay: float = Field(1.0, ge=0, le=1e3)
    beta1: float = Field(0.9, ge=0, lt=1)
    beta2: float = Field(0.95, ge=0, lt=1)
    puzzle_emb_lr: float = Field(1e-4, ge=0, le=10)
    puzzle_emb_weight_decay: float = Field(1.0, ge=0, le=1e3)
    grad_clip: Optional[float] = Field(1.0, gt=0, le=MAX_GRAD_CLIP, description="max global gradient norm; null = no clipping")


MAX_DEPTH_PHASES = 8  # depth_curriculum.phases (compile_scope step/region compiles the step once per depth)


class DepthPhase(Strict):
    """One phase of a depth curriculum: lower cycle counts until a point of the run."""

    until: float = Field(gt=0, le=1, description="the phase lasts while the run's progress (the fraction of "
                         "train.max_train_seconds or of the planned steps spent: depth_curriculum.by) is below this")
    H_cycles: Optional[int] = Field(None, ge=1, le=MAX_CYCLES, description="null: the arch's H_cycles")
    L_cycles: Optional[int] = Field(None, ge=1, le=MAX_CYCLES, description="null: the arch's L_cycles")

    @pydantic.model_validator(mode="after")
    def _sets_a_depth(self) -> "DepthPhase":
        if self.H_cycles is None and self.L_cycles is None:
            raise ValueError(f"the phase until {self.until:g} sets neither H_cycles nor L_cycles")
        return self


class DepthCurriculum(Strict):
    """train.depth_curriculum: training recurses less deeply early on, then at the arch's full
    depth (evaluation always at full depth). `by`: what `until` is a fraction of."""

    by: Literal["time", "steps"] = Field(description="time: of train.max_train_seconds (training time, the first "
                                         "step's compile included, as the budget counts it); steps: of the planned "
                                         "steps (train.max_steps or epochs)")
    phases: list[DepthPhase] = Field(min_length=1, max_length=MAX_DEPTH_PHASES, description="in order; after the "
                                     "last one's `until` the arch's own cycle counts apply")

    @pydantic.model_validator(mode="after")
    def _in_order(self) -> "DepthCurriculum":
        for i in range(1, len(self.phases)):
            if self.phases[i].until <= self.phases[i - 1].until:
                raise ValueError(f"phases[{i}].until={self.phases[i].until:g} is not after phases[{i - 1}].until="
                                 f"{self.phases[i - 1].until:g} (the phases are listed in the order they run)")
        return self


class TrainConfig(Strict):
    seed: int = Field(0, ge=0, le=2**32 - 1, description="numpy and torch take seeds in 0..2**32-1")
    global_batch_size: int = Field(768, ge=1, le=MAX_BATCH_SIZE)
    eval_batch_size: Optional[int] = Field(
        None, ge=1, le=MAX_BATCH_SIZE, description="largest evaluation batch (default: global_batch_size); batches are evened out")
    epochs: Optional[float] = Field(None, gt=0, le=MAX_EPOCHS, description="length in epochs (one group visit each)")
    max_steps: Optional[int] = Field(None, ge=1, le=MAX_STEPS, description="length in optimizer steps (overrides epochs)")
    max_train_seconds: Optional[float] = Field(None, gt=0, le=MAX_SECONDS, description="stop after this much training wall time")
    eval_interval: int = Field(1000, ge=1, le=MAX_STEPS, description="evaluate (and checkpoint) every N steps and at the end")
    eval_at_start: bool = False
    eval_max_examples: Optional[int] = Field(
        None, ge=1, le=MAX_EXAMPLES, description="score only the first N test examples (null: all); for quick runs")
    eval_halting: Literal["max_steps", "q_head"] = Field(
        "max_steps", description="which answer counts: the last of halt_max_steps steps, or the one where the Q head halts")
    log_every: int = Field(50, ge=1, le=MAX_STEPS, description="read metrics back from the device every N steps")
    ema: bool = True
    ema_rate: float = Field(0.999, ge=0, lt=1)
    device: str = Field("auto", description="auto, cpu, cuda, cuda:N")
    num_threads: Optional[Union[Literal["auto"], Annotated[StrictInt, Field(ge=1, le=MAX_THREADS)]]] = Field(
        "auto", description="CPU threads for torch, in training and every script that runs the model: auto "
        "(OMP_NUM_THREADS if set, else torch's default lowered to the cores the load average leaves free; "
        "training/engine/threads.py), N, or null (torch's own setting)")
    compile: Literal["auto", "on", "off"] = "auto"
    compile_scope: Literal["blocks", "region", "step"] = Field(
        "blocks", description="blocks: torch.compile on each block (compiled once, reused at every application), "
        "the rest of the step eager: the fastest cold compile; region: the whole step in one graph, each block "
        "application a nested compile region (torch >= 2.8; older torch compiles the step unrolled); step: the "
        "step unrolled into one graph, every block application compiled anew: the slowest compile, the fastest steps")
    compile_optimizer: bool = Field(
        False, description="also torch.compile the optimizer's and EMA's guarded updates (only with compilation on); "
        "off: multi-tensor foreach updates, nothing to compile (the optimizer's cold compile grows with the "
        "number of parameter tensors)")
    compile_mode: Literal["default", "max-autotune-no-cudagraphs"] = Field(
        "default", description="torch.compile mode for the model step (the CUDA-graph modes are refused: see below)")
    inductor: dict[str, Any] = Field(
        default_factory=dict, description="torch._inductor.config options set before compiling, "
        "e.g. {coordinate_descent_tuning: true}; dotted names reach nested ones (triton.cudagraphs)")
    keep_checkpoints: int = Field(2, ge=1, le=MAX_COUNT, description="most recent checkpoints kept")
    checkpoint_every: int = Field(
        0, ge=0, le=MAX_STEPS, description="also save a checkpoint every N steps, between evaluations (0: only at "
        "evaluations, the end and a stop)")
    checkpoint_every_minutes: float = Field(
        15.0, ge=0, le=MAX_SECONDS / 60, description="also save a checkpoint when this many minutes of the run passed "
        "since the last save (checked at log steps; 0: off): a crash or kill -9 loses at most that much")
    save_checkpoints: bool = True
    best_metric: Optional[str] = Field(None, description="eval metric whose best checkpoint is kept, e.g. eval/<task>/exact_accuracy")
    best_mode: Literal["max", "min"] = "max"
    resume: Union[bool, str] = Field(
        False, description="true: continue the run logging.run_name from its latest checkpoint; or a run or "
        "checkpoint path, a run name or a wandb id (scripts/list_runs.py lists them)")
    rewind: bool = Field(
        False, description="train.resume names an older checkpoint of a run: continue that run from it, its later "
        "checkpoints moved aside (default: a new run, a fork, continues from it)")
    allow_seed_change: bool = Field(
        False, description="resume with a train.seed other than the checkpoint's: the sampler then draws another "
        "order from the next step on (examples revisited and skipped)")
    load_checkpoint: Optional[str] = Field(
        None, description="start a new run from this checkpoint's weights (its EMA weights when present): a run or "
        "checkpoint path, a run name or a wandb id")
    depth_curriculum: Optional[DepthCurriculum] = Field(
        None, description="train shallower first: {by: time|steps, phases: [{until: 0.3, H_cycles: 1, L_cycles: 2}, "
        "...]}, each phase's cycle counts while the run's progress is below its `until` (a fraction of "
        "train.max_train_seconds, or of the planned steps), the arch's after the last; evaluation always runs the "
        "full depth; null: off (training/engine/curriculum.py)")
    max_bad_steps: int = Field(20, ge=1, le=MAX_COUNT, description="non-finite steps in a row before rolling back to the last checkpoint")
    rollback_lr_factor: float = Field(0.5, gt=0, le=1, description="LR multiplier applied at each rollback")
    max_rollbacks: int = Field(3, ge=0, le=MAX_COUNT, description="rollbacks before giving up with an error")
    dist_timeout_s: float = Field(
        600.0, gt=0, le=MAX_DIST_TIMEOUT_S, description="under torchrun: how long a collective waits for a rank before the run fails")

    @pydantic.model_validator(mode="after")
    def _length(self) -> "TrainConfig":
        if self.epochs is None and self.max_steps is None:
            raise ValueError("set train.epochs or train.max_steps")
        if self.resume is not False and self.load_checkpoint is not None:
            raise ValueError("set train.resume or train.load_checkpoint, not both")
        if self.rewind and self.resume is False:
            raise ValueError("train.rewind=true needs train.resume (the checkpoint of the run to rewind to)")
        if self.depth_curriculum is not None and self.depth_curriculum.by == "time" and self.max_train_seconds is None:
            raise ValueError("train.depth_curriculum.by=time: its fractions are of train.max_train_seconds, which is "
                             "not set (set it, or use by=steps: fractions of the planned steps)")
        return self

    @pydantic.field_validator("best_metric")
    @classmethod
    def _best_metric(cls, value: Optional[str]) -> Optional[str]:
        if value is not None and not value.startswith("eval/"):
            raise ValueError(f"{value!r} must name an evaluation metric (eval/...)")
        return value

    @pydantic.field_validator("compile_mode", mode="before")
    @classmethod
    def _compile_mode(cls, value: Any) -> Any:
        if value in CUDA_GRAPH_MODES:
            raise ValueError(f"{value!r} uses CUDA graphs: {CUDA_GRAPHS_REFUSED}; use 'default' or "
                             "'max-autotune-no-cudagraphs'")
        return value

    @pydantic.field_validator("inductor")
    @classmethod
    def _inductor(cls, value: dict[str, Any]) -> dict[str, Any]:
        return check_inductor_options(value)


# A run name or project is one directory name: a run writes only inside runs_dir/project/name.
PATH_COMPONENT = re.compile(r"[A-Za-z0-9][A-Za-z0-9._+-]{0,127}")


def check_path_component(value: Optional[str]) -> Optional[str]:
    if value is not None and not PATH_COMPONENT.fullmatch(value):
        raise ValueError(f"{value!r} is not a single directory name (use letters, digits and . _ + -, "
                         "starting with a letter or digit, at most 128 characters)")
    return value


class LoggingConfig(Strict):
    project: str = "trm"
    run_name: Optional[str] = Field(None, description="default: a generated coolname slug")
    runs_dir: str = "runs"
    wandb_mode: Literal["auto", "online", "offline", "disabled"] = Field(
        "auto", description="auto: WANDB_MODE if set, else online when logged in, else offline"
    )
    progress: bool = True
    progress_every: int = Field(
        500, ge=0, le=MAX_STEPS, description="print a progress line (step, loss, steps/s, ETA) into the log every N "
        "steps; 0 = none")
    wandb_examples: int = Field(
        4, ge=0, le=MAX_WANDB_EXAMPLES, description="test examples shown in wandb at each evaluation (a table and pictures); 0 = none")

    _names = pydantic.field_validator("project", "run_name")(check_path_component)

    @pydantic.field_validator("runs_dir")
    @classmethod
    def _runs_dir(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("is empty; name the folder that holds the runs (default: runs), not the current directory")
        return value


class Config(Strict):
    arch: ArchConfig  # one of the registered families, chosen by arch.name (the `arch` group: arch=hrm)
    data: DataConfig
    optim: OptimConfig = Field(default_factory=OptimConfig)
    train: TrainConfig
    logging: LoggingConfig = Field(default_factory=LoggingConfig)
    evaluators: list[dict[str, Any]] = Field(default_factory=list)

    @pydantic.field_validator("arch", mode="before")
    @classmethod
    def _arch(cls, value: Any) -> Any:
        if isinstance(value, BaseModel):
            return value
        if not isinstance(value, dict):
            raise ValueError("arch must be a mapping with a 'name'")
        return validate_arch(value)

    @pydantic.model_validator(mode="after")
    def _time_clock_has_a_budget(self) -> "Config":
        if self.optim.lr_schedule_clock == "time" and self.train.max_train_seconds is None:
            raise ValueError("optim.lr_schedule_clock=time: the LR decays over train.max_train_seconds, which is not "
                             "set (set it, or use optim.lr_schedule_clock=steps: over the planned steps)")
        return self

    @pydantic.model_validator(mode="after")
    def _depth_curriculum_fits_arch(self) -> "Config":
        curriculum = self.train.depth_curriculum
        if curriculum is None:
            return self
        fields = type(self.arch).CYCLE_FIELDS
        for i, phase in enumerate(curriculum.phases):
            for name in ("H_cycles", "L_cycles"):
                value = getattr(phase, name)
                if value is None:
                    continue
                where = f"train.depth_curriculum.phases[{i}].{name}={value}"
                # The recipes (cfg_*_400s, cfg_arith_mul) carry TRM's curriculum: another arch on them needs it off.
                off = "; train.depth_curriculum=null trains without the curriculum"
                if name not in fields:
                    raise ValueError(f"{where}: arch {self.arch.name} has no {name} (it does not recurse; a depth "
                                     f"curriculum needs arch=trm or hrm){off}" if not fields else
                                     f"{where}: arch {self.arch.name} has no {name} (its cycle counts: "
                                     f"{', '.join(fields)}){off}")
                if value > getattr(self.arch, name):
                    raise ValueError(f"{where} is more than arch.{name}={getattr(self.arch, name)} (a phase runs at "
                                     f"most the full depth, which applies after the last phase){off}")
        return self

    @pydantic.field_validator("evaluators")
    @classmethod
    def _evaluators(cls, value: list[dict[str, Any]]) -> list[dict[str, Any]]:
        from evaluators import evaluator_class, evaluator_names

        for i, spec in enumerate(value):
            if spec.get("name") not in evaluator_names():
                raise ValueError(f"evaluators[{i}].name={spec.get('name')!r}; known: {evaluator_names()}")
            options = {k: v for k, v in spec.items() if k != "name"}
            try:
                evaluator_class(spec["name"]).Options.model_validate(options)
            except pydantic.ValidationError as exc:
                raise ValueError("; ".join(f"evaluators[{i}].{part}" for part in one_line(exc).split("; "))) from None
        return value


    def to_dict(self) -> dict[str, Any]:
        return self.model_dump(mode="json")


def _flat_keys(d: Any) -> list[str]:
    return list(flatten(d))


def did_you_mean(key: str, known: list[str]) -> str:
    """' (did you mean optim.lr?)' for a near miss among `known` keys, else ''."""
    close = difflib.get_close_matches(key, known, n=1, cutoff=0.75)
    if not close:  # the right name in another section, e.g. train.lr -> optim.lr
        by_leaf = {}
        for k in known:
            by_leaf.setdefault(k.rsplit(".", 1)[-1], k)
        leaves = difflib.get_close_matches(key.rsplit(".", 1)[-1], list(by_leaf), n=1, cutoff=0.75)
        close = [by_leaf[leaves[0]]] if leaves else []
    return f" (did you mean {close[0]}?)" if close and close[0] != key else ""


def validate_config(raw: dict[str, Any]) -> Config:
    """Validate a composed config (a plain dict) or raise ConfigError with a one-line message."""
    unset = [key for key, value in flatten(raw).items() if value == MISSING] if isinstance(raw, dict) else []
    if unset:  # a field without a default that nothing set (Hydra leaves ??? in place)
        raise ConfigError(f"config: {unset[0]}: has no default and no value; set it in the config or on the command "
                          f"line ({unset[0]}=...)")
    try:
        return Config.model_validate(raw)
    except pydantic.ValidationError as exc:
        message = one_line(exc)
        extra = [".".join(str(x) for x in e["loc"]) for e in exc.errors() if e["type"] == "extra_forbidden"]
        if extra:
            message += did_you_mean(extra[0], [k for k in _flat_keys(raw) if k != extra[0]])
        raise ConfigError(f"config: {message}") from exc


CONFIG_DIR = Path(__file__).resolve().parents[1] / "config"

# Hydra's own settings for every run: the `hydra` section of the `base` config.
HYDRA_SETTINGS: dict[str, Any] = {
    "output_subdir": None,  # Hydra writes no config.yaml/hydra.yaml: a run records config.json itself (hydra_guard)
    "run": {"dir": "."},
    "sweep": {  # -m: job N trains run <logging.run_name or sweep-DATE-TIME>-N (pretrain.py); Hydra's multirun.yaml
        "dir": "${logging.runs_dir}/${logging.project}/.sweeps/${now:%Y%m%d-%H%M%S}",  # goes here, not in the cwd
        "subdir": "${hydra.job.num}",
    },
}
MISSING = "???"  # Hydra's value for a key that a config or an override must set


def field_defaults(model: type[BaseModel]) -> dict[str, Any]:
    """Every field of a typed section with its default, as Hydra's config tree holds it (a field
    without a default: ???)."""
    return {name: MISSING if field.is_required() else to_jsonable_python(field.get_default(call_default_factory=True))
            for name, field in model.model_fields.items()}


def section_models() -> dict[str, type[BaseModel]]:
    """The run sections of Config that are typed models of their own (data, optim, train, logging)."""
    return {name: field.annotation for name, field in Config.model_fields.items()
            if isinstance(field.annotation, type) and issubclass(field.annotation, BaseModel)}


def base_config() -> dict[str, Any]:
    """The `base` config: the arch group's default, Hydra's settings, every run section's defaults."""
    node: dict[str, Any] = {
        "defaults": [{"arch": DEFAULT_ARCH}, "_self_", {"override hydra/job_logging": "none"},
                     {"override hydra/hydra_logging": "none"}],
        "hydra": HYDRA_SETTINGS,
    }
    sections = section_models()
    for name, field in Config.model_fields.items():
        if name in sections:
            node[name] = field_defaults(sections[name])
        elif name != "arch":  # the arch group fills arch
            node[name] = MISSING if field.is_required() else to_jsonable_python(field.get_default(call_default_factory=True))
    return node


def arch_config(name: str) -> dict[str, Any]:
    """The `arch/<name>` option: a registered family's config with its defaults."""
    return field_defaults(MODELS[name][0])


def register_configs() -> None:
    """Put `base` and the `arch/<name>` options into Hydra's ConfigStore, where every composition
    finds them (@hydra.main, training.hydra_guard's loader, hydra.compose in tests): after the
    config directories in the search path, so a file of the same name in config/ or --config-dir
    would take precedence (none is shipped). Idempotent."""
    from hydra.core.config_store import ConfigStore

    store = ConfigStore.instance()
    store.store(name="base", node=base_config(), provider="training.config")
    for name in MODELS:
        store.store(group="arch", name=name, node=arch_config(name), provider="training.config")


register_configs()
