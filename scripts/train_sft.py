"""SFT of a LLaVA-style teacher (e.g. a TinyLLaVA-Phi-SigLIP checkpoint) on LLaVA-format data, with
LLaVA's data module and LLaVATrainer; flags are LLaVA's train.py flags (see llava_hybrid/host/sft.py):

    python scripts/train_sft.py --model_name_or_path ckpt --version phi --data_path data.json \
        --image_folder images --output_dir out --num_train_epochs 1 --per_device_train_batch_size 4 \
        --learning_rate 2e-5 --report_to none
    (or: deepspeed scripts/train_sft.py --deepspeed scripts/zero2.json ...)
"""
from llava_hybrid.host.sft import main

if __name__ == "__main__":
    main()
