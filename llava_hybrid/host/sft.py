"""Supervised fine-tuning of a LLaVA-style teacher on our own data, through LLaVA's own machinery.

Reuses `llava.train.train` (argument dataclasses, `LazySupervisedDataset`,
`make_supervised_data_module`, `safe_save_model_for_hf_trainer`) and `LLaVATrainer`. What it adds
over `llava.train.train.train()`:
  - the model class from config.json `model_type` (LlavaPhiForCausalLM for llava_phi /
    tiny_llava_phi / phi, LLaVA's LlavaLlamaForCausalLM for llava / llama), never from a name;
  - SigLIP towers (via the host's build_vision_tower) and the tower/projector already in the
    checkpoint, whose mm_* settings are kept unless a flag asks for a new projector;
  - `--version phi`: the phi template, phi preprocessing and the pad==eos-safe collator;
  - early errors naming the flag: --data_path (missing, malformed), images missing from
    --image_folder (all checked before training), --version (unknown or not fitting the tokenizer).
"""
from __future__ import annotations

import functools
import inspect
import logging
import os
import sys
import types
from dataclasses import dataclass, field
from typing import Optional, Sequence

import torch
import transformers

from llava_hybrid.checkpoint_files import (CONFIG_NAME, last_complete_checkpoint, read_config, refuse_remote_code,
                                           weight_files)
from llava_hybrid.compat import dtype_kwargs
from llava_hybrid.guards import checkpoint_bytes, check_output_dir, guarded_trainer_class, preflight_deepspeed_cpu
from llava_hybrid.hybrid.configuration import layer_plan_line

from .builder import MODEL_CLASSES, known_model_types, read_model_type
from .conversation import check_conv_mode
from .data import check_sample_lengths, tokens_per_image, validate_data
from .saving import atomic_trainer_class, remove_unfinished_saves, save_final_model
from .siglip import resolve_tower_path
from .training import lazy_attributes, llava_train, publish

logger = logging.getLogger(__name__)

# mm_* flags that describe the tower/projector; None means the checkpoint's value, else these (the
# values LLaVA's and TinyLLaVA's fine-tuning scripts pass; LLaVA's dataclass defaults differ)
MM_FLAG_DEFAULTS = {"mm_vision_select_layer": -2, "mm_projector_type": "mlp2x_gelu",
                    "mm_vision_select_feature": "patch"}
ARGUMENT_CLASSES = ("ModelArguments", "DataArguments", "TrainingArguments")


@functools.lru_cache(maxsize=None)
def argument_classes() -> tuple:
    """(ModelArguments, DataArguments, TrainingArguments): LLaVA's flag dataclasses with this entry's defaults.

    Built on first use (they subclass llava.train.train's, see host.training) and then also this
    module's attributes of the same names.
    """
    base = llava_train()

    @dataclass
    class ModelArguments(base.ModelArguments):
        """LLaVA's model flags; phi defaults, and mm_* flags that default to the checkpoint's values."""

        model_name_or_path: Optional[str] = field(default=None, metadata={"help": "checkpoint directory"})
        version: Optional[str] = field(default="phi", metadata={"help": "conversation template"})
        mm_vision_select_layer: Optional[int] = field(default=None)
        mm_projector_type: Optional[str] = field(default=None)
        mm_vision_select_feature: Optional[str] = field(default=None)
        mm_use_im_patch_token: bool = field(default=False)
        unfreeze_mm_vision_tower: bool = field(
            default=False, metadata={"help": "train the vision tower too; it is saved to <output_dir>/vision_tower"})

    @dataclass
    class DataArguments(base.DataArguments):
        """LLaVA's data flags; --image_aspect_ratio defaults to the checkpoint's (else 'square')."""

        image_aspect_ratio: Optional[str] = field(default=None)

    @dataclass
    class TrainingArguments(base.TrainingArguments):
        """LLaVA's training flags (--group_by_modality_length, --mm_projector_lr, ...)."""

    return publish(__name__, ModelArguments, DataArguments, TrainingArguments)


