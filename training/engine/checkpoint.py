"""Checkpoints: one directory per save, written atomically, loaded without unpickling code.

Layout of `<run_dir>/checkpoints/`:
    step_0001000/   model.pt (uncompiled weights), ema.pt, optim.pt, state.pt, config.json, meta.json
    latest          text file naming the newest complete checkpoint directory
    best            text file naming the checkpoint with the best `train.best_metric` (if set)

A save writes into a temporary directory, fsyncs, renames it into place, and only then
replaces `latest` (itself via a temporary file and os.replace). A checkpoint directory is
never overwritten (a second save of the same step gets a suffix) and the ones the pointers
name (and the newest evaluated one) are never pruned, so a crash at any moment, `kill -9`
included, leaves `latest` naming a complete checkpoint, or no `latest` at all (then
`resolve_checkpoint` takes the newest complete checkpoint directory). Leftover temporary
directories of a crashed save are removed by the next save: only those holding this project's marker file (`TMP_MARKER`), never another
folder that happens to be called `.tmp-*`. Pointers are replaced, never written into, so a
hard-linked backup of the run (`cp -al`) keeps its own.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import sys
import tempfile
import threading
import time
import warnings
from pathlib import Path
from typing import Any, Optional

import torch

from core.errors import InputError, printable_line
from core.signals import Interrupted
from dataset.common import _umask
from training.engine.distributed import World, barrier
from training.files import fsync_dir as _fsync_dir
from training.files import replace_file

CHECKPOINT_FILES = ("model.pt", "ema.pt", "optim.pt", "state.pt")
POINTER_TARGET = re.compile(r"step_\d+(-\d+)?")  # the only names a checkpoint directory (and a pointer) may have
TMP_MARKER = ".tinyrecursion-partial-save"  # inside a save's temporary directory: it is ours to remove
SAVE_TMP = re.compile(r"\.tmp-step_\d+(-\d+)?-[A-Za-z0-9_]+")  # mkdtemp's names for a save
POINTER_TMP = re.compile(r"\.(latest|best)\.tmp-[A-Za-z0-9_]+")  # replace_file's temporary pointer files


class CheckpointError(InputError):
    """A checkpoint that is missing, truncated, unsafe or incompatible; names the file."""


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
    remove_stale_temporaries(ckpt_root)
    final = ckpt_root / f"step_{step:07d}"
    for n in range(1, 1000):  # never overwrite: `latest` may name the old one
        if not final.exists():
            break
        final = ckpt_root / f"step_{step:07d}-{n}"
    tmp = Path(tempfile.mkdtemp(prefix=f".tmp-{final.name}-", dir=ckpt_root))
    try:
        os.chmod(tmp, 0o777 & ~_umask())  # mkdtemp makes it 0700; the run's files are not private
        _write_file(tmp / TMP_MARKER, lambda f: None)
        for name, obj in payload.items():
            _write_file(tmp / f"{name}.pt", lambda f, obj=obj: _torch_save(obj, f))
        _write_file(tmp / "config.json", lambda f: f.write(json.dumps(config, indent=2).encode()))
        _write_file(tmp / "meta.json", lambda f: f.write(json.dumps({"step": step, **meta}, indent=2).encode()))
        _fsync_dir(tmp)
        os.replace(tmp, final)  # with its marker: a kill before this leaves a temporary folder that is ours
        os.unlink(final / TMP_MARKER)
        _fsync_dir(final)
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


class CheckpointManager:
    """The checkpoint policy of one run: when an evaluation and its save are due (every
    `train.eval_interval` steps and at the end; on pre-emption), when a save is due between
    evaluations (`save_due`: every `train.checkpoint_every` steps, or once
    `train.checkpoint_every_minutes` passed since the last save), which metrics make a
    checkpoint the best, how many to keep (the newest K, plus whatever `latest` and `best`
    name, and the newest evaluated one), what a rollback returns to. With several ranks every
    rank calls `save` (the state dict gathers across ranks) and rank 0 alone writes."""

    def __init__(self, run_dir: Path, train_cfg: Any, config: dict[str, Any], dataset_facts: dict[str, Any],
                 world: World = World()):
        self.run_dir, self.cfg, self.config, self.dataset_facts, self.world = run_dir, train_cfg, config, dataset_facts, world
        self.last_save = time.monotonic()  # the run's start counts as a save: the first timed one comes a period later
        self.best_settled = False  # the restored best value is checked against this run's `best` at the first save

    def due(self, step: int, finished: bool) -> bool:
        """An evaluation (then a save) is due at this step."""
        return step % self.cfg.eval_interval == 0 or finished

    def minutes_passed(self) -> bool:
        """This rank's clock says a timed save is due (ranks agree on it through the loop's flags)."""
        minutes = self.cfg.checkpoint_every_minutes
        return bool(minutes) and time.monotonic() - self.last_save >= minutes * 60

    def save_due(self, step: int, minutes_passed: bool = False) -> bool:
        """A save without an evaluation is due at this step (`minutes_passed`: all ranks' verdict
        of `minutes_passed()`). Steps where an evaluation saves anyway are not asked."""
        every = self.cfg.checkpoint_every
        return self.cfg.save_checkpoints and (bool(every and step % every == 0) or minutes_passed)

    def improves(self, metrics: dict[str, float], best: Optional[float]) -> bool:
        name = self.cfg.best_metric
        if not name or not metrics:  # a pre-emption before any evaluation saves without metrics
            return False
        if name not in metrics:  # checked before training; an evaluator that did not report it is a bug
            raise CheckpointError(f"train.best_metric={name!r} is not among this evaluation's metrics "
                                  f"({', '.join(sorted(metrics))})")
        value = metrics[name]
        return best is None or (value > best if self.cfg.best_mode == "max" else value < best)

    def save(self, state: Any, metrics: dict[str, float], **meta: Any) -> Optional[Path]:
        """Save `state` (anything with `step`, `best_value` and `state_dict()`)."""
        if not self.cfg.save_checkpoints:
            return None
        if not self.best_settled and self.world.is_main:  # rank 0 alone decides (and writes) `best`
            state.best_value = settle_best(self.run_dir, self.cfg.best_metric, state.best_value)
        self.best_settled = True
        is_best = self.improves(metrics, state.best_value)
        if is_best:
            state.best_value = metrics[self.cfg.best_metric]
        payload = state.state_dict()  # with several ranks: a collective, so every rank is here
        path = None
        if self.world.is_main:
            path = save_checkpoint(self.run_dir, state.step, payload, self.config,
                                   {"metrics": metrics, "dataset": self.dataset_facts, "world_size": self.world.world_size,
                                    **meta}, self.cfg.keep_checkpoints, is_best)
        barrier(self.world)  # no rank reads it (a rollback) before it is complete
        self.last_save = time.monotonic()
        return path

    def rollback_target(self) -> Optional[Path]:
        """The checkpoint a rollback returns to (the latest), None when there is none."""
        return resolve_checkpoint(self.run_dir) if list_checkpoints(self.run_dir) else None


def load_checkpoint_files(ckpt: Path) -> dict[str, Any]:
    """A checkpoint directory's parts, loaded without unpickling code: {model, ema, optim, state}."""
    return {part: load_file(ckpt / f"{part}.pt") for part in ("model", "ema", "optim", "state")}


