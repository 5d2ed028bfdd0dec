#!/usr/bin/env bash
# The 400-second task runs recorded in docs/BENCHMARKS.md ("GPU results: Sudoku and arithmetic").
#   bash docs/benchmarks/2026-11-22-h200/tasks400.sh add|mul|sudoku OUTDIR [NAME [OVERRIDES...]]
# Each run: the task config with a budget recipe (short warm-up, LR 2e-4 decayed to 0.1x over the
# steps that fit in 400 s at the measured H200 rate), stopped by train.max_train_seconds=400.
set -euo pipefail
task=$1; out=$2; name=${3:-$task}; shift $(( $# < 3 ? $# : 3 )); mkdir -p "$out"
budget="optim.lr=2e-4 optim.puzzle_emb_lr=2e-4 optim.lr_warmup_steps=500 optim.lr_min_ratio=0.1 train.max_train_seconds=400 logging.runs_dir=/tmp/runs logging.progress=false"
case $task in
  add)    args="--config-name cfg_arith train.max_steps=11000 train.eval_interval=2000" ;;
  mul)    args="--config-name cfg_arith_mul train.max_steps=14000 train.eval_interval=2000" ;;
  sudoku) args="--config-name cfg_sudoku train.max_steps=3000 train.eval_interval=1000 optim.lr_warmup_steps=300 ++data.build_args.workers=12" ;;
  *) echo "unknown task '$task' (add|mul|sudoku)" >&2; exit 2 ;;
esac
# shellcheck disable=SC2086
python3 pretrain.py $args $budget logging.run_name="$name" "$@" 2>&1 | tee "$out/$name.log"
find /tmp/runs -path "*/$name/metrics.jsonl" -exec cp {} "$out/$name.metrics.jsonl" \;
