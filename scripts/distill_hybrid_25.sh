#!/bin/bash
# MaTVLM 25 % hybrid: the shared recipe of scripts/distill_hybrid.sh with this layer plan.
# --mm_hybrid_ratio 0.25 over 32 layers = [0, 4, 8, ..., 28] (the official 25 % release).
OUT=${OUT:-./checkpoints/matvlm-hybrid-25} exec bash "$(dirname "$0")/distill_hybrid.sh" --mm_hybrid_ratio 0.25 --mm_hybrid_positions even "$@"