def remove_stale_temporaries(ckpt_root: Path) -> None:
    """What a killed save left: `.tmp-*` directories holding our marker (not links, not a
    user's folder of that name) and temporary pointer files naming a checkpoint."""
    for stale in ckpt_root.glob(".tmp-*"):
        if stale.is_dir() and not stale.is_symlink():
            if (stale / TMP_MARKER).is_file():
                shutil.rmtree(stale)
            elif SAVE_TMP.fullmatch(stale.name) and not any(stale.iterdir()):
                stale.rmdir()  # killed before its marker was written: empty
    for stale in ckpt_root.glob(".*.tmp-*"):
        if POINTER_TMP.fullmatch(stale.name) and stale.is_file() and not stale.is_symlink() \
                and os.lstat(stale).st_nlink == 1 and stale.stat().st_size <= 64 \
                and POINTER_TARGET.fullmatch(stale.read_text(errors="replace").strip()):
            stale.unlink()


def _set_pointer(ckpt_root: Path, name: str, target: str) -> None:
    replace_file(ckpt_root / name, target)


def _read_pointer(ckpt_root: Path, name: str) -> str | None:
    pointer = ckpt_root / name
    return pointer.read_text(errors="replace").strip() if pointer.is_file() else None


def _step_key(path: Path) -> tuple[int, int]:
    step, _, suffix = path.name.removeprefix("step_").partition("-")
    return int(step), int(suffix or 0)


