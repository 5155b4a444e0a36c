#!/usr/bin/env bash
# TextVQA: llava.eval.model_vqa_loader -> llava.eval.eval_textvqa (VQA accuracy).
source "$(dirname "$0")/common.sh"
DATA=$EVAL_DIR/textvqa
need "$DATA/llava_textvqa_val_v051_ocr.jsonl" "LLaVA's TextVQA question file"
need "$DATA/TextVQA_0.5.1_val.json" "TextVQA's val annotations"
run_chunked llava.eval.model_vqa_loader "$DATA/answers/$CKPT" \
  --question-file "$DATA/llava_textvqa_val_v051_ocr.jsonl" --image-folder "$DATA/train_images"
score textvqa --annotation-file "$DATA/TextVQA_0.5.1_val.json" --result-file "$DATA/answers/$CKPT/merge.jsonl" \
  --score-file "$SCORE_DIR/textvqa.json"
