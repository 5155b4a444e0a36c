"""`load_pretrained_model` that dispatches on config.json `model_type` instead of the directory name.

LLaVA's loader picks a class from substrings of the model name ('llava', 'mpt', 'mistral'), always
resizes the embeddings to len(tokenizer) (which would shrink Phi-2's 51200-row embedding to 50295)
and adds `<im_patch>` unless told otherwise. Here a checkpoint whose `model_type` is registered in
`MODEL_CLASSES` is loaded by its class; everything else goes to LLaVA's original loader unchanged.
"""
from __future__ import annotations

import os
from typing import Callable, Dict, Optional, Tuple

import torch

from llava_hybrid.checkpoint_files import read_config, refuse_remote_code, weight_files
from llava_hybrid.compat import dtype_kwargs

from .saving import TOWER_SUBDIR

# config.json model_type -> model class with `from_pretrained` and LLaVA's meta interface
MODEL_CLASSES: Dict[str, type] = {}
# LLaVA's own model types among them: a --model-base (LoRA / projector-only) load of these still goes to
# LLaVA's loader, which knows those layouts
LLAVA_MODEL_TYPES = ("llava_llama",)


def register_model_class(model_type: str, cls: type) -> None:
    """Route checkpoints of `model_type` to `cls` (idempotent; a different class for a taken key is refused)."""
    taken = MODEL_CLASSES.get(model_type)
    if taken is not None and taken is not cls:
        raise ValueError(f"model_type {model_type!r} is already registered to {taken.__qualname__}; "
                         f"refusing {cls.__qualname__}")
    MODEL_CLASSES[model_type] = cls


def read_model_type(model_path: str, flag: str = "--model-path") -> str:
    """`model_type` from `<model_path>/config.json` (the one reader: CheckpointError naming path and flag)."""
    return read_config(model_path, flag).get("model_type", "")


def known_model_types() -> set:
    """model_types that load without the checkpoint's own code: ours (registered) and transformers'."""
    from transformers import CONFIG_MAPPING

    return set(MODEL_CLASSES) | set(CONFIG_MAPPING.keys())


def _target_device(device: str, device_map) -> torch.device:
    # "cuda" (LLaVA's default) falls back to CPU on a machine without CUDA
    if isinstance(device_map, dict) and "" in device_map:
        device = device_map[""]
    if str(device).startswith("cuda") and not torch.cuda.is_available():
        return torch.device("cpu")
    return torch.device(device)


def load_registered_model(model_path: str, cls: type, device: str = "cuda", device_map="auto",
                          load_8bit: bool = False, load_4bit: bool = False, use_flash_attn: bool = False,
                          torch_dtype: Optional[torch.dtype] = None, **kwargs) -> Tuple:
    """Load a checkpoint of a registered class: (tokenizer, model, image_processor, context_len).

    dtype: fp16 on CUDA (as LLaVA), float32 on CPU, unless `torch_dtype` is given. The embedding is
    never resized; `<im_patch>` / `<im_start>` `<im_end>` are added only when the config asks.
    """
    from transformers import AutoTokenizer
    from llava.constants import DEFAULT_IM_END_TOKEN, DEFAULT_IM_START_TOKEN, DEFAULT_IMAGE_PATCH_TOKEN

    if load_8bit or load_4bit:
        raise ValueError(f"--load-8bit/--load-4bit are not supported for {cls.__name__} checkpoints ({model_path})")
    target = _target_device(device, device_map)
    dtype = torch_dtype or (torch.float16 if target.type == "cuda" else torch.float32)
    if use_flash_attn:
        kwargs["attn_implementation"] = "flash_attention_2"
    kwargs.pop("low_cpu_mem_usage", None)

    weight_files(model_path, "--model-path")  # a missing or truncated weight file, named, before loading
    tower_dir = os.path.join(model_path, TOWER_SUBDIR)
    if os.path.isdir(tower_dir):
        weight_files(tower_dir, "--model-path")
    tokenizer = AutoTokenizer.from_pretrained(model_path, trust_remote_code=False)
    model = cls.from_pretrained(model_path, **dtype_kwargs(dtype), **kwargs)
    model.to(target).eval()

    if getattr(model.config, "mm_use_im_patch_token", False):
        tokenizer.add_tokens([DEFAULT_IMAGE_PATCH_TOKEN], special_tokens=True)
    if getattr(model.config, "mm_use_im_start_end", False):
        tokenizer.add_tokens([DEFAULT_IM_START_TOKEN, DEFAULT_IM_END_TOKEN], special_tokens=True)
    rows = model.get_input_embeddings().weight.shape[0]
    if len(tokenizer) > rows:  # only grow, never shrink (Phi-2: 51200 rows for 50295 tokens)
        model.resize_token_embeddings(len(tokenizer))

    image_processor = None
    vision_tower = model.get_vision_tower() if hasattr(model, "get_vision_tower") else None
    if vision_tower is not None:
        if not vision_tower.is_loaded:
            vision_tower.load_model()
        vision_tower.to(device=target, dtype=dtype)
        image_processor = vision_tower.image_processor
    return tokenizer, model, image_processor, context_length(model.config)


