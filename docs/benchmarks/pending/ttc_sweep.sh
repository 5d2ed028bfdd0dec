#!/usr/bin/env bash
# Issue 22 (test-time compute): train one 400-second recipe, then sweep its checkpoint over ACT
# steps {16, 32, 64} x votes K {1, 4, 8, 16} x policies (majority, confidence, check) with
# scripts/ttc_sweep.py. One nvidia-h200 call per config, each under 9.5 min (timeout_s 590):
#   bash docs/benchmarks/pending/ttc_sweep.sh cfg_sudoku_400s
#   bash docs/benchmarks/pending/ttc_sweep.sh cfg_lsa_400s
# Wall-time plan (from the call's start): data built first (`scripts/build_data.py`), training
# stopped by SIGTERM at 480 s at the latest (it checkpoints and exits; its own budget is
# train.max_train_seconds=400), the sweep bounded to what is left before 560 s (--max-seconds;
# cells it cannot finish are listed as skipped) on the first 512 test instances (estimate for
# Sudoku's TRM at ~15 ms per ACT step of 256 instances: ~3.5 s per candidate over the three budgets,
# so ~55 s for all 16; not measured). Needs the
# wheelhouse in .whl (bash ../shared/tools/gpu-wheelhouse.sh matplotlib). Results in $OUT:
# train.log, metrics.jsonl, ttc/ttc_sweep.{json,md,png}, sweep.log. Not yet run: no results here.
set -uo pipefail
cfg=${1:?cfg_sudoku_400s|cfg_lsa_400s}
case "$cfg" in cfg_sudoku_400s|cfg_lsa_400s) ;; *) echo "ttc_sweep.sh: unknown config $cfg" >&2; exit 2 ;; esac
t0=$(date +%s)
elapsed() { echo $(( $(date +%s) - t0 )); }
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
  && export PYTHONPATH=/tmp/site || exit 1
export WANDB_MODE=disabled PYTHONUNBUFFERED=1
OUT=${OUT:-/tmp/out}; mkdir -p "$OUT"
common=(logging.runs_dir=/tmp/runs logging.progress=false logging.wandb_mode=disabled logging.run_name=ttc)
python3 scripts/build_data.py --config-name "$cfg" "${common[@]}" > "$OUT/build.log" 2>&1 || { tail -3 "$OUT/build.log"; exit 1; }
echo "data ready at $(elapsed) s"
train_left=$(( 480 - $(elapsed) ))
timeout -s TERM "$train_left" python3 pretrain.py --config-name "$cfg" "${common[@]}" > "$OUT/train.log" 2>&1
echo "training ended (rc $?) at $(elapsed) s"; tail -2 "$OUT/train.log"
run=$(ls -d /tmp/runs/*/ttc | head -1)
cp "$run/metrics.jsonl" "$OUT/metrics.jsonl" 2>/dev/null
sweep_left=$(( 560 - $(elapsed) - 25 ))  # 25 s for loading the models and writing the report
[ "$sweep_left" -gt 10 ] || { echo "no time left for the sweep ($(elapsed) s)"; exit 1; }
timeout -s TERM $(( sweep_left + 20 )) python3 scripts/ttc_sweep.py --checkpoint "$run" --out "$OUT/ttc" \
  --act-steps 16,32,64 --votes 1,4,8,16 --vote-policies majority,confidence,check --max-examples 512 \
  --max-seconds "$sweep_left" > "$OUT/sweep.log" 2>&1
echo "sweep ended (rc $?) at $(elapsed) s"; tail -3 "$OUT/sweep.log"
cat "$OUT/ttc/ttc_sweep.md" 2>/dev/null
