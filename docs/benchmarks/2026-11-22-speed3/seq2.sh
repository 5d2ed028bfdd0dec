#!/usr/bin/env bash
# One nvidia-h200, after SwiGLU became two matmuls (split): the current build in full, the
# former fused SwiGLU and the Q/K/V split on the same machine, and the reference's own task
# shape (Sudoku 9x9, vocab 11, training data streamed from the host as the reference does).
set -u
out=${OUT:-/tmp/out}; mkdir -p "$out"
V="python3 docs/benchmarks/2026-11-22-speed3/variants.py"
L="--config-name cfg_lsa logging.runs_dir=/tmp/runs data.path=/tmp/d0"
S="--config-name cfg_sudoku data.path=data/sudoku-bench data.device_resident=never logging.runs_dir=/tmp/runs"
run() { local name=$1; shift; $V "$@" > "$out/${name}.log" 2>&1;
        grep -E "steps/s|peak memory|eval samples" "$out/${name}.log" | tr -s ' ' | paste -sd' ' | sed "s/^/$name: /"; }
run att_current base scripts/benchmark.py $L --reference-loop
run mlp_current base scripts/benchmark.py $L arch=trm_mlp --eval-passes 1
run att_fused fused scripts/benchmark.py $L --eval-passes 0
run att_qkvsplit qkvsplit scripts/benchmark.py $L --eval-passes 0
run sudoku_att base scripts/benchmark.py $S arch=trm arch.pos_encodings=rope --eval-passes 1 --reference-loop
run sudoku_mlp base scripts/benchmark.py $S --eval-passes 1
