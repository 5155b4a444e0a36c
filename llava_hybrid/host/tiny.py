"""Tiny but real TinyLLaVA-style checkpoints: Phi LM + SigLIP tower + mlp2x_gelu + GPT-2 BPE.

Same key names, config fields and file set as the released teachers, at toy sizes, so tests and the
easy-VQA recipe exercise the real loading path (no hub, no weights to download). Two layouts:

  layout="llava"    this project's `llava_phi` checkpoint (LLaVA layout, what bczhou/TinyLLaVA-3.1B
                    and our converter produce):
                      config.json, model.safetensors (model.*, lm_head.*, model.mm_projector.*),
                      tokenizer files, vision_tower/ (SiglipVisionModel + preprocessor_config.json),
                      config `mm_vision_tower: "vision_tower"` (relative to the checkpoint dir).
  layout="factory"  the TinyLLaVA_Factory layout (tinyllava/TinyLLaVA-Phi-2-SigLIP-3.1B):
                      config.json (model_type tinyllava, text_config / vision_config, ...),
                      model.safetensors (language_model.*, vision_tower._vision_tower.*,
                      connector._connector.*), tokenizer files. Convert with
                      `llava_hybrid.convert.factory.convert_factory_checkpoint`.
"""
from __future__ import annotations

import json
import os
import shutil
from typing import Dict, Optional

import torch
from safetensors.torch import save_file
from transformers import AutoTokenizer, SiglipVisionConfig, SiglipVisionModel

from .saving import TOWER_PREFIX, TOWER_SUBDIR, hub_tower_names

ASSET_GPT2 = os.path.join(os.path.dirname(os.path.dirname(__file__)), "assets", "gpt2")
EOT = "<|endoftext|>"


def write_phi2_style_tokenizer(out_dir: str, vocab: str = "gpt2", model_max_length: int = 2048):
    """Write a Phi-2-style tokenizer into `out_dir` and return it.

    vocab="gpt2": the GPT-2 byte-level BPE shipped in llava_hybrid/assets/gpt2 (Phi-2's base), with
    `<|endoftext|>` as eos = pad = unk (and as the nominal bos, which is never prepended: no BOS in
    encoded text, like Phi-2). Otherwise `vocab` is a tokenizer directory, copied through AutoTokenizer.
    """
    os.makedirs(out_dir, exist_ok=True)
    if vocab == "gpt2":
        for name in ("vocab.json", "merges.txt"):
            shutil.copyfile(os.path.join(ASSET_GPT2, name), os.path.join(out_dir, name))
        with open(os.path.join(out_dir, "tokenizer_config.json"), "w") as f:
            json.dump({"tokenizer_class": "GPT2Tokenizer", "bos_token": EOT, "eos_token": EOT,
                       "unk_token": EOT, "pad_token": EOT, "add_prefix_space": False,
                       "add_bos_token": False, "model_max_length": model_max_length}, f, indent=2)
        tokenizer = AutoTokenizer.from_pretrained(out_dir)
    elif os.path.isdir(vocab):
        tokenizer = AutoTokenizer.from_pretrained(vocab)
    else:
        raise ValueError(f"vocab={vocab!r}: pass 'gpt2' (the bundled GPT-2 BPE) or a local tokenizer directory")
    tokenizer.save_pretrained(out_dir)
    return tokenizer


