#!/usr/bin/env bash
# Issues 20 and 25: the depth curriculum (train.depth_curriculum, docs/USAGE.md) on cfg_lsa_400s,
# judged on the validation split. One nvidia-h200 call (timeout_s 570), from the repository root,
# with the wheelhouse in .whl (bash ../shared/tools/gpu-wheelhouse.sh):
#   bash docs/benchmarks/pending/curriculum.sh [NAME [overrides...]]
#   CONFIG=cfg_sudoku_400s bash docs/benchmarks/pending/curriculum.sh [NAME [overrides...]]
#   CONFIG=cfg_arith_mul bash docs/benchmarks/pending/curriculum.sh [NAME [overrides...]]   # issue 21, item 1
# (cfg_arith_mul has no time budget of its own: the call gives it train.max_train_seconds=400 and the
# LR over the clock, optim.lr_schedule_clock=time, with train.max_steps=60000 as a cap only; its val
# split is 2000 problems from the training digit range, in distribution like its test split.)
# The dataset is the config's with a 1000-instance val split (train and test byte-identical to the
# shipped one; for LSA the directory of docs/benchmarks/2026-12-02-lsa-val/cand.sh); the run is cold
# (new empty Inductor and Triton caches), evaluates on val (LSA every 500 steps; Sudoku every 1000,
# its val build takes ~100 s of the call), 400 s budget, SIGTERM when the call nears 560 s.
# Default schedule, by training time: H_cycles 1, L_cycles 2 for the first 30% of the 400 s, then
# H 2, L 4 until 60%, then the full H 3, L 6. train.max_steps is an estimate of what fits (not
# measured): the shipped LSA recipe's 3,700 full-depth steps took 392 s (9.7 steps/s); a step at
# H 1, L 2 is 18 of 70 block-application equivalents, at H 2, L 4 40 of 70 (docs/USAGE.md), so about
# 30 and 16 steps/s if the blocks dominate -> ~3,300 + ~1,900 + ~1,550 steps: 7000 for LSA, whose
# LR's cosine runs over max_steps (if the summary's steps/s give another total, set train.max_steps
# to it next time). cfg_sudoku_400s (since 2026-12-03) and cfg_arith_mul (here) have the LR over the
# clock, where max_steps is only a cap set out of reach: 20000 (cfg_sudoku_400s's own; its 2026-12-03
# val run did 6,467 steps in 400 s, so a lower cap would end the run early) and 60000.
# Overrides after NAME win over the defaults, e.g. the baseline on the same split in the same call
# shape: bash docs/benchmarks/pending/curriculum.sh base train.depth_curriculum=null train.max_steps=3700
# (or read the shipped recipe's val figure from docs/benchmarks/2026-12-02-ttc/ttc.sh's results).
# Call time (LSA): the wheelhouse ~10 s, the build ~5 s (4.3 s on the 2-core development CPU), the run
# 400 s of training + ~15 val evaluations (~2 s each at the shipped recipe's shape) + start-up.
# Results in $OUT: build.log, NAME.log, NAME.metrics.jsonl; the last lines printed: steps/s at each
# depth and every val evaluation (step, training seconds, the task's metrics).
set -uo pipefail
name=${1:-curriculum}; [ $# -gt 0 ] && shift
cfg=${CONFIG:-cfg_lsa_400s}
case "$cfg" in
  cfg_lsa_400s) data_args=(data.path=data/lsa-9x9-10k-aug10-val1k +data.build_args.val_size=1000)
                build_extra=(); steps=7000; every=500 ;;
  cfg_sudoku_400s) data_args=(data.path=data/sudoku-hard-22-26-1k-aug1000-val1k +data.build_args.val_size=1000)
                   build_extra=(+data.build_args.workers=16); steps=20000; every=1000 ;;
  cfg_arith_mul) data_args=(data.path=data/arith-mul-b10-d1-4-val2k +data.build_args.val_size=2000
                           train.max_train_seconds=400 optim.lr_schedule_clock=time)
                 build_extra=(); steps=60000; every=2000 ;;
  *) echo "curriculum.sh: CONFIG=$cfg: expected cfg_lsa_400s, cfg_sudoku_400s or cfg_arith_mul" >&2; exit 2 ;;
esac
t0=$(date +%s)
elapsed() { echo $(( $(date +%s) - t0 )); }
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
  && export PYTHONPATH=/tmp/site || exit 1
export WANDB_MODE=disabled PYTHONUNBUFFERED=1 TORCHINDUCTOR_CACHE_DIR=$(mktemp -d) TRITON_CACHE_DIR=$(mktemp -d)
OUT=${OUT:-/tmp/out}; mkdir -p "$OUT"
common=(logging.runs_dir=/tmp/runs logging.progress=false logging.wandb_mode=disabled logging.run_name=$name)
schedule=('train.depth_curriculum={by:time,phases:[{until:0.3,H_cycles:1,L_cycles:2},{until:0.6,H_cycles:2,L_cycles:4}]}'
          train.max_steps=$steps)
python3 scripts/build_data.py --config-name "$cfg" "${data_args[@]}" "${build_extra[@]}" "${common[@]}" \
  > "$OUT/build.log" 2>&1 || { tail -3 "$OUT/build.log"; exit 1; }
echo "data ready at $(elapsed) s"
timeout -s TERM $(( 560 - $(elapsed) )) python3 pretrain.py --config-name "$cfg" "${data_args[@]}" \
  data.eval_split=val train.eval_interval=$every "${common[@]}" "${schedule[@]}" "$@" > "$OUT/$name.log" 2>&1
echo "rc $? at $(elapsed) s"
grep -E "^(step [0-9]*:|depth curriculum|stopping)" "$OUT/$name.log" | cut -c1-200; tail -1 "$OUT/$name.log" | cut -c1-300
cp /tmp/runs/*/"$name"/metrics.jsonl "$OUT/$name.metrics.jsonl"
python3 - "$OUT/$name.metrics.jsonl" <<'EOF'
import collections, json, sys
records = [json.loads(line) for line in open(sys.argv[1])]
rates = collections.defaultdict(list)  # (H_cycles, L_cycles) -> steps/s of each log window at that depth
for r in records:
    if "train/steps_per_sec" in r:
        rates[(r.get("train/H_cycles", "arch"), r.get("train/L_cycles", "arch"))].append(r["train/steps_per_sec"])
for (h, l), values in rates.items():
    print(f"H_cycles={h} L_cycles={l}: {len(values)} log windows, median {sorted(values)[len(values) // 2]:.3g} steps/s")
for r in records:
    if "eval/examples" in r:  # the task's own metrics: eval/<task>/<name>
        task = ", ".join(f"{k.split('/')[-1]} {100 * v:.1f}%" for k, v in r.items() if k.count("/") == 2
                         and k.startswith("eval/") and not k.endswith("difference"))
        print(f"val at step {r['step']}: {r['train/seconds']:.0f} s of training, exact {100 * r['eval/exact_accuracy']:.1f}%; {task}")
EOF
