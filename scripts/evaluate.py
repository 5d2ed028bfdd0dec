"""Score a saved checkpoint on a dataset's test split.

    python scripts/evaluate.py --checkpoint runs/trm-lsa/<run>            # latest checkpoint of a run
    python scripts/evaluate.py --checkpoint <run name or wandb id>        # the same, looked up under --runs-dir
    python scripts/evaluate.py --checkpoint runs/trm-lsa/<run>/checkpoints/step_0004000 --data data/other

The config is read from the checkpoint; the EMA weights are used when present (as in
training's evaluation). The last line printed is one JSON object of metrics.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Literal, Optional

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a file from anywhere
if __name__ == "__main__":  # before the heavy imports: a signal now is one line, not a traceback
    from core.early_signals import exit_on_signals  # noqa: E402

    exit_on_signals()

import torch  # noqa: E402
from pydantic import BaseModel, Field  # noqa: E402

from core.cli import CLI, run_cli  # noqa: E402
from core.errors import InputError  # noqa: E402
from dataset.common import _umask  # noqa: E402
from dataset.loader import DeviceArrays, PuzzleDataset  # noqa: E402
from evaluators import build_evaluators  # noqa: E402
from models import build_model  # noqa: E402
from models.act import check_step_cost  # noqa: E402
from models.losses import ACTLossHead  # noqa: E402
from training.engine.checkpoint import (  # noqa: E402
    CheckpointError, check_data_compatible, load_config, load_meta, load_weights, resolve_checkpoint,
)
from training.config import MAX_BATCH_SIZE, ConfigError, check_inductor_options, validate_config  # noqa: E402
from training.engine.evaluation import evaluate  # noqa: E402
from training.bookkeeping.runs import locate_run  # noqa: E402
from training.engine.setup import apply_inductor_options, compile_step, resolve_device  # noqa: E402


class EvaluateArgs(BaseModel):
    checkpoint: Path = Field(description="checkpoint directory, or a run (directory, name or wandb id: its latest checkpoint)")
    runs_dir: Path = Field(Path("runs"), description="where a run name or wandb id given as --checkpoint is looked up")
    data: Optional[Path] = Field(None, description="dataset directory (default: the one the run trained on)")
    device: str = Field("auto", description="auto, cpu, cuda, cuda:N")
    ema: bool = Field(True, description="use the EMA weights when the checkpoint has them")
    batch_size: Optional[int] = Field(None, ge=1, le=MAX_BATCH_SIZE, description="default: the run's eval batch size")
    compile: bool = Field(False, description="torch.compile the model (worth it for large test sets on a GPU)")
    inductor: Optional[str] = Field(
        None, description="with --compile: Inductor tuning options, e.g. coordinate_descent_tuning=true,max_fusion_size=32 "
        "(a run's own train.inductor is never applied from its checkpoint: pass it here)")
    save_predictions: Optional[Path] = Field(None, description="directory for the evaluators' prediction files")
    halting: Optional[Literal["max_steps", "q_head"]] = Field(
        None, description="which answer counts (default: the run's train.eval_halting)")
    progress: bool = True


def parse_inductor_options(text: str) -> dict:
    """'a=true,b=32' -> {'a': True, 'b': 32}, checked against the allow-list."""
    options = {}
    for item in text.split(","):
        name, sep, value = item.strip().partition("=")
        if not sep or not name:
            raise ConfigError(f"--inductor: {item!r} is not NAME=VALUE")
        lowered = value.strip().lower()
        options[name] = {"true": True, "false": False}.get(lowered, int(lowered) if lowered.lstrip("-").isdigit() else value)
    try:
        return check_inductor_options(options)
    except ValueError as exc:
        raise ConfigError(f"--inductor: {exc}") from exc


def evaluate_checkpoint(args: EvaluateArgs) -> dict[str, float]:
    options = parse_inductor_options(args.inductor) if args.inductor else {}
    if options and not args.compile:
        raise ConfigError("--inductor: only applies with --compile")
    out = args.save_predictions
    if out is not None and (out.is_symlink() or (out.exists() and (not out.is_dir() or any(out.iterdir())))):
        raise ConfigError(f"--save-predictions {out}: exists and is not an empty directory; give a new one (nothing "
                          "is overwritten)")
    ckpt = resolve_checkpoint(locate_run(args.checkpoint, args.runs_dir))  # a path, a run name or a wandb id
    try:
        cfg = validate_config(load_config(ckpt))
    except ConfigError as exc:
        raise CheckpointError(f"{ckpt / 'config.json'}: {str(exc).removeprefix('config: ')}") from exc
    data_path = args.data or Path(cfg.data.path)
    data = PuzzleDataset.load(data_path)
    check_data_compatible(ckpt, load_meta(ckpt), data.meta, data_path)
    evaluators = build_evaluators(cfg.evaluators, data)  # each fits this dataset, checked before the model runs
    batch_size = args.batch_size or cfg.train.eval_batch_size or cfg.train.global_batch_size
    device = resolve_device(args.device)
    try:
        check_step_cost(cfg.arch, data.meta.vocab_size, data.meta.seq_len, batch_size, False,
                        f"--batch-size {args.batch_size}" if args.batch_size else f"the run's eval batch size {batch_size}")
        model = build_model(cfg.arch, data.meta, device)
    except (ValueError, InputError) as exc:
        raise CheckpointError(f"{ckpt / 'config.json'}: {exc}") from exc
    weights = load_weights(model, ckpt, use_ema=args.ema)
    step_fn = ACTLossHead(model)
    if args.compile:
        if cfg.train.inductor and not options:
            print(f"note: the run trained with train.inductor={cfg.train.inductor}; options are not taken from a "
                  "checkpoint (pass --inductor to use them)", file=sys.stderr)
        apply_inductor_options(options)
        step_fn = compile_step(step_fn, cfg.train.compile_scope)
    arrays = DeviceArrays(data.test, data.test_meta, device, resident=True)
    # Prediction files are written aside and renamed into place at the end: an evaluation that
    # fails or is interrupted (SIGTERM, Ctrl-C) leaves no partial result behind.
    if out is not None:
        out.parent.mkdir(parents=True, exist_ok=True)
    aside = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.parent)) if out is not None else None
    try:
        metrics = evaluate(step_fn, model, arrays, data.test.num_examples, batch_size, evaluators, save_path=aside,
                           progress=args.progress, halting=args.halting or cfg.train.eval_halting)
        if out is not None:
            os.chmod(aside, 0o777 & ~_umask())  # mkdtemp made it private
            os.replace(aside, out)  # `out` is absent or an empty directory
    finally:
        if aside is not None and aside.exists():
            shutil.rmtree(aside)
    return {**metrics, "checkpoint": str(ckpt), "weights": weights, "data": str(data_path)}


cli = CLI(name="evaluate", description="Score a saved checkpoint; prints one JSON object last.")


@cli.command(singleton=True)
def main(args: EvaluateArgs) -> None:
    print(json.dumps(evaluate_checkpoint(args)))


if __name__ == "__main__":
    run_cli(cli)