__getattr__ = lazy_attributes(__name__, ARGUMENT_CLASSES, argument_classes)  # e.g. sft.TrainingArguments


def load_tokenizer(model_args: ModelArguments, training_args: TrainingArguments):
    """The checkpoint's tokenizer, right-padded, with a pad token (Phi-2: pad = eos = unk).

    A checkpoint that only loads with its own (remote) code is refused first, naming the converter."""
    path = model_args.model_name_or_path
    if path:
        refuse_remote_code(read_config(path, "--model_name_or_path"), path, "--model_name_or_path",
                           known_model_types=known_model_types())
    tokenizer = transformers.AutoTokenizer.from_pretrained(
        model_args.model_name_or_path, model_max_length=training_args.model_max_length,
        padding_side="right", cache_dir=training_args.cache_dir, trust_remote_code=False)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.unk_token or tokenizer.eos_token
    return tokenizer


def model_class(model_type: str, model_path: str) -> type:
    """The LLaVA model class for a config.json `model_type` (registered host/hybrid classes first)."""
    if model_type in MODEL_CLASSES:
        return MODEL_CLASSES[model_type]
    if model_type == "phi":
        return MODEL_CLASSES["llava_phi"]
    if model_type in ("llava", "llava_llama", "llama"):
        from llava.model import LlavaLlamaForCausalLM
        return LlavaLlamaForCausalLM
    raise ValueError(f"--model_name_or_path {model_path!r}: model_type {model_type!r} is not supported; "
                     f"choose a checkpoint of {sorted(set(MODEL_CLASSES) | {'phi', 'llava', 'llama'})}")


def load_model(model_args: ModelArguments, training_args: TrainingArguments):
    """Load --model_name_or_path with the class its config.json names, in the compute dtype."""
    path = model_args.model_name_or_path
    if not path:
        raise ValueError("--model_name_or_path is required (a checkpoint directory)")
    cls = model_class(read_model_type(path, flag="--model_name_or_path"), path)
    model = cls.from_pretrained(path, **dtype_kwargs(compute_dtype(training_args)), cache_dir=training_args.cache_dir)
    model.config.use_cache = False
    return model


def compute_dtype(training_args: TrainingArguments) -> torch.dtype:
    return torch.bfloat16 if training_args.bf16 else torch.float16 if training_args.fp16 else torch.float32


def setup_vision(model, tokenizer, model_args, data_args, training_args, has_images: bool) -> None:
    """Attach/load the tower and projector, set LLaVA's mm config fields and the trainable parts.

    A checkpoint that already has a tower keeps it and its projector; an mm flag that contradicts
    the checkpoint raises (LLaVA would silently write the flag into the config and keep the old
    module). A checkpoint without one gets --vision_tower and a new --mm_projector_type projector.
    """
    config = model.config
    has_tower = getattr(config, "mm_vision_tower", None) is not None
    if not has_tower and model_args.vision_tower is None:
        if has_images:
            raise ValueError(f"--data_path has images but --model_name_or_path {model_args.model_name_or_path!r} "
                             "has no vision tower: pass --vision_tower")
        return
    if has_tower:
        _check_mm_flags_match(model_args, config)
    for name, default in MM_FLAG_DEFAULTS.items():
        if getattr(model_args, name) is None:
            setattr(model_args, name, getattr(config, name, default))
    if not has_tower:
        model.get_model().initialize_vision_modules(model_args=model_args, fsdp=training_args.fsdp)
    tower = model.get_vision_tower()
    if not tower.is_loaded:
        tower.load_model()
    tower.to(dtype=compute_dtype(training_args), device=training_args.device)

    data_args.image_processor = tower.image_processor
    data_args.is_multimodal = True
    data_args.image_aspect_ratio = data_args.image_aspect_ratio or getattr(config, "image_aspect_ratio", "square")
    config.image_aspect_ratio = data_args.image_aspect_ratio
    config.tokenizer_padding_side = tokenizer.padding_side
    config.tokenizer_model_max_length = tokenizer.model_max_length

    set_trainable(model, model_args, training_args)
    config.mm_use_im_start_end = data_args.mm_use_im_start_end = model_args.mm_use_im_start_end
    config.mm_projector_lr = training_args.mm_projector_lr
    training_args.use_im_start_end = model_args.mm_use_im_start_end
    config.mm_use_im_patch_token = model_args.mm_use_im_patch_token
    if model_args.mm_use_im_patch_token or model_args.mm_use_im_start_end:
        model.initialize_vision_tokenizer(model_args, tokenizer=tokenizer)


