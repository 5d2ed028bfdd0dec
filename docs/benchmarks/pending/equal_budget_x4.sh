#!/usr/bin/env bash
# Issue 13's rows that device time has not yet allowed, as whole device calls on an
# nvidia-h200-x4 host: up to four 400-second runs side by side, one per GPU, datasets built
# first (no two runs build at once). Each group fits one 10-minute call:
#   bash docs/benchmarks/pending/equal_budget_x4.sh sudoku     # TRM, HRM, transformer on cfg_sudoku_400s
#   bash docs/benchmarks/pending/equal_budget_x4.sh mul        # TRM, HRM, transformer on cfg_arith_mul
#   bash docs/benchmarks/pending/equal_budget_x4.sh scaling    # cfg_lsa_400s at n = 4, 6, 9, 12
#   bash docs/benchmarks/pending/equal_budget_x4.sh mulscaling # cfg_arith_mul, 400 s, max_digits = 3, 4, 5, 6 (issue 21)
# Needs the wheelhouse in .whl (bash ../shared/tools/gpu-wheelhouse.sh matplotlib); results
# land in $OUT (logs, metrics.jsonl, the scaling table and plot). Not yet run: no results here.
set -uo pipefail
group=${1:?sudoku|mul|scaling|mulscaling}
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
  && export PYTHONPATH=/tmp/site || exit 1
export WANDB_MODE=disabled PYTHONUNBUFFERED=1
OUT=${OUT:-/tmp/out}; mkdir -p "$OUT"
common=(logging.runs_dir=/tmp/runs logging.progress=false)

side_by_side() {  # config, then one "name|overrides" per GPU; $BUILD: extra builder overrides
  local cfg=$1; shift
  # shellcheck disable=SC2086
  python3 scripts/build_data.py --config-name "$cfg" "${common[@]}" ${BUILD:-} || exit 1
  local gpu=0 pids=()
  for job in "$@"; do
    local name=${job%%|*} extra=${job#*|}
    # shellcheck disable=SC2086
    CUDA_VISIBLE_DEVICES=$gpu timeout 560 python3 pretrain.py --config-name "$cfg" "${common[@]}" \
      "logging.run_name=$name" $extra > "$OUT/$name.log" 2>&1 &
    pids+=($!); gpu=$((gpu + 1))
  done
  wait "${pids[@]}"
  for job in "$@"; do
    local name=${job%%|*}
    find /tmp/runs -path "*/$name/metrics.jsonl" -exec cp {} "$OUT/$name.metrics.jsonl" \;
    tail -3 "$OUT/$name.log"
  done
}

case $group in
  sudoku)  # cfg_sudoku has no positions (its MLP mixer needs none); attention baselines get RoPE back,
    # and no depth curriculum (cfg_sudoku_400s's phases are cut from TRM's H3/L6: the transformer
    # does not recurse, HRM's own H2/L2 is below the H2/L4 phase; validation refuses both).
    # Generation takes ~0.22 s of CPU per puzzle (2,000 puzzles): 32 workers (the output does not depend on it).
    BUILD=++data.build_args.workers=32 side_by_side cfg_sudoku_400s "sudoku400-trm|" "sudoku400-hrm|arch=hrm arch.pos_encodings=rope train.depth_curriculum=null" \
      "sudoku400-transformer|arch=transformer arch.pos_encodings=rope train.depth_curriculum=null" ;;
  mul)  # the baselines without cfg_arith_mul's depth curriculum (as for Sudoku above)
    side_by_side cfg_arith_mul "mul400-trm|" "mul400-hrm|arch=hrm train.depth_curriculum=null" \
      "mul400-transformer|arch=transformer train.depth_curriculum=null" ;;
  scaling)
    timeout 590 python3 scripts/scaling.py --config-name cfg_lsa_400s --sizes 4,6,9,12 --gpus 0,1,2,3 \
      --runs-dir /tmp/runs --out "$OUT/scaling" logging.progress=false ;;
  mulscaling)
    timeout 590 python3 scripts/scaling.py --config-name cfg_arith_mul --sizes 3,4,5,6 --gpus 0,1,2,3 \
      --runs-dir /tmp/runs --out "$OUT/mulscaling" train.max_train_seconds=400 logging.progress=false ;;
  *) echo "unknown group '$group' (sudoku|mul|scaling|mulscaling)" >&2; exit 2 ;;
esac
