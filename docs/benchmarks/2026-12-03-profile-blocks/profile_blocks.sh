#!/usr/bin/env bash
# Issue 18: where the training step's GPU time goes under today's default compile scope
# (`blocks`: each Block compiled alone, the ACT logic and loss eager), and whether the
# compiled-vs-eager 200-step check still passes under it. One nvidia-h200 call (timeout_s 380),
# from the repository root with the wheelhouse in .whl (bash ../shared/tools/gpu-wheelhouse.sh):
#   bash docs/benchmarks/pending/profile_blocks.sh
# In order, while BUDGET (330 s) lasts, each in its own process:
#   1. python3 scripts/profile_step.py --config-name cfg_lsa                  (TRM attention, batch 768)
#   2. python3 scripts/profile_step.py --config-name cfg_lsa arch=trm_mlp     (TRM MLP)
#   3. python3 scripts/profile_step.py --config-name cfg_lsa arch.H_cycles=1 arch.L_cycles=2
#      (the depth of the first 30% of every 400-second curriculum recipe: 18 of the 70 block
#      applications, so the step's fixed costs, eager ACT logic, loss, optimizer and EMA, weigh most)
#   4. python3 -m pytest -q -s -m gpu tests/test_gpu.py -k fast_path          (200 steps, compiled vs eager)
# The last profile in BENCHMARKS ("Where the attention step goes now") is of build 82be0b2 with the
# whole step compiled; this one shows what the eager ACT logic between the compiled blocks costs.
# Expected: the dataset ~10 s, each profile ~40-60 s (compile, 8 warm-up and 3 profiled steps), the
# test ~90-120 s (three 200-step runs at batch 256). Results in $OUT: machine.txt, build.log,
# profile_attention.log, profile_mlp.log, profile_shallow.log, fast_path.log.
set -uo pipefail
OUT=${OUT:-/tmp/out}; mkdir -p "$OUT"
BUDGET=${BUDGET:-330}
deadline=$((SECONDS + BUDGET))
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
  && export PYTHONPATH=/tmp/site || exit 1
export WANDB_MODE=disabled PYTHONUNBUFFERED=1 TORCHINDUCTOR_CACHE_DIR=$(mktemp -d) TRITON_CACHE_DIR=$(mktemp -d)
{ nvidia-smi --query-gpu=name,driver_version --format=csv; python3 -c "import torch; print('torch', torch.__version__)"; } \
  > "$OUT/machine.txt" 2>&1
python3 scripts/build_data.py --config-name cfg_lsa > "$OUT/build.log" 2>&1 || { tail -3 "$OUT/build.log"; exit 1; }

step() {  # name, then the command
  local name=$1; shift
  local left=$((deadline - SECONDS))
  ((left < 30)) && { echo "=== $name: skipped, $left s left of ${BUDGET} s"; return 0; }
  echo "=== $name at ${SECONDS} s: $*"
  timeout "$left" "$@" > "$OUT/$name.log" 2>&1
  echo "rc $? at ${SECONDS} s"
}
step profile_attention python3 scripts/profile_step.py --config-name cfg_lsa
grep -A20 "^step wall" "$OUT/profile_attention.log"
step profile_mlp python3 scripts/profile_step.py --config-name cfg_lsa arch=trm_mlp
grep -A20 "^step wall" "$OUT/profile_mlp.log"
step profile_shallow python3 scripts/profile_step.py --config-name cfg_lsa arch.H_cycles=1 arch.L_cycles=2
grep -A20 "^step wall" "$OUT/profile_shallow.log"
step fast_path python3 -m pytest -q -s -m gpu tests/test_gpu.py -k fast_path
grep -oE '"mean_rel_gap": [0-9.e-]+, "seed_mean_rel_gap": [0-9.e-]+' "$OUT/fast_path.log"; tail -n 1 "$OUT/fast_path.log"
