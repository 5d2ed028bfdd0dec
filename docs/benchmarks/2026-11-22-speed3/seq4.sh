#!/usr/bin/env bash
# One nvidia-h200, build 82be0b2: the MLP variant's profile, the attention variant with the
# rotary applied in SDPA's (B, H, L, Dh) layout, and the Triton source of the rotary kernels.
set -u
out=${OUT:-/tmp/out}; mkdir -p "$out"
D=docs/benchmarks/2026-11-22-speed3
python3 scripts/profile_step.py --config-name cfg_lsa data.path=/tmp/d0 logging.runs_dir=/tmp/runs arch=trm_mlp > "$out/seq4_profile_mlp.log" 2>&1
head -28 "$out/seq4_profile_mlp.log" | cut -c1-170
python3 $D/variants.py bhld scripts/benchmark.py --config-name cfg_lsa data.path=/tmp/d0 logging.runs_dir=/tmp/runs --windows 3 --eval-passes 0 > "$out/seq4_att_bhld.log" 2>&1
grep -E "variants|steps/s|peak memory" "$out/seq4_att_bhld.log"
TORCH_LOGS=output_code python3 scripts/benchmark.py --config-name cfg_lsa data.path=/tmp/d0 logging.runs_dir=/tmp/runs \
  --windows 1 --steps 3 --warmup 1 --eval-passes 0 > /tmp/oc.log 2>&1
grep -E "steps/s" /tmp/oc.log
python3 $D/extract_kernel.py /tmp/oc.log slice_backward_stack scaled_dot_product_cudnn_attention silu_backward > "$out/seq4_rotary_kernels.py"
grep -c "=====" "$out/seq4_rotary_kernels.py"
