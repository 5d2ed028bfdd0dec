#!/bin/bash
# Cold and warm first step and steps/s per compile scope and model family, one H200
# (issue 18). Each spec "scope:label:overrides" is one scripts/benchmark.py run in its
# fresh-cache mode (a cold run, then a warm run reusing the cache the cold one wrote); the
# tables and JSON lines go to OUTDIR/scopes.log. Usage: scopes.sh OUTDIR SPEC...
out=$1; shift
for spec in "$@"; do
  IFS=: read -r scope label overrides <<<"$spec"
  echo "=== $label scope=$scope $(date -u +%H:%M:%S)" | tee -a "$out/scopes.log"
  # shellcheck disable=SC2086
  timeout 300 python scripts/benchmark.py --config-name cfg_lsa $overrides train.compile_scope=$scope \
      --windows 3 --steps 20 --warmup 5 --eval-passes 0 >>"$out/scopes.log" 2>&1
  echo "rc=$? $(date -u +%H:%M:%S)" | tee -a "$out/scopes.log"
  tail -n 16 "$out/scopes.log" | grep -E "first step|train steps/s|MFU|memory|Error|error" | grep -v "^{"
done