def context_length(config) -> int:
    """max_sequence_length, else tokenizer_model_max_length, else max_position_embeddings, else 2048."""
    for field in ("max_sequence_length", "tokenizer_model_max_length", "max_position_embeddings"):
        value = getattr(config, field, None)
        if value:
            return int(value)
    return 2048


def load_pretrained_model(model_path, model_base, model_name, load_8bit=False, load_4bit=False,
                          device_map="auto", device="cuda", use_flash_attn=False, **kwargs):
    """LLaVA's `load_pretrained_model` signature and return; dispatch on config.json `model_type`.

    Registered model types load through `load_registered_model` (no `model_base`: LoRA /
    projector-only loading is refused for them, except for LLaVA's own `llava_llama`, which LLaVA's loader
    takes then); anything else goes to LLaVA's original loader.
    """
    config = read_config(str(model_path), "--model-path")
    model_type = config.get("model_type", "")
    refuse_remote_code(config, str(model_path), "--model-path", known_model_types=known_model_types())
    if model_base is not None and model_type in LLAVA_MODEL_TYPES:
        return _original_loader()(model_path, model_base, model_name, load_8bit=load_8bit, load_4bit=load_4bit,
                                  device_map=device_map, device=device, use_flash_attn=use_flash_attn, **kwargs)
    if model_base is not None and model_type in MODEL_CLASSES:
        raise ValueError(f"--model-base {model_base!r} with a {model_type!r} checkpoint ({model_path}): "
                         "LoRA / projector-only loading is not supported for this model type; pass a merged "
                         "checkpoint as --model-path and no --model-base")
    cls = MODEL_CLASSES.get(model_type)
    if cls is not None:
        return load_registered_model(str(model_path), cls, device=device, device_map=device_map,
                                     load_8bit=load_8bit, load_4bit=load_4bit, use_flash_attn=use_flash_attn,
                                     **kwargs)
    original = _original_loader()
    return original(model_path, model_base, model_name, load_8bit=load_8bit, load_4bit=load_4bit,
                    device_map=device_map, device=device, use_flash_attn=use_flash_attn, **kwargs)


def _original_loader() -> Callable:
    from llava_hybrid._patching import original_of
    original = original_of(load_pretrained_model)
    if original is None:  # not patched yet: the module attribute is still LLaVA's
        import llava.model.builder as llava_builder
        original = llava_builder.load_pretrained_model
    assert original is not load_pretrained_model
    return original


def register() -> None:
    """Patch llava.model.builder.load_pretrained_model (idempotent) and route LLaVA's own `llava_llama`
    checkpoints to `LlavaLlamaForCausalLM` by their model_type.

    LLaVA's loader picks that class only for a directory whose name contains "llava", and always loads it
    in float16 (a CPU run then computes in fp16; the distillation entry's --bf16 / fp32 is overridden) and
    with the slow tokenizer; by model_type it loads in the dtype asked for (fp32 on a CPU), any name."""
    import llava.model.builder as llava_builder
    from llava.model.language_model.llava_llama import LlavaConfig, LlavaLlamaForCausalLM

    from llava_hybrid._patching import replace_attr
    register_model_class(LlavaConfig.model_type, LlavaLlamaForCausalLM)
    replace_attr(llava_builder, "load_pretrained_model", load_pretrained_model)
