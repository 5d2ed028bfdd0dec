#!/usr/bin/env bash
# A shipped 400-second recipe on its test split, cold, exactly as shipped: one nvidia-h200 call
# (timeout_s 590), from the repository root with the wheelhouse in .whl
# (bash ../shared/tools/gpu-wheelhouse.sh matplotlib safetensors):
#   bash docs/benchmarks/pending/ship.sh CONFIG [overrides...]
#   bash docs/benchmarks/pending/ship.sh cfg_arith_mul train.max_train_seconds=400 ...   # issue 21, once its recipe is chosen
# (the two cfg_sudoku_400s test runs of 2026-12-03 were `ship.sh cfg_sudoku_400s [train.seed=1]`; the
# copy beside their results, docs/benchmarks/2026-12-03-sudoku-ship/ship.sh, is the script as they ran.)
# The run is `python3 pretrain.py --config-name CONFIG [overrides]` plus logging overrides, with new
# empty Inductor and Triton caches (cold), the dataset built first in the same call (Sudoku with 16
# workers: the builder's output does not depend on them), SIGTERM when the call nears 565 s.
# Call time for cfg_sudoku_400s: wheels ~10 s, the build ~65-90 s (64 s, and 87 s with a 1000-puzzle
# val split, on 2026-12-03), 400 s of training, ~7 evaluations of 1000 puzzles. (docs/benchmarks/2026-12-03-lsa-ship/
# lsa_ship.sh is the LSA call of 2026-12-03, kept as it ran.)
# Results in $OUT: machine.txt, build.log, ship.log, ship.metrics.jsonl; printed: the depth
# switches, the stop line, the first step's seconds and every evaluation with the task's metrics.
# ALSO_SPLITS="val" (with a dataset built with a val split, e.g. for multiplication
# data.path=data/arith-mul-b10-d1-4-val2k +data.build_args.val_size=2000: train and test are the
# shipped ones byte for byte) scores the run's last checkpoint on those splits too, after training
# (scripts/evaluate.py --split S, EMA weights, the run's halting): the same model on val and test.
# Each such evaluation: ~10-20 s for 2000 arithmetic problems; results eval_S.log.
set -uo pipefail
cfg=${1:?CONFIG, e.g. cfg_sudoku_400s}; shift
case "$cfg" in
  cfg_sudoku*) build_extra=(+data.build_args.workers=16) ;;
  *) build_extra=() ;;
esac
t0=$(date +%s)
elapsed() { echo $(( $(date +%s) - t0 )); }
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
  && export PYTHONPATH=/tmp/site || exit 1
export WANDB_MODE=disabled PYTHONUNBUFFERED=1 TORCHINDUCTOR_CACHE_DIR=$(mktemp -d) TRITON_CACHE_DIR=$(mktemp -d)
OUT=${OUT:-/tmp/out}; mkdir -p "$OUT"
common=(logging.runs_dir=/tmp/runs logging.progress=false logging.wandb_mode=disabled logging.run_name=ship)
{ nvidia-smi --query-gpu=name,driver_version --format=csv; python3 -c "import torch; print('torch', torch.__version__)"; } \
  > "$OUT/machine.txt" 2>&1
python3 scripts/build_data.py --config-name "$cfg" "${build_extra[@]}" "${common[@]}" "$@" > "$OUT/build.log" 2>&1 \
  || { tail -3 "$OUT/build.log"; exit 1; }
echo "data ready at $(elapsed) s"
timeout -s TERM $(( 565 - $(elapsed) )) python3 pretrain.py --config-name "$cfg" "${common[@]}" "$@" > "$OUT/ship.log" 2>&1
echo "rc $? at $(elapsed) s"
grep -E "^(depth curriculum|stopping)" "$OUT/ship.log"; tail -1 "$OUT/ship.log" | cut -c1-600
find /tmp/runs -path "*/ship/metrics.jsonl" -exec cp {} "$OUT/ship.metrics.jsonl" \;
python3 - "$OUT/ship.metrics.jsonl" <<'PY'
import json, sys
records = [json.loads(line) for line in open(sys.argv[1])]
print("first step", [r["perf/first_step_seconds"] for r in records if "perf/first_step_seconds" in r])
for r in records:
    if "eval/examples" in r:  # the task's own metrics (eval/<task>/<name>), per-group counts left out
        task = ", ".join(f"{k.split('/', 1)[1]} {100 * v:.1f}%" for k, v in r.items()
                         if k.startswith("eval/") and k.count("/") >= 2 and not k.endswith(("count", "difference")))
        print(f"step {r['step']}: {r['train/seconds']:.1f} s, exact {100 * r['eval/exact_accuracy']:.1f}%; {task}")
PY
[ -n "${ALSO_SPLITS:-}" ] && run_dir=$(find /tmp/runs -mindepth 2 -maxdepth 2 -type d -name ship | head -1)
for split in ${ALSO_SPLITS:-}; do
  [ -n "$run_dir" ] || { echo "no run directory to evaluate on $split"; break; }
  (( 590 - $(elapsed) < 20 )) && { echo "evaluate --split $split: skipped, $(( 590 - $(elapsed) )) s left"; break; }
  timeout -s TERM $(( 590 - $(elapsed) )) python3 scripts/evaluate.py --checkpoint "$run_dir" --split "$split" \
    --no-progress > "$OUT/eval_$split.log" 2>&1
  echo "evaluate --split $split: rc $? at $(elapsed) s"; tail -3 "$OUT/eval_$split.log" | cut -c1-600
done
