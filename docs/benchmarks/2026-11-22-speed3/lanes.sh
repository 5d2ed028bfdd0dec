#!/usr/bin/env bash
# Two lanes on an nvidia-h200-x2: GPU 0 attention, GPU 1 MLP over the sequence.
# Each lane: the cat/SwiGLU variants of variants.py on the LSA 9x9 shape (training only),
# then the reference's own task shape (Sudoku 9x9, vocab 11, data streamed from the host).
set -u
out=${OUT:-/tmp/out}; mkdir -p "$out"
V="python3 docs/benchmarks/2026-11-22-speed3/variants.py"
B="scripts/benchmark.py --config-name cfg_lsa logging.runs_dir=/tmp/runs --windows 3 --eval-passes 0"
S="python3 scripts/benchmark.py --config-name cfg_sudoku data.path=data/sudoku-bench data.device_resident=never logging.runs_dir=/tmp/runs --eval-passes 1 --reference-loop"
lane0() {
  export CUDA_VISIBLE_DEVICES=0
  for v in base split concat split+concat split+concat+ropecat; do
    $V $v $B data.path=/tmp/d0 > "$out/att_${v//+/_}.log" 2>&1
  done
  $S arch=trm arch.pos_encodings=rope > "$out/sudoku_att.log" 2>&1
}
lane1() {
  export CUDA_VISIBLE_DEVICES=1
  for v in base split concat split+concat; do
    $V $v $B data.path=/tmp/d1 arch=trm_mlp > "$out/mlp_${v//+/_}.log" 2>&1
  done
  $S > "$out/sudoku_mlp.log" 2>&1
}
lane0 & lane1 & wait
for f in "$out"/*.log; do echo "== $f"; grep -E "variants:|steps/s|MFU|peak memory|eval samples|first step|Error|error" "$f" | head -12; done