def _evaluated_metrics(ckpt: Path) -> dict[str, Any]:
    """The metrics an evaluation of these very weights gave ({} for a save between evaluations,
    and for a meta.json that cannot be read: such a checkpoint is not pinned as evaluated)."""
    try:
        metrics = _load_json_object(ckpt / "meta.json").get("metrics")
    except CheckpointError:
        return {}
    return metrics if isinstance(metrics, dict) else {}


def _prune(ckpt_root: Path, keep: int) -> None:
    """Keep the newest `keep` checkpoints, whatever `latest` and `best` name, and the newest
    evaluated checkpoint (saves between evaluations must not push out the last evaluated weights)."""
    pinned = {_read_pointer(ckpt_root, "latest"), _read_pointer(ckpt_root, "best")}
    steps = list_checkpoints(ckpt_root.parent)
    pinned.add(next((p.name for p in reversed(steps) if _evaluated_metrics(p)), None))
    for old in steps[:-keep]:
        if old.name not in pinned:
            shutil.rmtree(old, ignore_errors=True)


def set_aside_after(run_dir: Path, ckpt: Path) -> list[Path]:
    """A rewind to `ckpt`: move the checkpoints after it (with a `best` pointer naming one of
    them) to checkpoints/rewound-<time>/, and their evaluation outputs to eval/rewound-<time>/,
    where they are kept; `latest` then names `ckpt`. Nothing is deleted. Returns the folders.
    The run's next save points `best` again (`settle_best`)."""
    root, step = Path(run_dir) / "checkpoints", _step_key(ckpt)
    later = [p for p in list_checkpoints(run_dir) if _step_key(p) > step]
    evals = [p for p in (Path(run_dir) / "eval").glob("step_*")
             if POINTER_TARGET.fullmatch(p.name) and p.is_dir() and not p.is_symlink() and _step_key(p)[0] > step[0]]
    stamp = int(time.time())
    kept = []
    for folder, moved in ((root, later), (Path(run_dir) / "eval", evals)):
        if not moved:
            continue
        aside, n = folder / f"rewound-{stamp}", 1
        while aside.exists() or aside.is_symlink():
            aside, n = folder / f"rewound-{stamp}-{n}", n + 1
        aside.mkdir()
        for path in moved:
            os.replace(path, aside / path.name)
        if folder == root and _read_pointer(root, "best") in {p.name for p in later}:
            os.replace(root / "best", aside / "best")
        kept.append(aside)
    _set_pointer(root, "latest", ckpt.name)
    return kept


def settle_best(run_dir: Path, metric: Optional[str], best_value: Optional[float]) -> Optional[float]:
    """The best value a resumed run goes on from. Without a `best` pointer in this run (a rewind
    set it aside, a fork or a new run has none) the restored value is kept only when one of the
    run's checkpoints was evaluated at it: `best` then names that checkpoint (so it is pinned).
    Otherwise it returns None, and the next evaluation becomes the best."""
    root = Path(run_dir) / "checkpoints"
    if best_value is None or not metric or _read_pointer(root, "best") is not None:
        return best_value
    for ckpt in list_checkpoints(run_dir):  # the first to reach it is the one that was best (improves() is strict)
        if _evaluated_metrics(ckpt).get(metric) == best_value:
            _set_pointer(root, "best", ckpt.name)
            return best_value
    return None


