#!/usr/bin/env bash
# MMBench: llava.eval.model_vqa_mmbench (--single-pred-prompt; ALL_ROUNDS=1 for circular evaluation) ->
# the submission .xlsx (LLaVA's convert_mmbench_for_submission rule) + dev accuracy where answers are public.
source "$(dirname "$0")/common.sh"
SPLIT=${MMBENCH_SPLIT:-mmbench_dev_20230712}
DATA=$EVAL_DIR/mmbench
need "$DATA/$SPLIT.tsv" "MMBench's TSV"
ROUNDS=(); [ "${ALL_ROUNDS:-0}" = 1 ] && ROUNDS=(--all-rounds)
run_chunked llava.eval.model_vqa_mmbench "$DATA/answers/$SPLIT/$CKPT" \
  --question-file "$DATA/$SPLIT.tsv" --single-pred-prompt "${ROUNDS[@]}"
score mmbench --annotation-file "$DATA/$SPLIT.tsv" --answers-file "$DATA/answers/$SPLIT/$CKPT/merge.jsonl" \
  --upload-file "$DATA/answers_upload/$SPLIT/$CKPT.xlsx" --score-file "$SCORE_DIR/mmbench.json"
