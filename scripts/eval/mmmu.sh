#!/usr/bin/env bash
# MMMU (validation): the parquet release -> LLaVA question file (once) -> llava.eval.model_vqa_loader ->
# MMMU's scoring rule (llava_hybrid.evaluation.mmmu; LLaVA has no MMMU script).
source "$(dirname "$0")/common.sh"
DATA=$EVAL_DIR/MMMU
need "$DATA" "MMMU's release folder (<Subject>/validation-*.parquet)"
[ -f "$DATA/llava_mmmu_val.jsonl" ] || score mmmu prepare --data-dir "$DATA" \
  --question-file "$DATA/llava_mmmu_val.jsonl" --image-folder "$DATA/images"
run_chunked llava.eval.model_vqa_loader "$DATA/answers/$CKPT" \
  --question-file "$DATA/llava_mmmu_val.jsonl" --image-folder "$DATA/images"
score mmmu eval --data-dir "$DATA" --answers-file "$DATA/answers/$CKPT/merge.jsonl" --score-file "$SCORE_DIR/mmmu.json"
