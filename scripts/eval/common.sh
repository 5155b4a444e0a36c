#!/usr/bin/env bash
# Sourced by every launcher in scripts/eval/ (LLaVA's scripts/v1_5/eval convention):
#   bash scripts/eval/<bench>.sh <model-path> [conv-mode (default phi)]
# Environment: EVAL_DIR (default ./playground/data/eval, LLaVA's layout), CKPT (answers sub-folder, default the
# model folder's name), SCORE_DIR (score files for all.sh, default $EVAL_DIR/scores/$CKPT), TEMPERATURE (0),
# PYTHON (python), CUDA_VISIBLE_DEVICES (one answer chunk per listed device, merged afterwards, as LLaVA's).
set -euo pipefail
if [ $# -lt 1 ] || [ "${1:-}" = "-h" ] || [ "${1:-}" = "--help" ]; then
  echo "usage: bash $0 <model-path> [conv-mode]   (data layout per benchmark: docs/evaluation.md)" >&2
  exit 2
fi
MODEL_PATH=$1
CONV_MODE=${2:-phi}
[ -f "$MODEL_PATH/config.json" ] || { echo "$0: <model-path> '$MODEL_PATH' has no config.json" >&2; exit 2; }
CKPT=${CKPT:-$(basename "$MODEL_PATH")}
EVAL_DIR=${EVAL_DIR:-./playground/data/eval}
SCORE_DIR=${SCORE_DIR:-$EVAL_DIR/scores/$CKPT}
TEMPERATURE=${TEMPERATURE:-0}
PYTHON=${PYTHON:-python}
gpu_list="${CUDA_VISIBLE_DEVICES:-0}"
IFS=',' read -ra GPULIST <<< "$gpu_list"
CHUNKS=${#GPULIST[@]}

need() {  # need <path> <what it is>: fail early, naming the file and where the docs say to get it
  [ -e "$1" ] || { echo "$(basename "$0"): missing $2: $1 (see docs/evaluation.md)" >&2; exit 2; }
}

run_chunked() {  # run_chunked <llava.eval module> <answers dir> [module args...] -> <answers dir>/merge.jsonl
  local module=$1 out=$2 pids=() idx failed=0
  shift 2
  mkdir -p "$out"
  for idx in $(seq 0 $((CHUNKS-1))); do
    CUDA_VISIBLE_DEVICES=${GPULIST[$idx]} $PYTHON -m llava_hybrid.run "$module" \
      --model-path "$MODEL_PATH" --answers-file "$out/${CHUNKS}_${idx}.jsonl" \
      --num-chunks "$CHUNKS" --chunk-idx "$idx" --temperature "$TEMPERATURE" --conv-mode "$CONV_MODE" "$@" &
    pids+=($!)
  done
  for pid in "${pids[@]}"; do wait "$pid" || failed=1; done
  [ "$failed" = 0 ] || { echo "$(basename "$0"): a chunk of $module failed" >&2; exit 1; }
  : > "$out/merge.jsonl"
  for idx in $(seq 0 $((CHUNKS-1))); do cat "$out/${CHUNKS}_${idx}.jsonl" >> "$out/merge.jsonl"; done
}

score() {  # score <benchmark> [args...]: the benchmark's converter / scorer (python -m llava_hybrid.evaluation)
  mkdir -p "$SCORE_DIR"
  $PYTHON -m llava_hybrid.evaluation "$@"
}
