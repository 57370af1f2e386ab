#!/usr/bin/env bash
# One call on a lent GPU machine (../shared/device/README.md): the smoke check, the
# training-step profile and scoring many scans from files, results under OUT (at most
# 8 files come back from the device tool: all.log, smoke.jsonl, prof/*, score/*).
#   bash benchmarks/device_check.sh OUT [cuda|cpu] [--quick]
# --quick (with cpu) tests this script here in a few minutes; its numbers mean nothing.
set -uo pipefail
out=$1; device=${2:-cuda}; quick=${3:-}
work=$(mktemp -d); mkdir -p "$out"
log="$out/all.log"
step() { echo "== $* ($(date +%T))" | tee -a "$log"; }
step smoke
timeout 140 python -m benchmarks.gpu --smoke --device "$device" --out "$work/smoke" >>"$log" 2>&1
echo "smoke exit $?" | tee -a "$log"
cp "$work/smoke/smoke.jsonl" "$out/" 2>/dev/null
step profile
timeout 60 python -m benchmarks.gpu_profile --device "$device" --out "$out/prof" $quick >>"$log" 2>&1
echo "profile exit $?" | tee -a "$log"
step scoring from files
scans=64; [ -n "$quick" ] && scans=6
python -m uadcore synth "$work/many" --healthy $scans --unhealthy 0 --seed 3 >>"$log" 2>&1
# its parts: preparing alone (every core), then scoring what the cache holds
t0=$(date +%s.%N)
UAD_CACHE_DIR="$work/cache" timeout 50 python -m uadcore prepare "$work/many" --model ae3d >>"$log" 2>&1
t1=$(date +%s.%N)
UAD_CACHE_DIR="$work/cache" timeout 30 python -m uadcore score "$work/smoke/run-ae3d" "$work/many" --out "$work/warm" --device "$device" >/dev/null 2>>"$log"
t2=$(date +%s.%N)
python3 -c "import sys; a,b,c=map(float,sys.argv[1:]); n=$scans; print(f'uad prepare (cold cache): {b-a:.1f} s, {n/(b-a):.2f} scans/s; uad score from the warm cache: {c-b:.1f} s, {n/(c-b):.2f} scans/s')" $t0 $t1 $t2 | tee -a "$log"
timeout 60 python -m benchmarks.score_many --run "$work/smoke/run-ae3d" --data "$work/many/manifest.csv" --scans $scans \
  --device "$device" --baseline-scans 0 --out "$out/score" >>"$log" 2>&1
echo "score exit $?" | tee -a "$log"
step done
