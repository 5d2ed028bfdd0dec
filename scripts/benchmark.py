"""Measure training and evaluation throughput of a run config on this machine.

    python scripts/benchmark.py --config-name cfg_lsa                       # attention
    python scripts/benchmark.py --config-name cfg_lsa arch=trm_mlp          # MLP over the sequence
    python scripts/benchmark.py --config-name cfg_lsa_cpu --steps 10 --windows 3

Runs the real training step (`training.loop.train_step`, compiled as training compiles it):
one timed first step (compilation included), warm-up steps, then `--windows` windows of
`--steps` steps each, synchronised at both ends; reports the median. Evaluation throughput
is one full pass over the test split (every example run to halt_max_steps) after a warm-up
pass. `--reference-loop` also times the reference implementation's evaluation loop run on
this model (full-size padded batches, a host sync after every ACT step to test "all halted",
predictions copied to the host per batch): a stand-in for the reference's own figure, which
DESIGN.md does not give. FLOPs per step are counted by `step_flops` (models/act.py: matmuls and attention); MFU is that
over `--peak-tflops` (default 790: the bf16 matrix rate measured on the H100/H200 here).
Prints a table and, last, one JSON line.

Compile time: by default (`--compile-cache fresh`) the measurement runs twice, each in its own
process, with a new empty Inductor/Triton cache: first cold (the cache empty, as on a fresh
machine), then warm (the cache the cold run wrote, as for a later run of the same config);
steps/s, memory and evaluation come from the warm run (without compiling, the cold run alone).
`--compile-cache as-found` runs once in this process with whatever cache the environment
points to. Where the model is the reference's setup (TRM, hidden 512, 2 layers, H 3, L 6,
batch 768, 97 positions), the reference's figures from DESIGN.md (one H200, measured
alternately with ours on 2026-12-02) are printed beside ours.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402
from core.errors import InputError  # noqa: E402
from dataset.loader import eval_batches  # noqa: E402
from training.config import validate_config  # noqa: E402
from training.hydra_guard import compose_config  # noqa: E402
from training.engine.evaluation import even_batch_size  # noqa: E402
from training.loop import run_evaluation, train_step
from training.engine.setup import build_train_state  # noqa: E402

# The reference implementation on one H200, alternately with ours, 2026-12-02 (DESIGN.md).
REFERENCE = {"attention": {"steps_per_sec": 9.81, "peak_memory_gib": 19.7},
             "mlp": {"steps_per_sec": 7.33, "peak_memory_gib": 29.5}}
REFERENCE_SETUP = {"name": "trm", "hidden_size": 512, "num_layers": 2, "H_cycles": 3, "L_cycles": 6}


def reference_figures(model, batch_size: int) -> dict | None:
    """The reference's figures for this model, when it is the reference's setup (else None)."""
    arch = model.cfg.model_dump()
    same = all(arch.get(k) == v for k, v in REFERENCE_SETUP.items())
    if not same or batch_size != 768 or model.prefix_len + model.seq_len != 97:
        return None
    return REFERENCE[model.cfg.mixer]


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def reference_style_evaluation(state) -> None:
    """The reference's loop over the test split: batches of global_batch_size (the last one
    padded), ACT steps until `carry["halted"].all()` is read back true, outputs to the host."""
    model, batch_size = state.model, state.cfg.train.global_batch_size
    model.eval()
    try:
        with state.ema.swapped() if state.ema is not None else contextlib.nullcontext():
            for batch, _ in eval_batches(state.eval_arrays, state.eval_arrays.tensors["inputs"].shape[0], batch_size):
                carry = model.initial_carry(batch)
                while True:
                    carry, _, _, outputs = state.step_fn(carry, batch)
                    if bool(carry["halted"].all()):
                        break
                for value in outputs.values():  # the reference copies each batch's outputs to the host
                    value.cpu()
    finally:
        model.train()


def timed_passes(device: torch.device, passes: int, examples: int, run) -> list[float]:
    """examples/s of `passes` calls of run() after one untimed call (which compiles); none
    at all for passes=0."""
    rates = []
    for i in range(passes + 1 if passes else 0):
        sync(device)
        t0 = time.perf_counter()
        run()
        sync(device)
        if i:
            rates.append(examples / (time.perf_counter() - t0))
    return rates


def first_call_timed(fn, device: torch.device, times: dict, name: str):
    """fn, timing its first call (compile included) into times[name], synchronised at both ends."""
    def wrapper(*args, **kwargs):
        sync(device)
        t0 = time.perf_counter()
        out = fn(*args, **kwargs)
        sync(device)
        times.setdefault(name, time.perf_counter() - t0)
        return out
    return wrapper


def benchmark(config_name: str, overrides: list[str], steps: int, windows: int, warmup: int, peak_tflops: float,
              eval_passes: int, reference_loop: bool = False, time_updates: bool = False) -> dict:
    raw = compose_config(config_name, overrides)
    raw["train"]["save_checkpoints"] = False
    cfg = validate_config(raw)
    state = build_train_state(cfg, progress=False)
    device, model, batch = state.device, state.model, cfg.train.global_batch_size
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)

    update_times: dict[str, float] = {}
    timed = [(owner, owner._update) for owner in (state.adam, state.ema) if owner is not None] if time_updates else []
    for owner, update in timed:  # the optimizer's and EMA's guarded updates, first call only
        owner._update = first_call_timed(update, device, update_times, "optimizer" if owner is state.adam else "ema")
    t0 = time.perf_counter()
    train_step(state)
    sync(device)
    first_step = time.perf_counter() - t0
    for owner, update in timed:
        owner._update = update
    for _ in range(warmup):
        train_step(state)
    sync(device)
    rates = []
    for _ in range(windows):
        t0 = time.perf_counter()
        for _ in range(steps):
            last = train_step(state)
        last.sum().item()  # a real dependency on the last step's results, then wait
        sync(device)
        rates.append(steps / (time.perf_counter() - t0))
    steps_per_sec = statistics.median(rates)
    peak_train = torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else None

    num_test = state.eval_arrays.tensors["inputs"].shape[0]  # the evaluation split's examples (data.eval_split)
    eval_rates = timed_passes(device, eval_passes, num_test, lambda: run_evaluation(state, save_path=None))
    reference_rates = timed_passes(device, eval_passes, num_test, lambda: reference_style_evaluation(state)) \
        if reference_loop else []

    length = model.prefix_len + model.seq_len
    flops = model.step_flops(batch, training=True)
    result = {
        "config": config_name,
        "overrides": overrides,
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        "compiled": state.compiled,
        "global_batch_size": batch,
        "sequence_length": length,
        "first_step_seconds": first_step,
        "steps_per_sec": steps_per_sec,
        "steps_per_sec_windows": rates,
        "samples_per_sec": steps_per_sec * batch,
        "tokens_per_sec": steps_per_sec * batch * length,
        "flops_per_step": flops,
        "achieved_tflops": flops * steps_per_sec / 1e12,
        "mfu": flops * steps_per_sec / (peak_tflops * 1e12),
        "peak_memory_gib": peak_train,
        "eval_samples_per_sec": statistics.median(eval_rates) if eval_rates else None,
        "eval_samples_per_sec_reference_loop": statistics.median(reference_rates) if reference_rates else None,
        "eval_examples": num_test,
        "eval_batch_size": even_batch_size(num_test, cfg.train.eval_batch_size or batch),
        "halt_max_steps": model.cfg.halt_max_steps,
        "compile_scope": cfg.train.compile_scope,
        "compile_optimizer": cfg.train.compile_optimizer,
        "first_update_seconds": update_times or None,
        "reference": reference_figures(model, batch),
    }
    return result


def run_child(argv: list[str], cache_dir: str) -> dict:
    """This script with `argv` in a new process whose Inductor and Triton caches are under
    `cache_dir`; its JSON line. Its table goes to this process's stderr."""
    env = dict(os.environ, TORCHINDUCTOR_CACHE_DIR=os.path.join(cache_dir, "inductor"),
               TRITON_CACHE_DIR=os.path.join(cache_dir, "triton"))
    out = subprocess.run([sys.executable, str(Path(__file__).resolve()), *argv, "--compile-cache", "as-found"],
                         env=env, stdout=subprocess.PIPE, text=True)
    sys.stderr.write(out.stdout)
    if out.returncode:
        sys.exit(out.returncode)
    return json.loads(out.stdout.strip().splitlines()[-1])


