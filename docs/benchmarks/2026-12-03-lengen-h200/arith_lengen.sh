#!/usr/bin/env bash
# Issue 21, item 3: length generalisation of addition on one H200 (nvidia-h200, one device call,
# timeout_s 590): cfg_arith_lengen trains on 1..8-digit decimal operands (val/ the same range),
# then the last checkpoint is scored on val/ (in distribution) and test/ (9..16 digits, out of
# distribution). Needs the wheelhouse in .whl (bash ../shared/tools/gpu-wheelhouse.sh).
#   bash docs/benchmarks/2026-12-03-lengen-h200/arith_lengen.sh [overrides...]
# Overrides go to pretrain.py after the script's own (e.g. train.max_train_seconds=250 when less
# device time is left; CAP=seconds then bounds the training process, default 500).
# Results in $OUT: build.log, train.log, metrics.jsonl, eval_val.log, eval_test.log (the last
# line of each is the JSON of metrics). Run 2026-12-03 with train.max_train_seconds=200 (docs/BENCHMARKS.md).
set -uo pipefail
t0=$(date +%s)
elapsed() { echo $(( $(date +%s) - t0 )); }
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
  && export PYTHONPATH=/tmp/site || exit 1
export WANDB_MODE=disabled PYTHONUNBUFFERED=1
OUT=${OUT:-/tmp/out}; mkdir -p "$OUT"
common=(logging.runs_dir=/tmp/runs logging.progress=false logging.wandb_mode=disabled logging.run_name=lengen)
python3 scripts/build_data.py --config-name cfg_arith_lengen "${common[@]}" > "$OUT/build.log" 2>&1 \
  || { tail -3 "$OUT/build.log"; exit 1; }
echo "data ready at $(elapsed) s"
# The config's 7,000 steps are sized for ~400 s (an estimate); the cap keeps the call inside 10 minutes.
timeout -s TERM "${CAP:-500}" python3 pretrain.py --config-name cfg_arith_lengen "${common[@]}" train.max_train_seconds=420 \
  "$@" > "$OUT/train.log" 2>&1
echo "training ended (rc $?) at $(elapsed) s"; tail -2 "$OUT/train.log"
run=/tmp/runs/trm-arith-lengen/lengen
cp "$run/metrics.jsonl" "$OUT/metrics.jsonl"
for split in val test; do
  python3 scripts/evaluate.py --checkpoint "$run" --split "$split" > "$OUT/eval_$split.log" 2>&1
  echo "evaluate --split $split (rc $?) at $(elapsed) s"; tail -1 "$OUT/eval_$split.log" | cut -c1-400
done