def list_checkpoints(run_dir: Path) -> list[Path]:
    """The run's checkpoint directories (step_NNNNNNN[-k]; anything else there is left alone)."""
    root = Path(run_dir) / "checkpoints"
    return sorted((p for p in root.glob("step_*") if POINTER_TARGET.fullmatch(p.name) and p.is_dir()), key=_step_key)


def follow_pointer(pointer: Path) -> Path:
    """The checkpoint a `latest`/`best` pointer names. It must name a `step_*` directory beside
    it: a pointer that leads out of its run (a path, `..`, a symbolic link) is refused."""
    try:
        name = pointer.read_text().strip()
    except (OSError, UnicodeDecodeError) as exc:
        raise CheckpointError(f"{pointer}: cannot read ({exc})") from exc
    if not POINTER_TARGET.fullmatch(name):
        raise CheckpointError(f"{pointer}: names {name[:80]!r}, not a checkpoint directory of this run (step_NNNNNNN)")
    target = pointer.parent / name
    if not target.is_dir():
        raise CheckpointError(f"{pointer}: names {name}, which does not exist")
    if target.is_symlink() or target.resolve().parent != pointer.parent.resolve():
        raise CheckpointError(f"{pointer}: names {name}, which leads outside {pointer.parent}")
    return target


def resolve_checkpoint(path: Path | str) -> Path:
    """A checkpoint directory, a `checkpoints/` directory or a run directory -> the checkpoint."""
    path = Path(path)
    if path.is_file() and path.name in ("latest", "best"):  # a pointer file given directly
        return follow_pointer(path)
    for root in (path, path / "checkpoints"):
        if (root / "latest").is_file():
            return follow_pointer(root / "latest")
    if (path / "model.pt").is_file() or (path / "meta.json").is_file():
        return path
    if path.exists() and not path.is_dir():
        raise CheckpointError(f"{path}: {file_given(path)}")
    run_dir = path.parent if path.name == "checkpoints" else path
    found = list_checkpoints(run_dir)
    if found:  # a save killed before it wrote the first `latest`: the newest complete one
        for ckpt in reversed(found):
            if is_complete(ckpt):
                return ckpt
        raise CheckpointError(f"{run_dir / 'checkpoints'}: no `latest` and no complete checkpoint among "
                              f"{', '.join(p.name for p in found[-5:])}")
    if not path.exists():
        raise CheckpointError(f"{path}: no such checkpoint or run directory")
    raise CheckpointError(f"{path}: not a checkpoint (no model.pt) and no checkpoints/latest inside")


def file_given(path: Path) -> str:
    """Why `path`, which exists and is no directory, is not a checkpoint: a checkpoint (and a run)
    is a directory. A file of a checkpoint directory (its model.pt, say) points to that directory."""
    holder = path.parent
    if (holder / "model.pt").is_file() and (holder / "config.json").is_file():
        return f"is a file, not a checkpoint directory; pass the checkpoint directory that holds it ({holder})"
    kind = "a file"
    if not path.is_file():
        kind = "a special file (a pipe or device)"  # not opened: a read could block
    else:
        try:
            with open(path, "rb") as f:
                start = f.read(32)
        except OSError as exc:
            raise CheckpointError(f"{path}: is a file, not a checkpoint directory, and cannot be read "
                                  f"({exc.strerror or exc})") from exc
        if start.startswith(b"PK"):
            if is_torchscript_archive(path):
                kind = "a TorchScript archive (what torch.jit.save writes)"
            elif zip_pickle_protocol(path) is not None:
                kind = "a torch file (what torch.save writes)"
        elif TORCH_FILE_START.match(start):  # torch.save's legacy format
            kind = "a torch file (what torch.save writes)"
    return (f"is {kind}, not a checkpoint directory; a checkpoint is a directory (model.pt, config.json, "
            "meta.json: what training saves), and so is a run")


