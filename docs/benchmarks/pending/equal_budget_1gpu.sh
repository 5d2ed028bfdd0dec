#!/usr/bin/env bash
# Issue 21, item 2 on one GPU (kind nvidia-h200): the equal-budget table's Sudoku and
# multiplication rows, one 400-second run per device call (timeout_s 590), cold (new empty
# Inductor and Triton caches), the dataset built first in the same call:
#   bash docs/benchmarks/pending/equal_budget_1gpu.sh sudoku trm|hrm|transformer
#   bash docs/benchmarks/pending/equal_budget_1gpu.sh mul trm|hrm|transformer
#   bash docs/benchmarks/pending/equal_budget_1gpu.sh sudoku transformer arch.norm=pre   # overrides after the model
# (overrides after the model go to pretrain.py, last, and name the run: sudoku-transformer-arch.norm_pre;
# data.* ones go to the build too; logging.* ones are refused: the script names the run and its files)
# Each run is exactly `python3 pretrain.py --config-name cfg_sudoku_400s|cfg_arith_mul [arch
# overrides] train.max_train_seconds=400` (attention baselines on Sudoku get RoPE back: cfg_sudoku's
# MLP mixer needs no positions; on both tasks they run without the recipe's depth curriculum,
# train.depth_curriculum=null: its phases are cut from TRM's H3/L6, the transformer does not
# recurse and HRM's own depth, H2/L2, is below its H2/L4 phase, so validation refuses both);
# SIGTERM after 520 s of training at the latest. The runs do not
# share the GPU, so the budget is the same 400 s of wall time for every model (compile included).
# Six calls for the whole table; equal_budget_x4.sh runs a group side by side on a 4-GPU host.
# Results in $OUT: NAME.log, NAME.metrics.jsonl, build.log, machine.txt.
set -uo pipefail
task=${1:?sudoku|mul} model=${2:?trm|hrm|transformer}
shift 2
extra=("$@")
for word in "${extra[@]}"; do
  case $word in
    logging.*|+logging.*|++logging.*) echo "equal_budget_1gpu.sh: '$word': the script sets logging (the run is named by the overrides)" >&2; exit 2 ;;
  esac
done
data_extra=()  # data.* overrides reach the build too, so the run reads the dataset the call built
for word in "${extra[@]}"; do [[ $word == data.* || $word == +data.* ]] && data_extra+=("$word"); done
case $task in
  sudoku) cfg=cfg_sudoku_400s; build=(+data.build_args.workers=16); pos=(arch.pos_encodings=rope train.depth_curriculum=null) ;;
  mul) cfg=cfg_arith_mul; build=(); pos=(train.depth_curriculum=null) ;;
  *) echo "equal_budget_1gpu.sh: unknown task '$task' (sudoku|mul)" >&2; exit 2 ;;
esac
case $model in
  trm) arch=() ;;
  hrm|transformer) arch=(arch=$model "${pos[@]}") ;;
  *) echo "equal_budget_1gpu.sh: unknown model '$model' (trm|hrm|transformer)" >&2; exit 2 ;;
esac
name=$task-$model
for word in "${extra[@]}"; do name+=-${word//[^A-Za-z0-9._+-]/_}; done  # one folder name, whatever the overrides
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
  && export PYTHONPATH=/tmp/site || exit 1
export WANDB_MODE=disabled PYTHONUNBUFFERED=1 TORCHINDUCTOR_CACHE_DIR=$(mktemp -d) TRITON_CACHE_DIR=$(mktemp -d)
OUT=${OUT:-/tmp/out}; mkdir -p "$OUT"
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv > "$OUT/machine.txt" 2>&1
python3 -c "import torch; print('torch', torch.__version__, torch.version.cuda)" >> "$OUT/machine.txt" 2>&1
common=(logging.runs_dir=/tmp/runs logging.progress=false logging.wandb_mode=disabled logging.run_name=$name)
python3 scripts/build_data.py --config-name $cfg "${build[@]}" "${common[@]}" "${data_extra[@]}" > "$OUT/build.log" 2>&1 \
  || { tail -3 "$OUT/build.log"; exit 1; }
timeout -s TERM 520 python3 pretrain.py --config-name $cfg "${arch[@]}" train.max_train_seconds=400 "${common[@]}" "${extra[@]}" \
  > "$OUT/$name.log" 2>&1
echo "rc $?"; grep "^step [0-9]*:" "$OUT/$name.log" | cut -c1-200; tail -1 "$OUT/$name.log" | cut -c1-400
find /tmp/runs -path "*/$name/metrics.jsonl" -exec cp {} "$OUT/$name.metrics.jsonl" \;
