#!/bin/bash
# The easy-VQA main job: data -> teacher -> 25 % hybrid student -> eval -> docs/easyvqa.md.
# Extra flags pass through: --train-teacher (retrain the teacher), --full (ablation grid).
set -e
cd "$(dirname "$0")/../.."
exec .venv/bin/python -m llava_hybrid.easyvqa "$@"
