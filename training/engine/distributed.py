"""Data parallelism under torchrun: one process per device, PyTorch's DistributedDataParallel.

Why DDP and not FSDP2: the models here are small (millions of parameters) and fit on every
device many times over; sharding them would add communication and buy nothing. DDP keeps a
full replica per rank and all-reduces the gradients (the sparse puzzle-embedding table's
included, so the sign-SGD update sees the global batch's gradient on every rank).

`torchrun --nproc-per-node N pretrain.py ...` sets RANK, WORLD_SIZE, LOCAL_RANK and the
rendezvous variables; `python pretrain.py` (or torchrun with one process) runs without a
process group, exactly as before. Collectives here are no-ops in a single process.
"""

from __future__ import annotations

import gc
import os
import pickle
import signal
import sys
import threading
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, Callable, Optional

import torch
import torch.distributed as dist

from core.dicts import flatten
from core.early_signals import STOP_SIGNALS
from core.errors import ReportedError
from core.signals import Interrupted


class DistributedError(ReportedError):
    """A multi-process set-up that cannot work (ranks that disagree, a peer that died); every
    rank reports it in one line."""


@dataclass(frozen=True)
class World:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    backend: Optional[str] = None

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def tag(self) -> str:
        """' (rank r of n)' for messages, '' in a single process."""
        return f" (rank {self.rank} of {self.world_size})" if self.distributed else ""


def launched_by_torchrun() -> bool:
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def init_world(device: str, timeout_s: float) -> World:
    """Join the process group torchrun describes (NCCL on CUDA, gloo on the CPU), or return
    the single-process world."""
    if not launched_by_torchrun():
        return World()
    try:
        rank, world_size = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
        local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    except (KeyError, ValueError) as exc:
        raise DistributedError(f"torchrun environment: RANK/WORLD_SIZE/LOCAL_RANK missing or not integers ({exc})") from exc
    use_cuda = device != "cpu" and torch.cuda.is_available()
    if use_cuda:
        if local_rank >= torch.cuda.device_count():
            raise DistributedError(f"LOCAL_RANK={local_rank} but this machine has {torch.cuda.device_count()} CUDA "
                                   "device(s); use --nproc-per-node <= the number of GPUs")
        torch.cuda.set_device(local_rank)
    backend = "nccl" if use_cuda else "gloo"
    if not dist.is_initialized():
        dist.init_process_group(backend, timeout=timedelta(seconds=timeout_s))
    return World(rank, world_size, local_rank, backend)


def close_world(world: World, finished: bool = False) -> None:
    """Tear the process group down while the interpreter is fully alive (a gloo group left
    to interpreter shutdown can abort the process). After a run that ended normally the ranks
    first meet at a barrier, so none closes its connections while another still uses them;
    after an error they do not (a dead peer would make it wait). Whatever still refers to the
    group (a DDP model in a reference cycle) is collected first. The teardown always runs; a
    rank that had finished and saved only warns about a peer or a signal at the barrier, or
    a teardown that failed, and an error being reported is never replaced by them."""
    if not (world.distributed and dist.is_initialized()):
        return
    where = f"rank {world.rank} of {world.world_size}"
    pending: Optional[BaseException] = None
    try:
        if finished:
            try:
                dist.barrier()
            except Interrupted as exc:
                warn(f"{where}: {exc} while waiting for the other ranks at the end; this rank had finished and saved")
            except Exception as exc:
                if lost_peer(exc, world) is None:
                    pending = exc
                else:
                    warn(f"{where}: another rank did not reach the final barrier ({first_line(exc)}); this rank had "
                         "finished and saved")
    finally:
        # After an error, torchrun is about to SIGTERM the surviving ranks: that signal must not
        # replace the error this rank is reporting. (Destroying the group waits for no other rank.)
        ignored = [] if finished or threading.current_thread() is not threading.main_thread() else STOP_SIGNALS
        previous = {signum: signal.signal(signum, signal.SIG_IGN) for signum in ignored}
        try:
            gc.collect()
            dist.destroy_process_group()
        except Exception as exc:
            warn(f"{where}: tearing the process group down failed ({first_line(exc)})")
        finally:
            for signum, handler in previous.items():
                signal.signal(signum, handler)
    if pending is not None:
        raise pending


