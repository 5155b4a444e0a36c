#!/usr/bin/env bash
# VQAv2: llava.eval.model_vqa_loader -> EvalAI submission file (LLaVA's convert_vqav2_for_submission rule);
# VQAV2_SPLIT=llava_vqav2_mscoco_val2014 scores locally against the official val annotations instead.
source "$(dirname "$0")/common.sh"
SPLIT=${VQAV2_SPLIT:-llava_vqav2_mscoco_test-dev2015}
DATA=$EVAL_DIR/vqav2
case "$SPLIT" in
  *val2014)
    need "$DATA/v2_OpenEnded_mscoco_val2014_questions.json" "VQAv2's val questions"
    [ -f "$DATA/$SPLIT.jsonl" ] || score vqav2 prepare --questions "$DATA/v2_OpenEnded_mscoco_val2014_questions.json" \
      --dst "$DATA/$SPLIT.jsonl"
    IMAGES=$DATA/val2014; SPLIT_FILE=$DATA/$SPLIT.jsonl
    ANNOTATIONS=(--annotation-file "$DATA/v2_mscoco_val2014_annotations.json") ;;
  *)
    need "$DATA/$SPLIT.jsonl" "LLaVA's VQAv2 question file"
    need "$DATA/llava_vqav2_mscoco_test2015.jsonl" "LLaVA's list of every VQAv2 test question"
    IMAGES=$DATA/test2015; SPLIT_FILE=$DATA/llava_vqav2_mscoco_test2015.jsonl; ANNOTATIONS=() ;;
esac
run_chunked llava.eval.model_vqa_loader "$DATA/answers/$SPLIT/$CKPT" \
  --question-file "$DATA/$SPLIT.jsonl" --image-folder "$IMAGES"
score vqav2 eval --src "$DATA/answers/$SPLIT/$CKPT/merge.jsonl" --split-file "$SPLIT_FILE" \
  --dst "$DATA/answers_upload/$SPLIT/$CKPT.json" "${ANNOTATIONS[@]}" --score-file "$SCORE_DIR/vqav2.json"
