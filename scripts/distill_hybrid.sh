#!/bin/bash
# MaTVLM single-stage distillation from TinyLLaVA-Phi-2-SigLIP-3.1B (paper section 4.1), the shared recipe.
# 4 GPUs x batch 4 x grad-accumulation 4 = 64; AdamW lr 2e-4, betas (0.9, 0.95), wd 0.01; WSD 10 % / 10 %;
# L = 1 * L_layer + 1 * L_prob + 0 * L_ce; only the Mamba-2 layers and the connector train.
# TEACHER: a local LLaVA-layout TinyLLaVA directory or the alias 'tinyllava' (see docs/distillation.md).
# Usage: bash scripts/distill_hybrid.sh <layer-plan flags> [more flags]; the per-ratio launchers
# scripts/distill_hybrid_{12p5,25,50}.sh call this with their plan. Later flags override earlier ones.
TEACHER=${TEACHER:-tinyllava}
DATA=${DATA:-./playground/data/sharegpt4v_mix665k_cap23k_coco-ap9k_lcs3k_sam9k_div2k.json}
IMAGES=${IMAGES:-./playground/data}
OUT=${OUT:-./checkpoints/matvlm-hybrid}

deepspeed scripts/distill_hybrid.py \
    --deepspeed ./scripts/zero2.json \
    --model_name_or_path $TEACHER \
    --version phi \
    --data_path $DATA \
    --image_folder $IMAGES \
    --image_aspect_ratio pad \
    --init_from_attention True \
    --trainable mamba,mm_projector \
    --distill_alpha 1 --distill_beta 1 --distill_gamma 0 \
    --distill_temperature 1 --distill_layer_norm l2 --distill_tokens all \
    --bf16 True \
    --output_dir $OUT \
    --num_train_epochs 1 \
    --per_device_train_batch_size 4 \
    --gradient_accumulation_steps 4 \
    --learning_rate 2e-4 --weight_decay 0.01 --adam_beta1 0.9 --adam_beta2 0.95 \
    --wsd_warmup_fraction 0.1 --wsd_decay_fraction 0.1 \
    --max_grad_norm 0.1 \
    --model_max_length 2048 \
    --save_strategy steps --save_steps 500 --save_total_limit 2 \
    --logging_steps 1 \
    --dataloader_num_workers 4 \
    --lazy_preprocess True \
    --report_to none \
    "$@"
