#!/bin/bash
# compile_phases.py per mode, each cold (a new empty cache). Usage: phases.sh OUTDIR "MODE overrides..." ...
out=$1; shift
for spec in "$@"; do
  export TORCHINDUCTOR_CACHE_DIR=$(mktemp -d) TRITON_CACHE_DIR=$(mktemp -d)
  echo "=== $spec $(date -u +%H:%M:%S)" | tee -a "$out/phases.log"
  # shellcheck disable=SC2086
  timeout 200 python docs/benchmarks/2026-12-02-speed4/compile_phases.py $spec >>"$out/phases.log" 2>&1
  echo "rc=$?" | tee -a "$out/phases.log"; tail -n 1 "$out/phases.log"
done
