#!/usr/bin/env bash
# The GPU measurements of docs/performance.md ("GPU"), in order of importance, each
# bounded so that the whole run fits one 10-minute call on a lent GPU machine.
#
#   benchmarks/gpu.sh OUTDIR          # JSON results and logs land in OUTDIR
#
# PYTHON picks the interpreter (default .venv/bin/python); it needs the project's
# dependencies importable. QUICK=1 shrinks every step (a dry run of the script on
# any machine, e.g. SAM2FLEET_DEVICE=cpu QUICK=1 benchmarks/gpu.sh /tmp/gpu-dry).
# Like every benchmark it writes benchmarks/results/*.json too: run it on a copy
# of the tree (a GPU machine's), not where the CPU figures live.
set -uo pipefail
cd "$(dirname "$0")/.."
out=${1:?usage: benchmarks/gpu.sh OUTDIR}
mkdir -p "$out"
py=${PYTHON:-.venv/bin/python}
export SAM2FLEET_DEVICE=${SAM2FLEET_DEVICE:-cuda} PYTHONUNBUFFERED=1

# Seconds per step: encoder, compiled encoder, overhead, throughput, automatic. In
# all 540 s, so one call (10 minutes) also has room to install and start. The two
# video steps (150 s each) come last and need a second call when run after them.
if [[ ${QUICK:-0} == 1 ]]; then
  models=(tiny); rounds=1; images=2; pps=8:1; limits=(300 300 300 300 300)
else
  models=(tiny large); rounds=20; images=32; pps=32:3; limits=(150 120 90 120 60)
fi
# torch.compile mode of the compiled-encoder step; "default" compiles in well under
# its limit, max-autotune (what published anchors use) may need a step of its own.
compile=${COMPILE:-default}

step() {  # step NAME SECONDS ARGS...: one benchmark, its log kept, a failure not fatal
  local name=$1 seconds=$2
  shift 2
  echo "== $name ($(date -u +%T))"
  timeout "$seconds" "$py" "$@" >"$out/$name.log" 2>&1
  echo "   exit $? ($(date -u +%T))"
  tail -n 4 "$out/$name.log"
}

command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,memory.total,driver_version \
  --format=csv >"$out/gpu.txt"
step encoder "${limits[0]}" benchmarks/encoder.py --models "${models[@]}" --batches 1 8 \
  --precisions fp32 bf16 --rounds "$rounds" --out "$out/encoder.json"
step encoder-compiled "${limits[1]}" benchmarks/encoder.py --models "${models[-1]}" --batches 1 \
  --precisions bf16 --compile "$compile" --rounds "$rounds" --out "$out/encoder-compiled.json"
step overhead "${limits[2]}" benchmarks/overhead.py --rounds "$rounds" --out "$out"
step throughput "${limits[3]}" benchmarks/throughput.py --images "$images" --concurrency 4 16
step automatic "${limits[4]}" benchmarks/automatic.py --rounds "$pps" --out "$out/automatic.json"
# Video (docs/video.md): fleet frames/s against Meta's predictor in-process, then
# device memory at frame 100/500/2000 against Meta's as shipped, at the full 1024 px.
if [[ ${QUICK:-0} == 1 ]]; then vframes=8; vlong=120; vlimit=300; else vframes=200; vlong=2000; vlimit=150; fi
step video-throughput "$vlimit" benchmarks/video.py throughput --image-size 1024 \
  --frames "$vframes" --out "$out/video-throughput.json"
step video-memory "$vlimit" benchmarks/video.py memory --image-size 1024 --frames "$vlong" \
  --out "$out/video-memory.json"
cp benchmarks/results/throughput.json "$out/" 2>/dev/null
echo "results in $out"