def set_trainable(model, model_args: ModelArguments, training_args: TrainingArguments) -> None:
    """LLaVA's trainable-part flags, in LLaVA's order, plus --unfreeze_mm_vision_tower.

    --freeze_backbone (applied at load) keeps the projector trainable, as LLaVA's
    initialize_vision_modules does; --tune_mm_mlp_adapter trains only the projector;
    --freeze_mm_mlp_adapter freezes it; the tower is frozen unless --unfreeze_mm_vision_tower.
    """
    config, projector, tower = model.config, model.get_model().mm_projector, model.get_vision_tower()
    projector.requires_grad_(True)
    config.tune_mm_mlp_adapter = training_args.tune_mm_mlp_adapter = model_args.tune_mm_mlp_adapter
    if model_args.tune_mm_mlp_adapter:
        model.requires_grad_(False)
        projector.requires_grad_(True)
    config.freeze_mm_mlp_adapter = training_args.freeze_mm_mlp_adapter
    if training_args.freeze_mm_mlp_adapter:
        projector.requires_grad_(False)
    tower.requires_grad_(False)
    config.unfreeze_mm_vision_tower = model_args.unfreeze_mm_vision_tower
    if model_args.unfreeze_mm_vision_tower:
        unfreeze_tower(tower)


def unfreeze_tower(tower) -> None:
    """Make a LLaVA-interface tower trainable: parameters on, and its forward without @torch.no_grad.

    LLaVA's towers (CLIP, and the host's SigLIP) decorate `forward` with torch.no_grad because they
    are frozen by design; this instance gets the undecorated function instead.
    """
    tower.requires_grad_(True)
    tower.forward = functools.partial(inspect.unwrap(type(tower).forward), tower)


def _check_mm_flags_match(model_args: ModelArguments, config) -> None:
    checkpoint = model_args.model_name_or_path
    if model_args.vision_tower is not None:
        ours = os.path.realpath(resolve_tower_path(model_args.vision_tower, config))
        theirs = os.path.realpath(resolve_tower_path(str(config.mm_vision_tower), config))
        if ours != theirs:
            raise ValueError(f"--vision_tower {model_args.vision_tower!r}: --model_name_or_path {checkpoint!r} "
                             f"already has tower {config.mm_vision_tower!r}; drop the flag or start from a "
                             "checkpoint without a tower")
    for name in MM_FLAG_DEFAULTS:
        wanted, have = getattr(model_args, name), getattr(config, name, None)
        if wanted is not None and have is not None and wanted != have:
            raise ValueError(f"--{name} {wanted!r}: --model_name_or_path {checkpoint!r} was built with "
                             f"{have!r}; drop the flag to keep it")


