"""The easy-VQA teacher recipe: a small TinyLLaVA-architecture model trained from scratch through
the plugin's SFT entry (`llava_hybrid.host.sft`).

Architecture: Phi LM + SigLIP-architecture tower + mlp2x_gelu connector + phi template + the task
tokenizer, written by `llava_hybrid.host.tiny.build_tiny_llava_phi` with real key names.

Two stages, as LLaVA's recipes start from a pretrained tower: stage 0 (`easyvqa.tower`) pretrains
the SigLIP tower on labels read from the train split (no pretrained tower ships offline), then the
SFT entry trains projector + LM on the easy-VQA conversations with that tower frozen (LLaVA's
default; `freeze_tower=False` trains it too, written to <checkpoint>/vision_tower where every loader
reads it). The features come from the tower's last layer (config `mm_vision_select_layer: -1`, the
layer stage 0 trained; TinyLLaVA's -2 would leave the last one idle).
"""
from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass


@dataclass
class TeacherConfig:
    """Model sizes, data layout and SFT schedule of the shipped teacher (measured: docs/easyvqa/recipe.md)."""
    hidden_size: int = 128          # Phi LM width
    num_layers: int = 8             # Phi decoder layers: 12.5 / 25 / 50 % plans give 1 / 2 / 4 Mamba layers
    num_heads: int = 4              # head_dim 32 -> rotary dim 12 (even)
    vision_hidden: int = 128        # SigLIP tower width
    vision_layers: int = 2          # SigLIP tower depth
    image_size: int = 64            # easy-VQA's native 64x64
    patch_size: int = 16            # 4x4 = 16 image tokens
    turns: int = 0                  # questions per training conversation (0 = all of an image's, ~10)
    balance: bool = False           # repeat rare yes/no answers per question template (data.balance_repeats)
    max_steps: int = 1500           # cosine horizon; the shipped teacher is the final (step-1500) model
    batch_size: int = 8             # conversations (images) per step, ~80 answers
    learning_rate: float = 2e-3
    warmup_steps: int = 30
    tower_steps: int = 3000         # stage 0 (easyvqa.tower): tower pretraining steps; 0 = a random tower
    tower_augment: str = "flip"     # stage-0 augmentation (easyvqa.tower.AUGMENTS)
    tower_readout: str = "token"    # stage-0 read-out: every image token ("token") or their mean ("mean")
    freeze_tower: bool = True       # SFT with the stage-0 tower frozen (LLaVA's default) or trained
    seed: int = 0


def build_initial_checkpoint(out_dir: str, tokenizer_dir: str, cfg: TeacherConfig) -> str:
    """A randomly initialised teacher checkpoint (LLaVA layout, task tokenizer) in `out_dir`."""
    from llava_hybrid.host.tiny import build_tiny_llava_phi

    build_tiny_llava_phi(out_dir, layout="llava", hidden_size=cfg.hidden_size, num_layers=cfg.num_layers,
                         num_heads=cfg.num_heads, vision_hidden=cfg.vision_hidden,
                         vision_layers=cfg.vision_layers, image_size=cfg.image_size,
                         patch_size=cfg.patch_size, vocab=tokenizer_dir, seed=cfg.seed)
    config_file = os.path.join(out_dir, "config.json")
    with open(config_file) as f:
        config = json.load(f)
    config.update(mm_vision_select_layer=-1, image_aspect_ratio="square")
    with open(config_file, "w") as f:
        json.dump(config, f, indent=2)
    if cfg.tower_steps:
        from .tower import TowerPretrainConfig, pretrain_tower
        pretrain_tower(os.path.join(out_dir, "vision_tower"),
                       TowerPretrainConfig(steps=cfg.tower_steps, augment=cfg.tower_augment,
                                           readout=cfg.tower_readout, select_layer=-1, seed=cfg.seed))
    return out_dir


def sft_argv(init_dir: str, data_path: str, image_folder: str, out_dir: str, cfg: TeacherConfig,
             num_workers: int = 0, bf16: bool = False) -> list[str]:
    """LLaVA-style SFT flags for the recipe (what `scripts/train_sft.py` would be given)."""
    return [
        "--model_name_or_path", init_dir, "--version", "phi",
        "--data_path", data_path, "--image_folder", image_folder, "--lazy_preprocess", "True",
        "--output_dir", out_dir, "--max_steps", str(cfg.max_steps),
        "--per_device_train_batch_size", str(cfg.batch_size), "--gradient_accumulation_steps", "1",
        "--learning_rate", str(cfg.learning_rate), "--weight_decay", "0.0",
        "--lr_scheduler_type", "cosine", "--warmup_steps", str(cfg.warmup_steps), "--max_grad_norm", "1.0",
        "--model_max_length", "512", "--bf16", str(bf16), "--use_cpu", "True",
        "--dataloader_num_workers", str(num_workers), "--logging_steps", "10",
        "--save_strategy", "no", "--report_to", "none", "--seed", str(cfg.seed),
        "--group_by_modality_length", "False", "--disable_tqdm", "False",
        "--unfreeze_mm_vision_tower", str(not cfg.freeze_tower),
    ]


def train_teacher(argv: list[str]):
    """SFT through the plugin's entry (`llava_hybrid.host.sft.main`); returns the LLaVATrainer.

    `sft_argv` passes --unfreeze_mm_vision_tower (not cfg.freeze_tower): when True the SigLIP tower
    trains with the rest and is written to <output_dir>/vision_tower, where every loader reads it.
    """
    from llava_hybrid.host import sft

    return sft.main(argv)


def write_recipe_card(out_dir: str, cfg: TeacherConfig, argv: list[str], extra: dict) -> None:
    """recipe.json beside the checkpoint: the config, the SFT flags and the measured numbers."""
    with open(os.path.join(out_dir, "recipe.json"), "w") as f:
        json.dump({"config": asdict(cfg), "sft_argv": argv, **extra}, f, indent=1)