def padded_vocab_size(n_tokens: int, multiple: int = 64) -> int:
    """Embedding rows: the tokenizer size rounded up to `multiple` (Phi-2 pads 50295 -> 51200)."""
    return -(-n_tokens // multiple) * multiple


def _rotary_factor(head_dim: int) -> float:
    # Phi-2 rotates 40 % of each head; transformers' Phi needs an even rotary dimension.
    rotary = int(head_dim * 0.4)
    return 0.4 if rotary % 2 == 0 and rotary > 0 else 0.5


def _tower_config(vision_hidden: int, vision_layers: int, image_size: int, patch_size: int) -> SiglipVisionConfig:
    return SiglipVisionConfig(
        hidden_size=vision_hidden, intermediate_size=4 * vision_hidden, num_hidden_layers=vision_layers,
        num_attention_heads=max(1, vision_hidden // 16), image_size=image_size, patch_size=patch_size)


def build_tiny_llava_phi(out_dir: str, *, layout: str = "llava", hidden_size: int = 64, num_layers: int = 4,
                         num_heads: int = 4, vision_hidden: int = 32, vision_layers: int = 2,
                         image_size: int = 64, patch_size: int = 16, vocab: str = "gpt2", seed: int = 0,
                         siglip_tokens: Optional[int] = None, image_aspect_ratio: Optional[str] = None) -> str:
    """Write a tiny TinyLLaVA-Phi-SigLIP checkpoint to `out_dir` and return `out_dir`.

    siglip_tokens: 729 keeps every SigLIP token (TinyLLaVA-Bench convention), 728 drops token 0
    (TinyLLaVA_Factory convention); the names stand for the real model's counts, the tiny tower
    emits (image_size / patch_size)^2 or one fewer. Default: 729 for "llava", 728 for "factory".
    image_aspect_ratio defaults to "pad" (llava, as bczhou's) / "square" (factory).
    """
    if layout not in ("llava", "factory"):
        raise ValueError(f"layout={layout!r}: choose 'llava' or 'factory'")
    siglip_tokens = siglip_tokens or (729 if layout == "llava" else 728)
    if siglip_tokens not in (728, 729):
        raise ValueError(f"siglip_tokens={siglip_tokens!r}: choose 729 (all tokens) or 728 (drop the first)")
    if layout == "factory" and siglip_tokens != 728:
        raise ValueError("layout='factory' always drops the first SigLIP token: use siglip_tokens=728")
    from llava_hybrid.host import register
    from llava_hybrid.host.phi import LlavaPhiConfig, LlavaPhiForCausalLM
    register()

    os.makedirs(out_dir, exist_ok=True)
    torch.manual_seed(seed)
    # 1. tokenizer and tower (the LM config points at the tower directory)
    tokenizer = write_phi2_style_tokenizer(out_dir, vocab)
    tower_dir = os.path.join(out_dir, TOWER_SUBDIR)
    tower = SiglipVisionModel(_tower_config(vision_hidden, vision_layers, image_size, patch_size)).eval()
    _save_tower(tower, tower_dir)
    # 2. the LLaVA-Phi model around it
    eot_id = tokenizer.convert_tokens_to_ids(EOT)
    config = LlavaPhiConfig(
        vocab_size=padded_vocab_size(len(tokenizer)), hidden_size=hidden_size, intermediate_size=4 * hidden_size,
        num_hidden_layers=num_layers, num_attention_heads=num_heads, num_key_value_heads=num_heads,
        partial_rotary_factor=_rotary_factor(hidden_size // num_heads), max_position_embeddings=2048,
        bos_token_id=eot_id, eos_token_id=eot_id, pad_token_id=eot_id, tie_word_embeddings=False,
        mm_vision_tower=tower_dir, mm_hidden_size=vision_hidden, mm_projector_type="mlp2x_gelu",
        mm_vision_select_layer=-2, mm_vision_select_feature="patch" if siglip_tokens == 729 else "patch_drop_first",
        mm_patch_merge_type="flat", mm_use_im_start_end=False, mm_use_im_patch_token=False, use_mm_proj=True,
        image_aspect_ratio=image_aspect_ratio or ("pad" if layout == "llava" else "square"),
        tokenizer_padding_side="right", tokenizer_model_max_length=2048, architectures=["LlavaPhiForCausalLM"])
    model = LlavaPhiForCausalLM(config).eval()
    config.mm_vision_tower = TOWER_SUBDIR  # relative: resolved against the checkpoint directory
    # 3. weights in the requested layout
    state = {k: v.contiguous() for k, v in model.state_dict().items()}
    if layout == "llava":
        config.save_pretrained(out_dir)
        save_file(state, os.path.join(out_dir, "model.safetensors"), metadata={"format": "pt"})
    else:
        state.update({TOWER_PREFIX + k: v.contiguous() for k, v in tower.state_dict().items()})
        save_file(factory_state_dict(state), os.path.join(out_dir, "model.safetensors"), metadata={"format": "pt"})
        shutil.rmtree(tower_dir)  # the Factory ships its tower inside model.safetensors
        with open(os.path.join(out_dir, "config.json"), "w") as f:
            json.dump(_factory_config(config, tower.config, tokenizer), f, indent=2)
    return out_dir


def _save_tower(tower: SiglipVisionModel, tower_dir: str) -> None:
    from transformers import SiglipImageProcessor

    from .saving import save_siglip_model
    save_siglip_model(tower, tower_dir)
    size = tower.config.image_size
    SiglipImageProcessor(size={"height": size, "width": size}).save_pretrained(tower_dir)


def factory_state_dict(state: Dict[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
    """A state dict of one of our LLaVA models (tower included, either lane's names) under the names
    TinyLLaVA_Factory writes (the inverse of the converters' key map; tower with `vision_model.`)."""
    from llava_hybrid.convert.common import factory_key

    tower = hub_tower_names({k[len(TOWER_PREFIX):]: v for k, v in state.items() if k.startswith(TOWER_PREFIX)})
    ours = {k: v for k, v in state.items() if not k.startswith(TOWER_PREFIX)}
    ours.update({TOWER_PREFIX + k: v for k, v in tower.items()})
    return {factory_key(k): v.contiguous() for k, v in ours.items()}


def _factory_config(config, tower_config: SiglipVisionConfig, tokenizer) -> Dict:
    """config.json as TinyLLaVA_Factory writes it (TinyLlavaConfig.to_dict, remote-code model)."""
    text = {k: v for k, v in config.to_dict().items() if not k.startswith(("mm_", "tokenizer_", "image_"))}
    for k in ("use_mm_proj", "architectures", "transformers_version", "_name_or_path"):
        text.pop(k, None)
    text["model_type"] = "phi"
    vision = tower_config.to_dict()
    vision.pop("transformers_version", None)
    vision["model_type"] = "siglip_vision_model"
    return {
        "architectures": ["TinyLlavaForConditionalGeneration"],
        "model_type": "tinyllava",
        "llm_model_name_or_path": "microsoft/phi-2",
        "tokenizer_name_or_path": "microsoft/phi-2",
        "vision_model_name_or_path": "google/siglip-so400m-patch14-384",
        "vision_model_name_or_path2": "",
        "connector_type": "mlp2x_gelu",
        "text_config": text,
        "hidden_size": config.hidden_size,
        "vocab_size": config.vocab_size,
        "ignore_index": -100,
        "image_token_index": -200,
        "pad_token": tokenizer.pad_token,
        "pad_token_id": tokenizer.pad_token_id,
        "tokenizer_padding_side": "right",
        "tokenizer_model_max_length": config.tokenizer_model_max_length,
        "vision_config": vision,
        "vision_hidden_size": tower_config.hidden_size,
        "vision_feature_layer": config.mm_vision_select_layer,
        "vision_feature_select_strategy": "patch",  # Factory "patch" = hidden_states[-2][:, 1:] -> 728
        "image_aspect_ratio": config.image_aspect_ratio,
        "resampler_hidden_size": 768,
        "num_queries": 128,
        "num_resampler_layers": 3,
        "use_cache": True,
        "cache_dir": None,
        "tune_type_llm": "frozen",
        "tune_type_connector": "full",
        "tune_type_vision_tower": "frozen",
        "tune_vision_tower_from_layer": 0,
    }
