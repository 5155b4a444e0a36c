#!/usr/bin/env bash
# Decode speed and memory on a GPU at Phi-2's full shape (random weights, fp16): teacher vs 12.5 / 25 / 50 %
# hybrids through the project's decode loop, and the teacher through stock transformers generate.
# Writes docs/benchmarks/decode_cuda.json (+ _speed/_memory/_ratio PNGs) and layer_step_cuda.json/.png.
#
#   bash scripts/bench_decode_gpu.sh            # PROFILE=quick: batch 1, 1K/4K/16K (run time not yet measured)
#   PROFILE=full bash scripts/bench_decode_gpu.sh   # the paper's sweep: 1K..32K, batch 1 and 64 (long: one 32K run per model)
#   PROFILE=memory bash scripts/bench_decode_gpu.sh # one run per length, exact CUDA peaks -> decode_cuda_memory.json
#
# The JSON is rewritten after every row: if a time limit stops the run, redraw the plots from what it has:
#   .venv/bin/python scripts/bench_decode.py --plot-only docs/benchmarks/decode_cuda.json
# Extra arguments are passed on (e.g. --dtype bf16, --ratios 0.25). With mamba-ssm and causal-conv1d
# installed the Mamba layers use their CUDA kernels (LLAVA_HYBRID_MAMBA_BACKEND=auto); otherwise the torch path.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
PROFILE=${PROFILE:-quick}
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
case "$PROFILE" in
  quick)  ARGS=(--gen-lens 1024,4096,16384 --batches 1 --layer-step-lens 1024,4096,16384) ;;
  full)   ARGS=(--gen-lens 1024,2048,4096,8192,16384,32768 --batches 1,64) ;;
  memory) ARGS=(--gen-lens 1024,2048,4096,8192,16384,32768 --batches 1 --protocol per_length --layer-step-lens "" --tag memory) ;;
  *) echo "PROFILE must be quick, full or memory, got '$PROFILE'" >&2; exit 2 ;;
esac
exec "$PY" scripts/bench_decode.py --device cuda --dtype fp16 "${ARGS[@]}" "$@"
