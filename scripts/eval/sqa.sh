#!/usr/bin/env bash
# ScienceQA-IMG: llava.eval.model_vqa_science (--single-pred-prompt) -> llava.eval.eval_science_qa.
source "$(dirname "$0")/common.sh"
DATA=$EVAL_DIR/scienceqa
need "$DATA/llava_test_CQM-A.json" "LLaVA's ScienceQA question file"
need "$DATA/problems.json" "ScienceQA's problems.json"
need "$DATA/pid_splits.json" "ScienceQA's pid_splits.json"
run_chunked llava.eval.model_vqa_science "$DATA/answers/$CKPT" \
  --question-file "$DATA/llava_test_CQM-A.json" --image-folder "$DATA/images/test" --single-pred-prompt
score sqa --base-dir "$DATA" --result-file "$DATA/answers/$CKPT/merge.jsonl" \
  --output-file "$DATA/answers/${CKPT}_output.jsonl" --output-result "$DATA/answers/${CKPT}_result.json" \
  --score-file "$SCORE_DIR/sqa.json"
