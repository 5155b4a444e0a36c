"""The easy-VQA teacher recipe: a small TinyLLaVA-architecture model trained from scratch through
the plugin's SFT entry (`llava_hybrid.host.sft`).

Architecture: Phi LM + SigLIP-architecture tower + mlp2x_gelu connector + phi template + the task
tokenizer, written by `llava_hybrid.host.tiny.build_tiny_llava_phi` with real key names. Two
departures from a released TinyLLaVA: the tower is trained (it starts from random weights, so it
must learn; the trained tower is written to <checkpoint>/vision_tower, where every loader reads it),
and the features come from the tower's last layer (config `mm_vision_select_layer: -1`, every tower
layer used; TinyLLaVA's -2 would leave the last one idle).
"""
from __future__ import annotations

import functools
import json
import os
import time
from dataclasses import asdict, dataclass

from llava_hybrid.host.tiny import TOWER_SUBDIR


@dataclass
class TeacherConfig:
    """Model sizes and the SFT schedule of the shipped teacher (chosen by measurement, docs/easyvqa.md)."""
    hidden_size: int = 128          # Phi LM width
    num_layers: int = 4             # Phi decoder layers (the student replaces some with Mamba-2)
    num_heads: int = 4              # head_dim 32 -> rotary dim 16 (even)
    vision_hidden: int = 128        # SigLIP tower width
    vision_layers: int = 2          # SigLIP tower depth
    image_size: int = 64            # easy-VQA's native 64x64
    patch_size: int = 16            # 4x4 = 16 image tokens
    max_steps: int = 300
    batch_size: int = 16            # conversations (images) per step, ~10 questions each
    learning_rate: float = 2e-3
    warmup_steps: int = 30
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
    ]


def make_tower_trainable(model) -> None:
    """Train the SigLIP tower: requires_grad on, and its forward without LLaVA's @torch.no_grad.

    Instance-level (this model only). Needed until the SFT entry has an --unfreeze_mm_vision_tower flag.
    """
    tower = model.get_vision_tower()
    tower.vision_tower.requires_grad_(True)
    forward = type(tower).forward
    tower.forward = functools.partial(getattr(forward, "__wrapped__", forward), tower)


def time_budget_callback(max_seconds: float):
    """A TrainerCallback that ends training after `max_seconds` of wall time (then the normal save)."""
    from transformers import TrainerCallback

    class TimeBudget(TrainerCallback):
        def on_train_begin(self, args, state, control, **kwargs):
            self.t0 = time.time()

        def on_step_end(self, args, state, control, **kwargs):
            if time.time() - self.t0 > max_seconds:
                control.should_training_stop = True
            return control

    return TimeBudget()


def train_teacher(argv: list[str], max_seconds: float | None = None):
    """SFT through the host entry's own parts (`sft.train`'s steps), with the tower trained.

    max_seconds: stop early (wall time) and save what was reached. Returns the LLaVATrainer. The trained tower is also written to <output_dir>/vision_tower so every
    loader (with or without `unfreeze_mm_vision_tower`) sees the trained weights.
    """
    from llava import conversation as conversation_lib
    from llava.train import train as llava_train
    from llava.train.llava_trainer import LLaVATrainer
    from llava_hybrid.host import sft

    model_args, data_args, training_args = sft.parse_args(argv)
    llava_train.local_rank = training_args.local_rank
    samples = sft.validate_data(data_args.data_path, data_args.image_folder)
    tokenizer = sft.load_tokenizer(model_args, training_args)
    conversation_lib.default_conversation = sft.check_conv_mode(model_args.version, tokenizer)
    model = sft.load_model(model_args, training_args)
    sft.setup_vision(model, tokenizer, model_args, data_args, training_args,
                     has_images=any("image" in s for s in samples))
    make_tower_trainable(model)
    data_module = llava_train.make_supervised_data_module(tokenizer=tokenizer, data_args=data_args)
    trainer = LLaVATrainer(model=model, args=training_args, processing_class=tokenizer, **data_module)
    if max_seconds:
        trainer.add_callback(time_budget_callback(max_seconds))
    trainer.train()
    trainer.save_state()
    out = training_args.output_dir
    sft.save_checkpoint(trainer, model, tokenizer, out, model_args.model_name_or_path)
    model.get_vision_tower().vision_tower.save_pretrained(os.path.join(out, TOWER_SUBDIR))
    return trainer


def write_recipe_card(out_dir: str, cfg: TeacherConfig, argv: list[str], extra: dict) -> None:
    """recipe.json beside the checkpoint: the config, the SFT flags and the measured numbers."""
    with open(os.path.join(out_dir, "recipe.json"), "w") as f:
        json.dump({"config": asdict(cfg), "sft_argv": argv, **extra}, f, indent=1)
