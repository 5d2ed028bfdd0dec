"""Measure training and evaluation throughput of a run config on this machine.

    python scripts/benchmark.py --config-name cfg_lsa                       # attention
    python scripts/benchmark.py --config-name cfg_lsa arch=trm_mlp          # MLP over the sequence
    python scripts/benchmark.py --config-name cfg_lsa_cpu --steps 10 --windows 3

Runs the real training step (`training.loop.train_step`, compiled as training compiles it):
one timed first step (compilation included), warm-up steps, then `--windows` windows of
`--steps` steps each, synchronised at both ends; reports the median. Evaluation throughput
is one full pass over the test split (every example run to halt_max_steps) after a warm-up
pass. FLOPs per step are counted by `TRM.step_flops` (matmuls and attention); MFU is that
over `--peak-tflops` (default 790: the bf16 matrix rate measured on the H100/H200 here).
Prints a table and, last, one JSON line.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402
from dataset.common import InputError  # noqa: E402
from training.config import compose_config, validate_config  # noqa: E402
from training.evaluation import even_batch_size  # noqa: E402
from training.loop import build_train_state, run_evaluation, train_step  # noqa: E402

def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def benchmark(config_name: str, overrides: list[str], steps: int, windows: int, warmup: int, peak_tflops: float,
              eval_passes: int) -> dict:
    raw = compose_config(config_name, overrides)
    raw["train"]["save_checkpoints"] = False
    cfg = validate_config(raw)
    state = build_train_state(cfg, progress=False)
    device, model, batch = state.device, state.model, cfg.train.global_batch_size
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)

    t0 = time.perf_counter()
    train_step(state)
    sync(device)
    first_step = time.perf_counter() - t0
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

    eval_rates = []
    num_test = state.data.test.num_examples
    for i in range(eval_passes + 1):  # the first pass compiles the evaluation graph
        sync(device)
        t0 = time.perf_counter()
        run_evaluation(state, save_path=None)
        sync(device)
        if i:
            eval_rates.append(num_test / (time.perf_counter() - t0))

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
        "eval_examples": num_test,
        "eval_batch_size": even_batch_size(num_test, cfg.train.eval_batch_size or batch),
        "halt_max_steps": model.cfg.halt_max_steps,
    }
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config-name", default="cfg_lsa")
    parser.add_argument("--steps", type=int, default=20, help="steps per timed window")
    parser.add_argument("--windows", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=10, help="untimed steps after the first")
    parser.add_argument("--eval-passes", type=int, default=2, help="timed evaluation passes (after one warm-up)")
    parser.add_argument("--peak-tflops", type=float, default=790.0)
    args, overrides = parser.parse_known_args()
    bad = [o for o in overrides if o.startswith("--")]
    if bad:
        parser.error(f"unknown option {bad[0]} (Hydra overrides look like key=value)")
    try:
        r = benchmark(args.config_name, overrides, args.steps, args.windows, args.warmup, args.peak_tflops, args.eval_passes)
    except InputError as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(2)
    rows = [
        ("device", r["device"]), ("compiled", r["compiled"]), ("batch x length", f"{r['global_batch_size']} x {r['sequence_length']}"),
        ("first step (compile) s", f"{r['first_step_seconds']:.1f}"), ("train steps/s", f"{r['steps_per_sec']:.3f}"),
        ("train samples/s", f"{r['samples_per_sec']:.0f}"), ("train tokens/s", f"{r['tokens_per_sec']:.3g}"),
        ("FLOP/step", f"{r['flops_per_step']:.3g}"), ("achieved TFLOP/s", f"{r['achieved_tflops']:.1f}"),
        ("MFU", f"{100 * r['mfu']:.1f}%"),
        ("peak memory GiB", "n/a" if r["peak_memory_gib"] is None else f"{r['peak_memory_gib']:.2f}"),
        ("eval samples/s", "n/a" if r["eval_samples_per_sec"] is None else f"{r['eval_samples_per_sec']:.0f}"),
        ("eval batch (evened)", str(r["eval_batch_size"])),
    ]
    width = max(len(k) for k, _ in rows)
    for k, v in rows:
        print(f"{k:<{width}}  {v}")
    print(json.dumps(r))


if __name__ == "__main__":
    main()