def is_complete(ckpt: Path) -> bool:
    """Every file a save writes is there, each .pt a whole zip archive, meta.json an object
    whose step is the directory's: what a save that got as far as its rename leaves."""
    import zipfile

    if ckpt.is_symlink() or not all((ckpt / f).is_file() for f in (*CHECKPOINT_FILES, "config.json", "meta.json")):
        return False
    if not all(zipfile.is_zipfile(ckpt / f) for f in CHECKPOINT_FILES):
        return False
    try:
        meta = _load_json_object(ckpt / "meta.json")
    except CheckpointError:
        return False
    return meta.get("step") == _step_key(ckpt)[0]


def check_field(ok: bool, path: Path, field: str, problem: str) -> None:
    if not ok:
        raise CheckpointError(f"{path}: field '{field}' {problem}")


def check_tensors(tensors: dict[str, Any], reference: dict[str, torch.Tensor], path: Path, field: str) -> None:
    """Saved tensors must have exactly the keys, shapes and dtypes of `reference`, and finite
    values: `copy_` would otherwise broadcast a wrong shape silently or carry NaN into training."""
    check_field(isinstance(tensors, dict), path, field, f"is a {type(tensors).__name__}, expected a mapping of tensors")
    missing, extra = sorted(set(reference) - set(tensors)), sorted(set(tensors) - set(reference))
    check_field(not missing, path, field, f"lacks {missing[:3]}")
    check_field(not extra, path, field, f"has unknown entries {extra[:3]}")
    for name, want in reference.items():
        got = tensors[name]
        check_field(isinstance(got, torch.Tensor), path, f"{field}.{name}", f"is a {type(got).__name__}, expected a tensor")
        check_field(got.shape == want.shape, path, f"{field}.{name}", f"has shape {tuple(got.shape)}, expected {tuple(want.shape)}")
        check_field(got.dtype == want.dtype, path, f"{field}.{name}", f"has dtype {got.dtype}, expected {want.dtype}")
        check_field(got.layout == torch.strided and not getattr(got, "is_nested", False), path, f"{field}.{name}",
                    f"has layout {got.layout}, expected a dense tensor")
        if got.is_floating_point():
            check_field(bool(torch.isfinite(got).all()), path, f"{field}.{name}", "holds NaN or infinite values")


# How a file torch.save wrote begins: a zip archive (the format since torch 1.6), or the legacy
# format's pickled magic number: pickle protocol 2 by default, 3 to 5 when asked (4 and 5 open
# with a frame, an 8-byte length, which torch's weights-only unpickler cannot read).
TORCH_FILE_START = re.compile(rb"PK\x03\x04|\x80(?P<protocol>[\x02-\x05])(?:\x95.{8})?\x8a\nl\xfc\x9cF\xf9 j\xa8P\x19",
                              re.S)
# The weights-only unpickler's refusals of a pickle that names a Python object (a class, a
# function): "Unsupported global: GLOBAL <name> was not an allowed global by default", "Trying to
# load unsupported GLOBAL <name> whose module <module> is blocked".
PICKLED_OBJECT = re.compile(r"GLOBAL (?P<name>.*?) (?:was not an allowed global|whose module )", re.S)

# torch.load's warnings, printed before the one-line refusal that names the same thing: a pickle
# protocol other than 2 (the refusal names 4 and 5; 3 loads), a TorchScript archive.
TORCH_LOAD_WARNINGS = ("Detected pickle protocol ", "'torch.load' received a zip file that looks like a TorchScript archive")
# warnings.catch_warnings swaps the process's one filter list in and out: two loads in threads
# whose windows overlap would leave the first one's filters in place for good (the second restores
# the list it saw), so the loads that filter take turns.
_LOAD_WARNINGS_LOCK = threading.Lock()


