#!/usr/bin/env bash
# MMStar: mmstar.parquet -> LLaVA question file (once) -> llava.eval.model_vqa_loader -> MMStar's scoring rule
# (llava_hybrid.evaluation.mmstar; LLaVA has no MMStar script).
source "$(dirname "$0")/common.sh"
DATA=$EVAL_DIR/mmstar
need "$DATA/mmstar.parquet" "MMStar's mmstar.parquet"
[ -f "$DATA/llava_mmstar.jsonl" ] || score mmstar prepare --data-file "$DATA/mmstar.parquet" \
  --question-file "$DATA/llava_mmstar.jsonl" --image-folder "$DATA/images"
run_chunked llava.eval.model_vqa_loader "$DATA/answers/$CKPT" \
  --question-file "$DATA/llava_mmstar.jsonl" --image-folder "$DATA/images"
score mmstar eval --data-file "$DATA/mmstar.parquet" --answers-file "$DATA/answers/$CKPT/merge.jsonl" \
  --score-file "$SCORE_DIR/mmstar.json"