def warn(message: str) -> None:
    print(f"warning: {message}", file=sys.stderr, flush=True)


def first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return (text.splitlines()[0] if text else type(exc).__name__)[:200]


def all_reduce_(tensor: torch.Tensor, world: World, op: str = "sum") -> torch.Tensor:
    """In place, on the device; no host sync."""
    if world.distributed:
        dist.all_reduce(tensor, op={"sum": dist.ReduceOp.SUM, "max": dist.ReduceOp.MAX,
                                    "min": dist.ReduceOp.MIN}[op])
    return tensor


def broadcast_object(obj: Any, world: World) -> Any:
    """Rank 0's `obj` on every rank."""
    if not world.distributed:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def all_gather_object(obj: Any, world: World) -> list[Any]:
    if not world.distributed:
        return [obj]
    out: list[Any] = [None] * world.world_size
    dist.all_gather_object(out, obj)
    return out


# torch 2.13 deprecated all_gather_into_tensor (a FutureWarning on every rank) for all_gather_single,
# which older torch (2.4 ..) lacks: the current name where it exists.
all_gather_single = getattr(dist, "all_gather_single", None) or dist.all_gather_into_tensor


def gather_rows(tensor: torch.Tensor, world: World) -> torch.Tensor:
    """Concatenate every rank's (b, ...) tensor in rank order: (world_size * b, ...)."""
    if not world.distributed:
        return tensor
    out = torch.empty((world.world_size * tensor.shape[0],) + tuple(tensor.shape[1:]), dtype=tensor.dtype,
                      device=tensor.device)
    all_gather_single(out, tensor.contiguous())
    return out


def barrier(world: World) -> None:
    if world.distributed:
        dist.barrier()


def check_same_everywhere(what: str, value: Any, world: World) -> None:
    """Refuse ranks that disagree (e.g. launched with different overrides): every rank raises
    the same one-line error naming the first rank that differs from rank 0."""
    if not world.distributed:
        return
    values = all_gather_object(pickle.dumps(value), world)
    for rank, other in enumerate(values):
        if other != values[0]:
            differing = ""
            if isinstance(value, dict):
                mine, theirs = flatten(pickle.loads(values[0])), flatten(pickle.loads(other))
                keys = sorted(k for k in set(mine) | set(theirs) if mine.get(k) != theirs.get(k))
                differing = f" ({', '.join(keys[:3])})"
            raise DistributedError(f"{what} differs between rank 0 and rank {rank}{differing}; launch every rank "
                                   "with the same command")


def on_rank_zero(fn: Callable[[], Any], world: World) -> Any:
    """Run `fn` on rank 0 and hand its result to every rank; if it raises one of our one-line
    errors, every rank raises it (instead of the others waiting forever for rank 0)."""
    if not world.distributed:
        return fn()
    outcome: tuple[str, Any] = ("ok", None)
    error = None
    if world.is_main:
        try:
            outcome = ("ok", fn())
        except ReportedError as exc:
            outcome, error = ("error", str(exc)), exc
    outcome = broadcast_object(outcome, world)
    if error is not None:
        raise error
    if outcome[0] == "error":
        raise DistributedError(outcome[1])
    return outcome[1]


def lost_peer(exc: BaseException, world: World) -> Optional[DistributedError]:
    """A one-line error for a collective that failed because another rank died, hung past
    `train.dist_timeout_s`, or the connection broke; None for any other exception."""
    if not world.distributed:
        return None
    text = str(exc)
    communication = isinstance(exc, getattr(dist, "DistError", ())) or (isinstance(exc, RuntimeError) and any(
        marker in text for marker in ("gloo", "NCCL", "Connection reset", "Connection closed", "Timed out", "timed out")))
    if not communication:
        return None
    first = text.strip().splitlines()[0] if text.strip() else type(exc).__name__
    return DistributedError(f"rank {world.rank} of {world.world_size} lost contact with another rank ({first[:200]}); "
                            "the last checkpoint is intact: resume with train.resume=true")
