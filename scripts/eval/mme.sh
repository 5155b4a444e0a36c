#!/usr/bin/env bash
# MME: llava.eval.model_vqa_loader -> MME's eval_tool result files -> MME's calculation (perception score).
source "$(dirname "$0")/common.sh"
DATA=$EVAL_DIR/MME
need "$DATA/llava_mme.jsonl" "LLaVA's MME question file"
need "$DATA/MME_Benchmark_release_version" "MME's release folder"
run_chunked llava.eval.model_vqa_loader "$DATA/answers/$CKPT" \
  --question-file "$DATA/llava_mme.jsonl" --image-folder "$DATA/MME_Benchmark_release_version"
score mme --answers-file "$DATA/answers/$CKPT/merge.jsonl" --data-dir "$DATA/MME_Benchmark_release_version" \
  --results-dir "$DATA/eval_tool/answers/$CKPT" --score-file "$SCORE_DIR/mme.json"