def cold_and_warm(argv: list[str]) -> dict:
    """The warm run's result, with the cold run's first step (and steps/s) beside it."""
    with tempfile.TemporaryDirectory(prefix="benchmark-compile-cache-") as cache_dir:
        cold = run_child(argv, cache_dir)
        if not cold["compiled"]:
            return {**cold, "first_step_seconds_cold": None, "first_step_seconds_warm": None}
        warm = run_child(argv, cache_dir)
    return {**warm, "first_step_seconds_cold": cold["first_step_seconds"],
            "first_step_seconds_warm": warm["first_step_seconds"], "steps_per_sec_cold_run": cold["steps_per_sec"]}


def beside(value: float | None, fmt: str, reference: dict | None, key: str) -> str:
    """`value`, and the reference's figure for `key` with the ratio when there is one."""
    if value is None:
        return "n/a"
    if not reference:
        return format(value, fmt)
    return f"{value:{fmt}}  (reference {reference[key]:{fmt}}, {value / reference[key]:.2f}x)"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config-name", default="cfg_lsa")
    parser.add_argument("--steps", type=int, default=20, help="steps per timed window")
    parser.add_argument("--windows", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=10, help="untimed steps after the first")
    parser.add_argument("--eval-passes", type=int, default=2, help="timed evaluation passes (after one warm-up); 0 skips evaluation")
    parser.add_argument("--peak-tflops", type=float, default=790.0)
    parser.add_argument("--reference-loop", action="store_true",
                        help="also time the reference's evaluation loop on this model")
    parser.add_argument("--time-updates", action="store_true",
                        help="also time the first call of the optimizer's and the EMA's guarded update (in the first step)")
    parser.add_argument("--compile-cache", choices=("fresh", "as-found"), default="fresh",
                        help="fresh: a cold then a warm run, each in its own process, in a new empty compile cache; "
                        "as-found: one run here with the cache the environment points to")
    args, overrides = parser.parse_known_args()
    bad = [o for o in overrides if o.startswith("--")]
    if bad:
        parser.error(f"unknown option {bad[0]} (Hydra overrides look like key=value)")
    if args.compile_cache == "fresh":
        r = cold_and_warm(sys.argv[1:])  # the children's own options come last: argparse keeps the last
    else:
        try:
            r = benchmark(args.config_name, overrides, args.steps, args.windows, args.warmup, args.peak_tflops,
                          args.eval_passes, args.reference_loop, args.time_updates)
        except InputError as exc:
            print(f"error: {exc}", file=sys.stderr)
            sys.exit(2)
    ref = r["reference"]
    first = [("first step (compile) s", f"{r['first_step_seconds']:.1f}")]
    if r.get("first_step_seconds_cold") is not None:
        first = [("first step s, cold cache", f"{r['first_step_seconds_cold']:.1f}"),
                 ("first step s, warm cache", f"{r['first_step_seconds_warm']:.1f}")]
    if r.get("first_update_seconds"):
        first.append(("of which first updates s", ", ".join(f"{k} {v:.2f}" for k, v in r["first_update_seconds"].items())))
    rows = [
        ("device", r["device"]),
        ("compiled", f"{r['compiled']} (scope {r['compile_scope']}, optimizer {r['compile_optimizer']})"),
        ("batch x length", f"{r['global_batch_size']} x {r['sequence_length']}"),
        *first, ("train steps/s", beside(r["steps_per_sec"], ".3f", ref, "steps_per_sec")),
        ("train samples/s", f"{r['samples_per_sec']:.0f}"), ("train tokens/s", f"{r['tokens_per_sec']:.3g}"),
        ("FLOP/step", f"{r['flops_per_step']:.3g}"), ("achieved TFLOP/s", f"{r['achieved_tflops']:.1f}"),
        ("MFU", f"{100 * r['mfu']:.1f}%"),
        ("peak memory GiB", beside(r["peak_memory_gib"], ".2f", ref, "peak_memory_gib")),
        ("eval samples/s", "n/a" if r["eval_samples_per_sec"] is None else f"{r['eval_samples_per_sec']:.0f}"),
        ("eval batch (evened)", str(r["eval_batch_size"])),
    ]
    if r["eval_samples_per_sec_reference_loop"] is not None:
        rows.append(("eval samples/s, reference loop", f"{r['eval_samples_per_sec_reference_loop']:.0f}"))
    width = max(len(k) for k, _ in rows)
    for k, v in rows:
        print(f"{k:<{width}}  {v}")
    print(json.dumps(r))


if __name__ == "__main__":
    main()
