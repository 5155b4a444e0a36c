#!/usr/bin/env bash
# POPE: llava.eval.model_vqa_loader -> llava.eval.eval_pope per split (F1 averaged over the splits).
source "$(dirname "$0")/common.sh"
DATA=$EVAL_DIR/pope
need "$DATA/llava_pope_test.jsonl" "LLaVA's POPE question file"
need "$DATA/coco" "POPE's coco_pope_<split>.json folder"
run_chunked llava.eval.model_vqa_loader "$DATA/answers/$CKPT" \
  --question-file "$DATA/llava_pope_test.jsonl" --image-folder "$DATA/val2014"
score pope --annotation-dir "$DATA/coco" --question-file "$DATA/llava_pope_test.jsonl" \
  --result-file "$DATA/answers/$CKPT/merge.jsonl" --score-file "$SCORE_DIR/pope.json"
