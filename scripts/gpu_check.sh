#!/usr/bin/env bash
# The one prepared GPU check: every GPU measurement of the decode and distillation claims, <= 6 minutes of an
# H200 / H100, every output under $OUT (8 files: cuda_backend.json, decode_cuda.json and its _speed /
# _memory / _ratio PNGs, distill_step_cuda.json, gpu_check_summary.json, gpu_check.log). What it measures:
# llava_hybrid/bench/gpu_check.py. The CPU rehearsal of the same code (CI runs it):
#     python scripts/gpu_check.py --device cpu --smoke --out /tmp/gpu_check_smoke
#
# The GPU machine (upstream-facts section 10): Python 3.12, torch 2.11 (cu130), triton 3.6, transformers 5.17,
# einops, matplotlib, no network, no mamba-ssm / causal-conv1d / flash-attn. Only mamba-ssm must travel. Here,
# on a machine with the package registry, in the repository root (.whl/ is git-ignored):
#     mkdir -p .whl
#     MAMBA_SKIP_CUDA_BUILD=TRUE MAMBA_FORCE_BUILD=TRUE python3 -m pip download --no-deps --no-build-isolation \
#         --no-binary :all: mamba-ssm==2.3.2.post1 -d .whl      # the sdist: mamba_ssm-2.3.2.post1.tar.gz
# (mamba-ssm has no wheel on the registry; its declared needs einops, packaging, ninja, triton, transformers are
# on the GPU machine, and tilelang / quack-kernels / apache-tvm-ffi serve Mamba-3 only, so nothing else is
# carried. Were a package missing there, its wheel comes the same way, for the machine's interpreter:
#     python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
#         --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
#         -d .whl NAME==VERSION
# and the install line below picks up every .whl/*.whl.) causal-conv1d ships no wheel on the registry and is a
# CUDA build longer than the device window: the check runs without it, and the cuda backend then uses the
# project's PyTorch conv (the JSON records which conv ran).
#
# On the device (the device tool: carry [".whl"], command `bash scripts/gpu_check.sh`):
#   1. mamba-ssm is installed from the sdist into a --target folder without compiling anything
#      (MAMBA_SKIP_CUDA_BUILD=TRUE; its Mamba-2 kernels are Triton, JIT-compiled at first use).
#   2. `import mamba_ssm` fails there: its package __init__ imports the Mamba-1 CUDA extension selective_scan_cuda
#      unconditionally, which that install lacks. Nothing is built or stubbed for it: llava_hybrid's backend
#      (mamba2/backend.py, _import_mamba_triton) imports the three Triton modules it needs (ssd_combined,
#      selective_state_update, layernorm_gated) with the package __init__ skipped (a bare package module over
#      the installed folder) and logs that it did; Mamba-1 is never imported. cuda_backend.json records it.
#   3. MAMBA_DETERMINISTIC=1 makes mamba_ssm's autotuned kernels use one config each (their full autotune
#      compiles ~200 configs, minutes of the window). Decode timings do not depend on it (the scan runs in the
#      prefill only; the step kernels are not autotuned); the distillation step may be a little slower than
#      with full autotuning. GPU_CHECK_AUTOTUNE=1 keeps the autotuning.
# Budget: decode rows that would start after GPU_CHECK_BUDGET_S (default 330 s) are recorded as skipped.
# Rehearsal of this script here (installs the carried sdist, then the CPU smoke run; tests/test_gpu_check.py runs
# it with GPU_CHECK_WHEELS pointing at an empty folder, as on a clean checkout):
#     PY=.venv/bin/python GPU_CHECK_ARGS="--device cpu --smoke" OUT=/tmp/gpu_check_rehearsal bash scripts/gpu_check.sh
set -uo pipefail
cd "$(dirname "$0")/.."
OUT="${OUT:-${1:-gpu_check_out}}"
mkdir -p "$OUT"
exec > >(tee "$OUT/gpu_check.log") 2>&1
PY="${PY:-python3}"
SITE="${GPU_CHECK_SITE:-/tmp/gpu_check_site}"
WHL="${GPU_CHECK_WHEELS:-.whl}"  # the carried wheels and sdist
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
mkdir -p "$SITE"
shopt -s nullglob
wheels=("$WHL"/*.whl)
if [ ${#wheels[@]} -gt 0 ]; then
  "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target "$SITE" "${wheels[@]}" || exit 3
fi
sdist=("$WHL"/mamba_ssm-*.tar.gz)
if [ ${#sdist[@]} -gt 0 ]; then
  MAMBA_SKIP_CUDA_BUILD=TRUE MAMBA_FORCE_BUILD=TRUE "$PY" -m pip install -q --no-index --no-deps \
    --no-build-isolation --no-cache-dir --target "$SITE" "${sdist[0]}" || exit 3
else
  echo "gpu_check.sh: no $WHL/mamba_ssm-*.tar.gz (see the header for the download); the cuda backend check fails"
fi
export PYTHONPATH="$PWD:$SITE${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
[ "${GPU_CHECK_AUTOTUNE:-0}" = 1 ] || export MAMBA_DETERMINISTIC=1
"$PY" -c "import importlib.metadata as m; print({p: m.version(p) for p in ('torch', 'triton', 'transformers', \
'mamba_ssm', 'causal_conv1d') if m.packages_distributions() is not None and p in {d.metadata['Name'].replace('-', '_') \
for d in m.distributions()}})"
# GPU_CHECK_ARGS="--device cpu --smoke" rehearses this whole script on a CPU (tests/test_gpu_check.py)
"$PY" scripts/gpu_check.py --out "$OUT" --budget-s "${GPU_CHECK_BUDGET_S:-330}" ${GPU_CHECK_ARGS:-}