def train(model_args: ModelArguments, data_args: DataArguments, training_args: TrainingArguments):
    """Run SFT; return the LLaVATrainer (its `state.log_history` holds the logged losses)."""
    from llava import conversation as conversation_lib
    from llava.train.llava_trainer import LLaVATrainer

    base = llava_train()
    base.local_rank = training_args.local_rank
    if training_args.lora_enable or training_args.bits in (4, 8):
        raise ValueError("--lora_enable / --bits 4|8 are not supported by this entry; use full or "
                         "--tune_mm_mlp_adapter / --freeze_backbone training")
    samples = validate_data(data_args.data_path, data_args.image_folder)
    check_output_dir(training_args.output_dir, checkpoint_estimate(model_args, training_args))
    tokenizer = load_tokenizer(model_args, training_args)
    conversation_lib.default_conversation = check_conv_mode(model_args.version, tokenizer)

    model = load_model(model_args, training_args)
    if training_args.should_log:
        print(layer_plan_line(model.config.num_hidden_layers, getattr(model.config, "mamba_layers", None)),
              flush=True)
    if model_args.freeze_backbone:
        model.get_model().requires_grad_(False)
    if training_args.gradient_checkpointing:
        model.enable_input_require_grads()
    setup_vision(model, tokenizer, model_args, data_args, training_args,
                 has_images=any("image" in s for s in samples))

    image_tokens = tokens_per_image(model) if model.get_vision_tower() is not None else 1
    check_sample_lengths(samples, tokenizer, data_args, image_tokens, tokenizer.model_max_length)
    data_module = base.make_supervised_data_module(tokenizer=tokenizer, data_args=data_args)
    # tokenizer= (LLaVA's keyword): native up to 4.x, mapped to processing_class= by the 5.x patch
    # checkpoint-N and the final save are atomic and lane-portable (host/saving.py); a non-finite loss or
    # weight stops the run (guards.FiniteGuardMixin)
    trainer = guarded_trainer_class(atomic_trainer_class(LLaVATrainer))(model=model, args=training_args,
                                                                        tokenizer=tokenizer, **data_module)
    if training_args.should_save:
        remove_unfinished_saves(training_args.output_dir)
    say = (lambda msg: print(f"sft: {msg}", flush=True)) if training_args.should_log else (lambda msg: None)
    resume = trainer.resumed_from = last_complete_checkpoint(training_args.output_dir, log=say)
    trainer.train(resume_from_checkpoint=resume)
    trainer.check_finite_weights()
    trainer.save_state()
    save_final_model(trainer, model, tokenizer, training_args.output_dir)
    return trainer


def checkpoint_estimate(model_args: ModelArguments, training_args: TrainingArguments) -> int:
    """Bytes of one checkpoint-N (guards.checkpoint_bytes): the checkpoint's weights and tower, and optimizer
    state for what trains (the projector alone with --tune_mm_mlp_adapter / --freeze_backbone)."""
    path = model_args.model_name_or_path
    if not path or not os.path.isdir(path):
        return 0  # load_model names the flag
    config = read_config(path, "--model_name_or_path")
    files = weight_files(path, "--model_name_or_path")
    tower = resolve_tower_path(str(config.get("mm_vision_tower") or model_args.vision_tower or ""),
                               types.SimpleNamespace(name_or_path=path))
    if tower and os.path.isfile(os.path.join(tower, CONFIG_NAME)):
        files = files + weight_files(tower, "--model_name_or_path (its vision tower)")
    projector_only = model_args.tune_mm_mlp_adapter or model_args.freeze_backbone
    tower_trains = model_args.unfreeze_mm_vision_tower

    def trained(name: str) -> bool:
        if projector_only:
            return "mm_projector" in name
        return tower_trains or "vision_tower" not in name

    return checkpoint_bytes(files, trained, width=2 if (training_args.bf16 or training_args.fp16) else 4,
                            deepspeed=bool(training_args.deepspeed))


def parse_args(argv: Optional[Sequence[str]] = None):
    """(ModelArguments, DataArguments, TrainingArguments) from LLaVA-style flags."""
    parser = transformers.HfArgumentParser(argument_classes())
    return parser.parse_args_into_dataclasses(args=None if argv is None else list(argv))


def main(argv: Optional[Sequence[str]] = None):
    """Entry point of scripts/train_sft.py: activate the plugin, parse LLaVA-style flags, train."""
    import llava_hybrid

    llava_hybrid.activate()
    preflight_deepspeed_cpu(sys.argv[1:] if argv is None else argv)  # before the flags start DeepSpeed
    return train(*parse_args(argv))
