#!/usr/bin/env bash
# One nvidia-h200, the current build (SwiGLU as two matmuls): the GPU tests (numerics of the
# fast path, compiled resume), the attention step's profile, and the MLP variant on the
# reference's own task shape (Sudoku 9x9, vocab 11, data streamed from the host).
set -u
out=${OUT:-/tmp/out}; mkdir -p "$out"
python3 -m pytest -q -p no:logging -rA tests/test_gpu.py > "$out/seq3_gpu_tests.log" 2>&1; echo "gpu tests rc=$?"
grep -E "^(PASSED|FAILED|ERROR)|passed|failed|mean_rel_gap" "$out/seq3_gpu_tests.log" | cut -c1-160
python3 scripts/profile_step.py --config-name cfg_lsa data.path=/tmp/d0 logging.runs_dir=/tmp/runs > "$out/seq3_profile_attention.log" 2>&1
head -30 "$out/seq3_profile_attention.log" | cut -c1-160
python3 scripts/benchmark.py --config-name cfg_sudoku data.path=data/sudoku-bench data.device_resident=never \
  logging.runs_dir=/tmp/runs --eval-passes 1 > "$out/seq3_sudoku_mlp.log" 2>&1
grep -E "steps/s|MFU|peak memory|eval samples|first step" "$out/seq3_sudoku_mlp.log"
