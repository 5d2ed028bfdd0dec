"""Where a cold first training step's time goes, per compile scope (issue 18).

    python docs/benchmarks/2026-12-02-speed4/compile_phases.py MODE [hydra overrides]

MODE: region | step (train.compile_scope) | blocks (torch.compile on each Block, the rest of
the step eager; the optimizer and EMA compiled as in training). Times the first call of the
model step (forward, compile included), of the backward (its compile is lazy), of the
optimizer's and the EMA's compiled updates, then steps/s over 20 steps; prints Dynamo's
compile-time table. Run each MODE in a new process with empty TORCHINDUCTOR_CACHE_DIR and
TRITON_CACHE_DIR for cold figures."""

import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[3]))

import torch  # noqa: E402

from models.layers import Block  # noqa: E402
from models.losses import ACTLossHead  # noqa: E402
from training.config import compose_config, validate_config  # noqa: E402
from training.loop import train_step  # noqa: E402
from training.engine.setup import build_train_state  # noqa: E402


def timed(name, fn, times):
    def wrapper(*args, **kwargs):
        torch.cuda.synchronize()
        t0 = time.perf_counter()
        out = fn(*args, **kwargs)
        torch.cuda.synchronize()
        times.setdefault(name, time.perf_counter() - t0)
        return out
    return wrapper


def main() -> None:
    mode, overrides = sys.argv[1], sys.argv[2:]
    raw = compose_config("cfg_lsa", [*overrides, f"train.compile_scope={'step' if mode == 'blocks' else mode}"])
    raw["train"]["save_checkpoints"] = False
    cfg = validate_config(raw)
    t0 = time.perf_counter()
    state = build_train_state(cfg, progress=False)
    times = {"build_state": time.perf_counter() - t0}
    if mode == "blocks":
        for module in state.model.modules():
            if isinstance(module, Block):
                module.compile(dynamic=False)
        state.step_fn = state.train_fn = ACTLossHead(state.model)
    state.train_fn = timed("forward", state.train_fn, times)
    state.adam._update = timed("adam", state.adam._update, times)
    state.ema._update = timed("ema", state.ema._update, times)
    torch.cuda.synchronize()
    t0 = time.perf_counter()
    train_step(state)
    torch.cuda.synchronize()
    times["first_step"] = time.perf_counter() - t0
    times["backward_and_rest"] = times["first_step"] - times["forward"] - times["adam"] - times["ema"]
    for _ in range(5):
        train_step(state)
    torch.cuda.synchronize()
    t0 = time.perf_counter()
    for _ in range(20):
        last = train_step(state)
    last.sum().item()
    times["steps_per_sec"] = 20 / (time.perf_counter() - t0)
    times["peak_gib"] = torch.cuda.max_memory_allocated() / 2**30
    print(torch._dynamo.utils.compile_times(repr="str"))
    print(json.dumps({"mode": mode, "overrides": overrides, **{k: round(v, 3) for k, v in times.items()}}))


if __name__ == "__main__":
    main()
