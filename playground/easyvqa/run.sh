#!/bin/bash
# The easy-VQA main job: data -> teacher -> 12.5 / 25 / 50 % hybrid students -> eval -> docs/easyvqa.md.
# Extra flags pass through: --train-teacher (retrain the teacher), --full (position, loss, init ablations).
set -e
cd "$(dirname "$0")/../.."
exec .venv/bin/python -m llava_hybrid.easyvqa "$@"
