#!/usr/bin/env bash
# GQA: llava.eval.model_vqa_loader -> GQA predictions (LLaVA's convert_gqa_for_eval rule) -> GQA's eval metrics.
source "$(dirname "$0")/common.sh"
SPLIT=${GQA_SPLIT:-llava_gqa_testdev_balanced}
DATA=$EVAL_DIR/gqa
need "$DATA/$SPLIT.jsonl" "LLaVA's GQA question file"
need "$DATA/data/testdev_balanced_questions.json" "GQA's testdev balanced questions"
run_chunked llava.eval.model_vqa_loader "$DATA/answers/$SPLIT/$CKPT" \
  --question-file "$DATA/$SPLIT.jsonl" --image-folder "$DATA/data/images"
score gqa --src "$DATA/answers/$SPLIT/$CKPT/merge.jsonl" --dst "$DATA/data/testdev_balanced_predictions.json" \
  --questions "$DATA/data/testdev_balanced_questions.json" --score-file "$SCORE_DIR/gqa.json"