def load_file(path: Path) -> Any:
    """torch.load with weights_only=True: tensors and plain containers only, never code. A file
    that is not one torch.save writes (random bytes, a truncated or other file) is called corrupt;
    only a real pickle that names objects is refused as possible code. A torch file this cannot
    read (pickle protocol 4 or 5, a TorchScript archive) is named for what it is."""
    if not path.is_file():
        raise CheckpointError(f"{path}: file not found")
    try:
        with _LOAD_WARNINGS_LOCK, warnings.catch_warnings():  # what they say, the refusal below says in its one line
            for said in TORCH_LOAD_WARNINGS:
                warnings.filterwarnings("ignore", message=re.escape(said), category=UserWarning)
            return torch.load(path, map_location="cpu", weights_only=True)
    except Interrupted:  # a signal while loading: not the file's fault
        raise
    except Exception as exc:  # torch raises UnpicklingError, RuntimeError, EOFError, ... by cause
        raise CheckpointError(f"{path}: cannot load ({load_problem(path, exc)})") from exc


def load_problem(path: Path, exc: Exception) -> str:
    """Why torch.load refused `path`, in a few words."""
    text = str(exc).strip()
    try:
        with open(path, "rb") as f:
            start = f.read(32)
    except OSError as read_error:
        return f"cannot read it ({read_error.strerror or read_error})"
    started = TORCH_FILE_START.match(start)
    if not started:
        return ("not a checkpoint file: it is neither the zip archive torch.save writes nor its legacy format; "
                "corrupt, or another kind of file")
    if start.startswith(b"PK") and is_torchscript_archive(path):
        return "a TorchScript archive (what torch.jit.save writes), not a training checkpoint file"
    legacy = started.group("protocol")
    protocol = legacy[0] if legacy else zip_pickle_protocol(path)
    if protocol is not None and protocol >= 4 and "Unsupported operand" in text:  # its first opcode, the frame
        return (f"a {'legacy-format ' if legacy else ''}torch file (pickle protocol {protocol}), which this loader "
                "cannot read weights-only; re-save it with a current torch (torch.save's default format and protocol)")
    pickled = PICKLED_OBJECT.search(text)
    if pickled:
        name = pickled.group("name")
        shown = printable_line(name if len(name) <= 100 else name[:100] + "...")
        if not exists_if_loaded(name):  # a damaged name (a byte gone wrong), not a real object
            return f"corrupt: it names {shown}, which does not exist"
        return f"refused: it contains pickled objects other than tensors and plain data (possible code: {shown})"
    # torch's weights-only refusals open with general advice (re-run with weights_only=False: never
    # for a damaged file); the reason is the first line after "WeightsUnpickler error:".
    reason = [line.strip() for line in text.partition("WeightsUnpickler error:")[2].splitlines() if line.strip()]
    detail = reason[0] if reason else text.splitlines()[0] if text else type(exc).__name__
    return f"corrupt: {printable_line(detail)}"


def is_torchscript_archive(path: Path) -> bool:
    """Whether a zip archive is one torch.jit.save wrote: it holds constants.pkl in its top folder
    (torch.load's own test), which torch.save's archives never do. A zip that cannot be read is not."""
    import zipfile

    try:
        with zipfile.ZipFile(path) as archive:
            names = archive.namelist()
    except (zipfile.BadZipFile, OSError):
        return False  # damaged or unreadable: torch.load's own error describes it
    return any(name.count("/") == 1 and name.endswith("/constants.pkl") for name in names)


def zip_pickle_protocol(path: Path) -> Optional[int]:
    """The pickle protocol of the data.pkl a torch.save zip archive holds in its top folder (2
    unless torch.save was given pickle_protocol); None when there is none to read."""
    import zipfile

    try:
        with zipfile.ZipFile(path) as archive:
            name = next((n for n in archive.namelist() if n.count("/") == 1 and n.endswith("/data.pkl")), None)
            if name is None:
                return None
            with archive.open(name) as f:
                start = f.read(2)
    except (zipfile.BadZipFile, OSError, EOFError):  # unreadable: torch.load's own error describes it
        return None
    return start[1] if len(start) == 2 and start[0] == 0x80 else None


