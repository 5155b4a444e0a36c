#!/bin/bash
# MaTVLM 50 % hybrid: the shared recipe of scripts/distill_hybrid.sh with this layer plan.
# --mm_hybrid_ratio 0.5 over 32 layers = [0, 2, 4, ..., 30] (the official 50 % release).
OUT=${OUT:-./checkpoints/matvlm-hybrid-50} exec bash "$(dirname "$0")/distill_hybrid.sh" --mm_hybrid_ratio 0.5 --mm_hybrid_positions even "$@"
