#!/usr/bin/env bash
# Every benchmark launcher, then one Table-1-style row (printed, and written to $SCORE_DIR/row.json).
#   bash scripts/eval/all.sh <model-path> [conv-mode]            real data under $EVAL_DIR (./playground/data/eval)
#   bash scripts/eval/all.sh --smoke <model-path> [conv-mode]    builds the smoke copies into
#                                                                ./playground/data/eval_smoke and runs on them
# A benchmark whose data folder is absent is skipped and says so; BENCHMARKS="pope gqa" runs a subset.
set -euo pipefail
HERE=$(dirname "$0")
PYTHON=${PYTHON:-python}
if [ "${1:-}" = "--smoke" ]; then
  shift
  export EVAL_DIR=${EVAL_DIR:-./playground/data/eval_smoke}
  export VQAV2_SPLIT=${VQAV2_SPLIT:-llava_vqav2_mscoco_val2014}
  $PYTHON -m llava_hybrid.evaluation smoke --out "$EVAL_DIR"
fi
[ $# -ge 1 ] || { echo "usage: bash $0 [--smoke] <model-path> [conv-mode]" >&2; exit 2; }
export EVAL_DIR=${EVAL_DIR:-./playground/data/eval}
export CKPT=${CKPT:-$(basename "$1")}
export SCORE_DIR=${SCORE_DIR:-$EVAL_DIR/scores/$CKPT}
declare -A FOLDER=([mme]=MME [mmmu]=MMMU [pope]=pope [mmvet]=mm-vet [textvqa]=textvqa [mmbench]=mmbench
                   [sqa]=scienceqa [gqa]=gqa [vqav2]=vqav2 [mmstar]=mmstar)
for bench in ${BENCHMARKS:-mme mmbench textvqa gqa mmvet sqa pope mmmu vqav2 mmstar}; do
  [ -n "${FOLDER[$bench]:-}" ] || { echo "all.sh: unknown benchmark '$bench'" >&2; exit 2; }
  if [ ! -d "$EVAL_DIR/${FOLDER[$bench]}" ]; then
    echo "all.sh: skip $bench: no $EVAL_DIR/${FOLDER[$bench]} (see docs/evaluation.md)"
    continue
  fi
  echo "=== $bench ==="
  bash "$HERE/$bench.sh" "$@"
done
$PYTHON -m llava_hybrid.evaluation table --score-dir "$SCORE_DIR" --model "$CKPT" --out "$SCORE_DIR/row.json"
