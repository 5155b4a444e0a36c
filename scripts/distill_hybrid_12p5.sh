#!/bin/bash
# MaTVLM 12.5 % hybrid: the shared recipe of scripts/distill_hybrid.sh with this layer plan.
# The official 12.5 % release used layers [0, 6, 12, 18] of 32, not the evenly spaced [0, 8, 16, 24]
# that --mm_hybrid_ratio 0.125 gives; the explicit list reproduces the release (4 Mamba layers).
OUT=${OUT:-./checkpoints/matvlm-hybrid-12p5} exec bash "$(dirname "$0")/distill_hybrid.sh" --mm_hybrid_layers 0,6,12,18 "$@"
