#!/usr/bin/env bash
# nvidia-h200-x2, second pass: GPU 0 SDPA backends with Inductor/AOT caches off (a cached graph
# ignores the backend switches), GPU 1 the MLP-variant profile and the GPU tests.
# train.sdpa_backend was a draft switch (torch.backends.cuda.enable_{flash,cudnn,mem_efficient,math}_sdp
# set before compiling, only the named one on); it was removed after this measurement (auto, i.e.
# cuDNN, was fastest, and Inductor's caches ignore the switches), so lane 0 no longer runs as is.
set -u
out=${OUT:-/tmp/out}; mkdir -p "$out"
B="python3 scripts/benchmark.py --config-name cfg_lsa logging.runs_dir=/tmp/runs --eval-passes 1"
lane0() {
  export CUDA_VISIBLE_DEVICES=0 TORCHINDUCTOR_FORCE_DISABLE_CACHES=1
  for b in flash efficient math cudnn; do $B data.path=/tmp/d0 train.sdpa_backend=$b > "$out/att_nocache_$b.log" 2>&1; done
}
lane1() {
  export CUDA_VISIBLE_DEVICES=1
  python3 scripts/profile_step.py --config-name cfg_lsa data.path=/tmp/d1 logging.runs_dir=/tmp/runs arch=trm_mlp 2>&1 | grep -v "^\[\|^V1\|^I1\|^W1" | tail -80 > "$out/profile_mlp.log"
  python3 -m pytest -p no:logging -m gpu -q tests/test_gpu.py 2>&1 | tail -15 > "$out/gpu_tests.log"
}
lane0 & lane1 & wait
for f in "$out"/att*.log; do echo "== $f"; grep -E "steps/s|MFU|peak memory|eval samples|first step|Error|error" "$f" | head -12; done
tail -3 "$out/gpu_tests.log"
