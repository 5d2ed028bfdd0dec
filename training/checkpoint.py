"""Checkpoints: one directory per save, written atomically, loaded without unpickling code.

Layout of `<run_dir>/checkpoints/`:
    step_0001000/   model.pt (uncompiled weights), ema.pt, optim.pt, state.pt, config.json, meta.json
    latest          text file naming the newest complete checkpoint directory
    best            text file naming the checkpoint with the best `train.best_metric` (if set)

A save writes into a temporary directory, fsyncs, renames it into place, and only then
replaces `latest` (itself via a temporary file and os.replace). A checkpoint directory is
never overwritten (a second save of the same step gets a suffix) and the ones the pointers
name are never pruned, so a crash at any moment, `kill -9` included, leaves `latest` naming
a complete checkpoint, or no `latest` at all. Leftover temporary directories of a crashed
save are removed by the next save.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import torch

from dataset.common import InputError

CHECKPOINT_FILES = ("model.pt", "ema.pt", "optim.pt", "state.pt")


class CheckpointError(InputError):
    """A checkpoint that is missing, truncated, unsafe or incompatible; names the file."""


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _write_file(path: Path, write) -> None:
    with open(path, "wb") as f:
        write(f)
        f.flush()
        os.fsync(f.fileno())


def _torch_save(obj: Any, f) -> None:
    try:
        torch.save(obj, f)
    except RuntimeError as exc:
        if isinstance(exc.__context__, OSError):  # the zip writer's cleanup masks a failed write
            raise exc.__context__ from exc
        raise


def save_checkpoint(
    run_dir: Path, step: int, payload: dict[str, Any], config: dict[str, Any], meta: dict[str, Any], keep: int,
    is_best: bool = False,
) -> Path:
    """payload: {"model": ..., "ema": ..., "optim": ..., "state": ...} -> <file>.pt each.

    Raises CheckpointError (naming the directory) when writing fails, e.g. on a full disk;
    the previous checkpoints and pointers are untouched then."""
    ckpt_root = Path(run_dir) / "checkpoints"
    ckpt_root.mkdir(parents=True, exist_ok=True)
    for stale in ckpt_root.glob(".tmp-*"):  # left by a save that was killed
        shutil.rmtree(stale, ignore_errors=True)
    final = ckpt_root / f"step_{step:07d}"
    for n in range(1, 1000):  # never overwrite: `latest` may name the old one
        if not final.exists():
            break
        final = ckpt_root / f"step_{step:07d}-{n}"
    tmp = Path(tempfile.mkdtemp(prefix=f".tmp-{final.name}-", dir=ckpt_root))
    try:
        for name, obj in payload.items():
            _write_file(tmp / f"{name}.pt", lambda f, obj=obj: _torch_save(obj, f))
        _write_file(tmp / "config.json", lambda f: f.write(json.dumps(config, indent=2).encode()))
        _write_file(tmp / "meta.json", lambda f: f.write(json.dumps({"step": step, **meta}, indent=2).encode()))
        _fsync_dir(tmp)
        os.replace(tmp, final)
        _fsync_dir(ckpt_root)
        _set_pointer(ckpt_root, "latest", final.name)
        if is_best:
            _set_pointer(ckpt_root, "best", final.name)
    except OSError as exc:
        raise CheckpointError(f"{ckpt_root}: cannot write checkpoint for step {step} ({exc}); "
                              "earlier checkpoints are intact") from exc
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    _prune(ckpt_root, keep)
    return final


def _set_pointer(ckpt_root: Path, name: str, target: str) -> None:
    pointer_tmp = ckpt_root / f".{name}.tmp"
    _write_file(pointer_tmp, lambda f: f.write(target.encode()))
    os.replace(pointer_tmp, ckpt_root / name)
    _fsync_dir(ckpt_root)


def _read_pointer(ckpt_root: Path, name: str) -> str | None:
    pointer = ckpt_root / name
    return pointer.read_text().strip() if pointer.is_file() else None


def _step_key(path: Path) -> tuple[int, int]:
    step, _, suffix = path.name.removeprefix("step_").partition("-")
    return int(step), int(suffix or 0)


def _prune(ckpt_root: Path, keep: int) -> None:
    """Keep the newest `keep` checkpoints and whatever `latest` and `best` name."""
    pinned = {_read_pointer(ckpt_root, "latest"), _read_pointer(ckpt_root, "best")}
    steps = sorted((p for p in ckpt_root.glob("step_*") if p.is_dir()), key=_step_key)
    for old in steps[:-keep]:
        if old.name not in pinned:
            shutil.rmtree(old, ignore_errors=True)


def list_checkpoints(run_dir: Path) -> list[Path]:
    root = Path(run_dir) / "checkpoints"
    return sorted((p for p in root.glob("step_*") if p.is_dir()), key=_step_key)


def resolve_checkpoint(path: Path | str) -> Path:
    """A checkpoint directory, a `checkpoints/` directory or a run directory -> the checkpoint."""
    path = Path(path)
    if path.is_file() and path.name in ("latest", "best"):  # a pointer file given directly
        target = path.parent / path.read_text().strip()
        if not target.is_dir():
            raise CheckpointError(f"{path}: names {target.name}, which does not exist")
        return target
    for root in (path, path / "checkpoints"):
        pointer = root / "latest"
        if pointer.is_file():
            target = root / pointer.read_text().strip()
            if not target.is_dir():
                raise CheckpointError(f"{pointer}: names {target.name}, which does not exist")
            return target
    if (path / "model.pt").is_file() or (path / "meta.json").is_file():
        return path
    if not path.exists():
        raise CheckpointError(f"{path}: no such checkpoint or run directory")
    raise CheckpointError(f"{path}: not a checkpoint (no model.pt) and no checkpoints/latest inside")


def load_file(path: Path) -> Any:
    """torch.load with weights_only=True: tensors and plain containers only, never code."""
    if not path.is_file():
        raise CheckpointError(f"{path}: file not found")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises UnpicklingError, RuntimeError, EOFError, ... by cause
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        if "weights_only" in str(exc) or "Unsupported global" in str(exc):
            reason = "refused: it contains pickled objects other than tensors and plain data (possible code)"
        raise CheckpointError(f"{path}: cannot load ({reason})") from exc


def load_config(ckpt: Path) -> dict[str, Any]:
    path = ckpt / "config.json"
    if not path.is_file():
        raise CheckpointError(f"{path}: file not found")
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise CheckpointError(f"{path}: not valid JSON ({exc})") from exc


# Dataset facts a model's weights depend on; recorded in meta.json and checked on load.
MODEL_DATA_FIELDS = ("vocab_size", "seq_len", "num_puzzle_identifiers")


def check_data_compatible(ckpt: Path, meta: dict[str, Any], data_meta, data_path: Path) -> None:
    recorded = meta.get("dataset", {})
    for field in MODEL_DATA_FIELDS:
        if field in recorded and recorded[field] != getattr(data_meta, field):
            raise CheckpointError(
                f"{data_path}: {field}={getattr(data_meta, field)} but the checkpoint {ckpt} was trained with "
                f"{field}={recorded[field]}"
            )


def load_meta(ckpt: Path) -> dict[str, Any]:
    path = ckpt / "meta.json"
    if not path.is_file():
        return {}
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise CheckpointError(f"{path}: not valid JSON ({exc})") from exc


def load_weights(model: torch.nn.Module, ckpt: Path, use_ema: bool) -> str:
    """Load model.pt (and, if asked and present, the EMA weights over it). Returns which."""
    state = load_file(ckpt / "model.pt")
    if not isinstance(state, dict):
        raise CheckpointError(f"{ckpt / 'model.pt'}: expected a state dict, got {type(state).__name__}")
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        first = str(exc).strip().splitlines()
        detail = "; ".join(line.strip() for line in first[1:3]) if len(first) > 1 else first[0]
        raise CheckpointError(f"{ckpt / 'model.pt'}: does not fit this model ({detail})") from exc
    if use_ema and (ckpt / "ema.pt").is_file():
        ema = load_file(ckpt / "ema.pt")
        if ema:
            params = dict(model.named_parameters())
            missing = set(params) - set(ema)
            if missing:
                raise CheckpointError(f"{ckpt / 'ema.pt'}: lacks parameters {sorted(missing)[:3]}")
            with torch.no_grad():
                for name, p in params.items():
                    if ema[name].shape != p.shape:
                        raise CheckpointError(f"{ckpt / 'ema.pt'}: {name} has shape {tuple(ema[name].shape)}, model has {tuple(p.shape)}")
                    p.copy_(ema[name])
            return "ema"
    return "model"
