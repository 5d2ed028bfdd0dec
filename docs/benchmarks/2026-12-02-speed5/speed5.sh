#!/usr/bin/env bash
# Issue 18, second pass: the cold first step with the optimizer's and EMA's guarded updates
# as foreach ops (the new default, nothing to compile) against the compiled ones
# (train.compile_optimizer=true), one H200. Not yet run: no results here.
#   device call (nvidia-h200, carry .whl; build it first with bash ../shared/tools/gpu-wheelhouse.sh):
#     bash docs/benchmarks/pending/speed5.sh
# Each measurement is scripts/benchmark.py in its own process (cfg_lsa, batch 768, 3 windows of
# 20 steps after 5 warm-up steps, no evaluation) with its own new empty TORCHINDUCTOR_CACHE_DIR
# and TRITON_CACHE_DIR: TRM, HRM and the transformer with the default, TRM with the compiled
# updates, then TRM again in the cache its cold run wrote (warm); then, while time is left
# (BUDGET, 540 s), the transformer with the compiled updates and tests/test_gpu.py's check of the
# foreach updates against the compiled ones. Expected ~4-5 min in all (the cfg_lsa dataset is
# built first, untimed). Logs and summary.md go to $OUT.
#   SPEED5_CPU=1: the same sequence on the CPU at tiny sizes, uncompiled (checks this script).
#   DRY=1: print the commands only.
set -uo pipefail
OUT=${OUT:-/tmp/out}; mkdir -p "$OUT"
PY=${PY:-python3}
if [[ -z ${DRY:-} && -d .whl ]]; then
  $PY -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
    && export PYTHONPATH=/tmp/site || exit 1
fi
export PYTHONUNBUFFERED=1 WANDB_MODE=disabled
BUDGET=${BUDGET:-540}  # seconds for the whole script (a device call may run 600): later runs get what is left
deadline=$((SECONDS + BUDGET))
caches=$(mktemp -d)
data=() transformer=(arch=transformer)
if [[ -n ${SPEED5_CPU:-} ]]; then
  config=cfg_lsa_cpu limit=120 data=(data.path="$caches/data")
  transformer+=("~arch.H_cycles" "~arch.L_cycles")  # the CPU preset's TRM sizes
  common=("${data[@]}" arch.hidden_size=32 arch.num_heads=2 train.global_batch_size=32 train.compile=off
          --windows 1 --steps 2 --warmup 1)
else
  config=cfg_lsa limit=120
  common=(--windows 3 --steps 20 --warmup 5)
fi

run() {  # name, cache name, then benchmark.py's overrides
  local name=$1 cache=$2; shift 2
  local left=$((deadline - SECONDS))
  ((left < 30)) && { echo "=== $name: skipped, $left s left of the script's ${BUDGET}s"; return 0; }
  local cmd=(timeout "$((left < limit ? left : limit))" "$PY" scripts/benchmark.py --config-name "$config" --compile-cache as-found
             --eval-passes 0 --time-updates "${common[@]}" "$@")
  echo "=== $name (cache $cache) $(date -u +%H:%M:%S): ${cmd[*]}"
  [[ -n ${DRY:-} ]] && return 0
  TORCHINDUCTOR_CACHE_DIR="$caches/$cache/inductor" TRITON_CACHE_DIR="$caches/$cache/triton" \
    "${cmd[@]}" >"$OUT/$name.log" 2>&1
  echo "rc=$? $(date -u +%H:%M:%S)"
  grep -E "first step|first updates|steps/s|peak memory|[Ee]rror" "$OUT/$name.log" | grep -v '^{' | head -8
}

if [[ -z ${DRY:-} ]]; then  # the dataset, untimed (every run below reads it)
  timeout 150 "$PY" scripts/build_data.py --config-name "$config" "${data[@]}" >"$OUT/build_data.log" 2>&1 \
    || { echo "dataset build failed: $OUT/build_data.log"; tail -3 "$OUT/build_data.log"; exit 1; }
fi
[[ -z ${DRY:-} ]] && nvidia-smi --query-gpu=name,driver_version,power.limit --format=csv,noheader >"$OUT/machine.log" 2>&1
[[ -z ${DRY:-} ]] && $PY -c "import torch, sys; print(sys.version.split()[0], torch.__version__)" >>"$OUT/machine.log" 2>&1
run trm_cold trm
run hrm_cold hrm arch=hrm
run transformer_cold transformer "${transformer[@]}"
run trm_compiled_optimizer_cold trm_compiled train.compile_optimizer=true
run trm_warm trm
run transformer_compiled_optimizer_cold transformer_compiled "${transformer[@]}" train.compile_optimizer=true  # if time is left
[[ -n ${DRY:-} ]] && exit 0
if [[ -z ${SPEED5_CPU:-} ]] && ((deadline - SECONDS > 60)); then  # the foreach updates against the compiled ones on CUDA
  echo "=== test_gpu optimizer/EMA $(date -u +%H:%M:%S)"
  TORCHINDUCTOR_CACHE_DIR="$caches/t/inductor" TRITON_CACHE_DIR="$caches/t/triton" timeout $((deadline - SECONDS)) \
    $PY -m pytest -q tests/test_gpu.py -k compiled_optimizer_and_ema >"$OUT/test_gpu_updates.log" 2>&1
  echo "rc=$?"; tail -n 1 "$OUT/test_gpu_updates.log"
fi
rm -rf "$caches"

$PY - "$OUT" <<'EOF' | tee "$OUT/summary.md"
import json, sys
from pathlib import Path
out = Path(sys.argv[1])
print("| run | first step s | optimizer / EMA first call s | steps/s | peak GiB |")
print("|---|---|---|---|---|")
for name in ("trm_cold", "hrm_cold", "transformer_cold", "trm_compiled_optimizer_cold", "trm_warm",
             "transformer_compiled_optimizer_cold"):
    log = out / f"{name}.log"
    lines = [l for l in log.read_text().splitlines() if l.startswith("{")] if log.exists() else []
    if not lines:
        print(f"| {name} | {'failed: see ' + log.name if log.exists() else 'not run (time)'} | | | |")
        continue
    r = json.loads(lines[-1])
    u = r.get("first_update_seconds") or {}
    peak = "n/a" if r["peak_memory_gib"] is None else f"{r['peak_memory_gib']:.2f}"
    print(f"| {name} | {r['first_step_seconds']:.1f} | {u.get('optimizer', float('nan')):.2f} / "
          f"{u.get('ema', float('nan')):.2f} | {r['steps_per_sec']:.2f} | {peak} |")
EOF
