#!/usr/bin/env bash
# Issue 20: the shipped cfg_lsa_400s (with its depth curriculum) on the test split, cold, one
# nvidia-h200 call (timeout_s 590), evaluated every 250 steps (evaluation time is not training
# time: it changes no step of the run) so the time it needs to pass the reference's 400-second
# figure (77.7% optimal cost) can be read within 20 s. From the repository root with .whl built:
#   bash docs/benchmarks/2026-12-03-lsa-ship/lsa_ship.sh [overrides...]
set -uo pipefail
t0=$(date +%s)
elapsed() { echo $(( $(date +%s) - t0 )); }
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
  && export PYTHONPATH=/tmp/site || exit 1
export WANDB_MODE=disabled PYTHONUNBUFFERED=1 TORCHINDUCTOR_CACHE_DIR=$(mktemp -d) TRITON_CACHE_DIR=$(mktemp -d)
OUT=${OUT:-/tmp/out}; mkdir -p "$OUT"
common=(logging.runs_dir=/tmp/runs logging.progress=false logging.wandb_mode=disabled logging.run_name=ship)
nvidia-smi --query-gpu=name,driver_version --format=csv > "$OUT/machine.txt" 2>&1
python3 scripts/build_data.py --config-name cfg_lsa_400s "${common[@]}" > "$OUT/build.log" 2>&1 || { tail -3 "$OUT/build.log"; exit 1; }
echo "data ready at $(elapsed) s"
timeout -s TERM $(( 565 - $(elapsed) )) python3 pretrain.py --config-name cfg_lsa_400s train.eval_interval=250 \
  "${common[@]}" "$@" > "$OUT/ship.log" 2>&1
echo "rc $? at $(elapsed) s"
grep -E "^(depth curriculum|stopping)" "$OUT/ship.log"; tail -1 "$OUT/ship.log" | cut -c1-600
cp /tmp/runs/*/ship/metrics.jsonl "$OUT/ship.metrics.jsonl"
python3 - "$OUT/ship.metrics.jsonl" <<'PY'
import json, sys
records = [json.loads(line) for line in open(sys.argv[1])]
print("first step", [r["perf/first_step_seconds"] for r in records if "perf/first_step_seconds" in r])
for r in records:
    if "eval/examples" in r:
        print(f"step {r['step']}: {r['train/seconds']:.1f} s, optimal {100 * r['eval/lsa/optimal_cost_rate']:.1f}%, "
              f"exact {100 * r['eval/exact_accuracy']:.1f}%, valid {100 * r['eval/lsa/valid_permutation_rate']:.1f}%, "
              f"projected {100 * r['eval/lsa/projected_optimal_cost_rate']:.1f}%")
PY
