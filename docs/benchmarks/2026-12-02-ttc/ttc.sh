#!/usr/bin/env bash
# Issues 22, 20 and 25 in one nvidia-h200 call per task (timeout_s 590):
#   bash docs/benchmarks/2026-12-02-ttc/ttc.sh cfg_lsa_400s
#   bash docs/benchmarks/2026-12-02-ttc/ttc.sh cfg_sudoku_400s
# 1. The config's dataset with a 1000-instance validation split (builder --val-size; train and test
#    byte-identical to the shipped dataset's), in a directory of its own.
# 2. The shipped recipe, exactly as shipped except that it evaluates on val (data.eval_split=val):
#    cold (new empty Inductor and Triton caches), 400 s budget, SIGTERM after 470 s at the latest.
#    Its final val figure is the baseline of the recipe searches (issues 20, 25).
# 3. scripts/ttc_sweep.py on its checkpoint: ACT steps (LSA {16, 64}, Sudoku {16, 32}) x votes
#    {1, 2, 4, 8} x policies (majority, confidence, check), first on the first 500 val instances
#    (where a test-time setting would be chosen; a third of the time left), then on the first 500
#    test instances (the table reported), each bounded by --max-seconds so the call ends by ~580 s.
#    (The first LSA call, 2026-12-02, swept ACT {16, 32, 64} x votes {1, 4, 8, 16}; K = 8 and 16
#    did not fit in the time, hence the smaller grid.)
# Everything lands in $OUT/results.tgz (logs, metrics.jsonl, both sweeps' json/md/png).
# A second argument `test-only` builds no val split (the Sudoku build with one takes ~100 s of the
# call), trains as shipped (evaluating on test) and sweeps test only:
#   bash docs/benchmarks/2026-12-02-ttc/ttc.sh cfg_sudoku_400s test-only
set -uo pipefail
cfg=${1:?cfg_sudoku_400s|cfg_lsa_400s}; mode=${2:-with-val}
build_extra=()
case "$cfg" in
  cfg_lsa_400s) data=data/lsa-9x9-10k-aug10-val1k; acts=16,64 ;;
  cfg_sudoku_400s) data=data/sudoku-hard-22-26-1k-aug1000-val1k; [ "$mode" = test-only ] && data=data/sudoku-hard-22-26-1k-aug1000; acts=16,32; build_extra=(+data.build_args.workers=16) ;;
  *) echo "ttc.sh: unknown config $cfg" >&2; exit 2 ;;
esac
t0=$(date +%s)
elapsed() { echo $(( $(date +%s) - t0 )); }
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
  && export PYTHONPATH=/tmp/site || exit 1
export WANDB_MODE=disabled PYTHONUNBUFFERED=1 TORCHINDUCTOR_CACHE_DIR=$(mktemp -d) TRITON_CACHE_DIR=$(mktemp -d)
OUT=${OUT:-/tmp/out}; mkdir -p "$OUT"; res=$(mktemp -d)
pack() { cp /tmp/runs/*/ttc/metrics.jsonl "$res/metrics.jsonl" 2>/dev/null; tar czf "$OUT/results.tgz" -C "$res" .; }
trap pack EXIT
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv > "$res/machine.txt" 2>&1
python3 -c "import torch; print('torch', torch.__version__, torch.version.cuda)" >> "$res/machine.txt" 2>&1
data_args=(data.path=$data +data.build_args.val_size=1000); eval_args=(data.eval_split=val); splits="val test"
[ "$mode" = test-only ] && { data_args=(data.path=$data); eval_args=(); splits=test; }
common=(logging.runs_dir=/tmp/runs logging.progress=false logging.wandb_mode=disabled logging.run_name=ttc)
python3 scripts/build_data.py --config-name "$cfg" "${data_args[@]}" "${build_extra[@]}" "${common[@]}" \
  > "$res/build.log" 2>&1 || { tail -3 "$res/build.log"; exit 1; }
echo "data ready at $(elapsed) s"
timeout -s TERM 470 python3 pretrain.py --config-name "$cfg" "${data_args[@]}" "${eval_args[@]}" \
  "${common[@]}" > "$res/train.log" 2>&1
echo "training ended (rc $?) at $(elapsed) s"; tail -2 "$res/train.log"; pack
run=$(ls -d /tmp/runs/*/ttc | head -1)
for split in $splits; do
  if [ $split = val ]; then left=$(( (580 - $(elapsed)) / 3 - 12 )); else left=$(( 580 - $(elapsed) - 15 )); fi
  [ "$left" -gt 10 ] || { echo "no time left for the $split sweep ($(elapsed) s)"; break; }
  timeout -s TERM $(( left + 12 )) python3 scripts/ttc_sweep.py --checkpoint "$run" --out "$res/ttc_$split" --split $split \
    --act-steps $acts --votes 1,2,4,8 --vote-policies majority,confidence,check --max-examples 500 \
    --max-seconds "$left" > "$res/sweep_$split.log" 2>&1
  echo "$split sweep ended (rc $?) at $(elapsed) s"; tail -2 "$res/sweep_$split.log"
  cat "$res/ttc_$split/ttc_sweep.md" 2>/dev/null | cut -c1-200
done
