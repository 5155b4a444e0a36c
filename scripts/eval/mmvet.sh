#!/usr/bin/env bash
# MM-Vet: llava.eval.model_vqa -> the results file for MM-Vet's GPT-4 grader (LLaVA's convert_mmvet_for_eval rule).
source "$(dirname "$0")/common.sh"
DATA=$EVAL_DIR/mm-vet
need "$DATA/llava-mm-vet.jsonl" "LLaVA's MM-Vet question file"
need "$DATA/images" "MM-Vet's images"
run_chunked llava.eval.model_vqa "$DATA/answers/$CKPT" \
  --question-file "$DATA/llava-mm-vet.jsonl" --image-folder "$DATA/images"
score mmvet --src "$DATA/answers/$CKPT/merge.jsonl" --dst "$DATA/results/$CKPT.json" --score-file "$SCORE_DIR/mmvet.json"