def exists_if_loaded(name: str) -> bool:
    """Whether a pickle's global `name` ("module.attribute") may be a real object: False only when
    it cannot be one (not a dotted Python name, or its module is loaded here and has no such
    attribute: `torch._utils._rebuold_tensor_v2`). Nothing is imported or run to find out
    (attributes are looked up statically): a module not loaded yet, one that makes attributes on
    demand, or __main__ (another program's, in the pickle) may hold anything."""
    import inspect

    parts = name.split(".")
    if len(parts) == 1:  # torch names a builtin without its module ("print")
        parts = ["builtins", *parts]
    if not all(part.isidentifier() for part in parts):
        return False
    if parts[0] == "__main__":
        return True
    missing = object()
    for split in range(len(parts) - 1, 0, -1):  # the longest loaded module prefix: torch._utils, then torch
        value: Any = sys.modules.get(".".join(parts[:split]))
        if value is None:
            continue
        for part in parts[split:]:
            found = inspect.getattr_static(value, part, missing)
            if found is missing:
                return isinstance(value, type(sys)) and "__getattr__" in vars(value)  # a module's lazy names
            value = found
        return True
    return True


def _load_json_object(path: Path) -> dict[str, Any]:
    try:
        value = json.loads(path.read_text())
    except (OSError, ValueError, RecursionError) as exc:  # bad JSON or UTF-8, over-long integers, absurd nesting
        raise CheckpointError(f"{path}: not valid JSON ({str(exc)[:200]})") from exc
    if not isinstance(value, dict):
        raise CheckpointError(f"{path}: expected a JSON object, got {type(value).__name__}")
    return value


def load_config(ckpt: Path) -> dict[str, Any]:
    path = ckpt / "config.json"
    if not path.is_file():
        raise CheckpointError(f"{path}: file not found")
    return _load_json_object(path)


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
    """meta.json (step, metrics, dataset facts); {} when absent. Fields that are read are checked."""
    path = ckpt / "meta.json"
    if not path.is_file():
        return {}
    meta = _load_json_object(path)
    check_field(isinstance(meta.get("dataset", {}), dict), path, "dataset", "is not an object")
    for field in MODEL_DATA_FIELDS:
        value = meta.get("dataset", {}).get(field)
        check_field(value is None or (isinstance(value, int) and not isinstance(value, bool)), path,
                    f"dataset.{field}", f"is {value!r}, expected an integer")
    check_field(isinstance(meta.get("metrics", {}), dict), path, "metrics", "is not an object")
    check_field(isinstance(meta.get("eval_pending", False), bool), path, "eval_pending",
                f"is {meta.get('eval_pending')!r}, expected true or false")
    step = meta.get("step", 0)
    check_field(isinstance(step, int) and not isinstance(step, bool) and step >= 0, path, "step",
                f"is {step!r}, expected an integer >= 0")
    return meta


def load_weights(model: torch.nn.Module, ckpt: Path, use_ema: bool) -> str:
    """Load model.pt (and, if asked and present, the EMA weights over it), after checking that
    every tensor has this model's name, shape and dtype and finite values. Returns which."""
    own = {name: t.detach() for name, t in model.state_dict().items()}
    state = load_file(ckpt / "model.pt")
    check_tensors(state, own, ckpt / "model.pt", "model")
    model.load_state_dict(state, strict=True)
    if use_ema and (ckpt / "ema.pt").is_file():
        ema = load_file(ckpt / "ema.pt")
        if ema:
            params = dict(model.named_parameters())
            check_tensors(ema, {name: p.detach().float() for name, p in params.items()}, ckpt / "ema.pt", "ema")
            with torch.no_grad():
                for name, p in params.items():
                    p.copy_(ema[name])
            return "ema"
    return "model"
