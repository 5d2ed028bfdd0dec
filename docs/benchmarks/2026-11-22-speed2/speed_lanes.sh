#!/usr/bin/env bash
# Two lanes on an nvidia-h200-x2: GPU 0 attention variants, GPU 1 MLP variants + profile.
set -u
out=${OUT:-/tmp/out}; mkdir -p "$out"
B="python3 scripts/benchmark.py --config-name cfg_lsa logging.runs_dir=/tmp/runs"
lane0() {
  export CUDA_VISIBLE_DEVICES=0
  $B data.path=/tmp/d0 --reference-loop > "$out/att_base.log" 2>&1
  $B data.path=/tmp/d0 --eval-passes 1 +train.inductor.coordinate_descent_tuning=true > "$out/att_cdt.log" 2>&1
}
lane1() {
  export CUDA_VISIBLE_DEVICES=1
  $B data.path=/tmp/d1 --eval-passes 1 arch=trm_mlp arch.seq_mlp_align=1 > "$out/mlp_align1.log" 2>&1
  $B data.path=/tmp/d1 --eval-passes 1 arch=trm_mlp > "$out/mlp_align8.log" 2>&1
  python3 scripts/profile_step.py --config-name cfg_lsa data.path=/tmp/d1 logging.runs_dir=/tmp/runs arch=trm_mlp > "$out/profile_mlp.log" 2>&1
  $B data.path=/tmp/d1 --eval-passes 1 arch=trm_mlp +train.inductor.coordinate_descent_tuning=true > "$out/mlp_cdt.log" 2>&1
}
lane0 & lane1 & wait
for f in "$out"/*.log; do echo "== $f"; grep -E "steps/s|MFU|peak memory|eval samples|first step|Error|error" "$f" | head -12; done
