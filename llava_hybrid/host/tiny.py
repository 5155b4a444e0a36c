"""Tiny but real TinyLLaVA-style checkpoints: Phi LM + SigLIP tower + mlp2x_gelu + GPT-2 BPE.

Same key names, config fields and file set as the released checkpoints, at toy sizes, so tests and the
easy-VQA recipe exercise the real loading path (no hub, no weights to download):

  build_tiny_llava_phi(layout="llava")    this project's `llava_phi` checkpoint (LLaVA layout, what
                      bczhou/TinyLLaVA-3.1B and our converter produce): config.json, model.safetensors
                      (model.*, lm_head.*, model.mm_projector.*), tokenizer files, vision_tower/
                      (SiglipVisionModel + preprocessor_config.json), `mm_vision_tower: "vision_tower"`.
  build_tiny_llava_phi(layout="factory")  the TinyLLaVA_Factory teacher as released
                      (tinyllava/TinyLLaVA-Phi-2-SigLIP-3.1B), byte for byte in format: see
                      write_factory_checkpoint. Convert with scripts/convert_tinyllava_factory.py.
  build_matvlm_release(out, teacher_dir, plan)   the official MaTVLM release (hustvl/MaTVLM_*_Mamba2):
                      the Factory layout of a hybrid student + mamba_config.json, at the release's
                      layer plans (RELEASE_PLANS). Convert with scripts/convert_matvlm.py.
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
                         siglip_tokens: Optional[int] = None, image_aspect_ratio: Optional[str] = None,
                         answer: Optional[str] = None) -> str:
    """Write a tiny TinyLLaVA-Phi-SigLIP checkpoint to `out_dir` and return `out_dir`.

    siglip_tokens: 729 keeps every SigLIP token (TinyLLaVA-Bench convention), 728 drops token 0
    (TinyLLaVA_Factory convention); the names stand for the real model's counts, the tiny tower
    emits (image_size / patch_size)^2 or one fewer. Default: 729 for "llava", 728 for "factory".
    image_aspect_ratio defaults to "pad" (llava, as bczhou's) / "square" (factory).
    layout="factory" writes the released layout exactly (write_factory_checkpoint: float16 shards, 4.43
    config, Phi-2's slow tokenizer files); the same seed and sizes give the same weights in both layouts.
    answer: a word the random model answers every question with, then stops (`set_fixed_answer`), so
    LLaVA's eval scripts finish at once; None leaves the random weights as they are.
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
    build_dir = out_dir if layout == "llava" else os.path.join(out_dir, ".llava-build")
    torch.manual_seed(seed)
    # 1. tokenizer and tower (the LM config points at the tower directory)
    tokenizer = write_phi2_style_tokenizer(build_dir, vocab)
    tower_dir = os.path.join(build_dir, TOWER_SUBDIR)
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
    if answer is not None:
        set_fixed_answer(model, tokenizer, answer)
    # 3. weights in the requested layout
    if layout == "factory":
        model.get_model().get_vision_tower().load_model()
        write_factory_checkpoint(out_dir, model)
        shutil.rmtree(build_dir)  # the Factory ships its tower inside the shards, its tokenizer slow
        return out_dir
    config.mm_vision_tower = TOWER_SUBDIR  # relative: resolved against the checkpoint directory
    config.save_pretrained(out_dir)
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, os.path.join(out_dir, "model.safetensors"),
              metadata={"format": "pt"})
    return out_dir


def set_fixed_answer(model, tokenizer, word: str, seed: int = 0) -> int:
    """Make a random LLaVA-Phi model answer every prompt with the single token `word`, then stop.

    lm_head's bias makes `word` the argmax after any ordinary token; `word`'s input embedding is a large
    zero-mean vector u, so after `word` the final LayerNorm's output is ~u's direction, and eos's lm_head
    row (3 u / |u|) then beats `word` by ~20 logits (elsewhere eos's logit is ~3 N(0, 1), under `word`'s
    10 but for a 1-in-2,000 prompt). Returns the token id of `word`.
    """
    ids = tokenizer(word, add_special_tokens=False).input_ids
    if len(ids) != 1:
        raise ValueError(f"answer {word!r} is {len(ids)} tokens; pick a single-token word (e.g. ' Yes')")
    (word_id,) = ids
    eos = model.config.eos_token_id
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        u = torch.randn(model.config.hidden_size, generator=g)
        u = u - u.mean()
        model.get_input_embeddings().weight[word_id] = 1e3 * u / u.norm()
        head = model.get_output_embeddings()
        head.weight[eos] = 3.0 * u / u.norm()
        head.bias.zero_()
        head.bias[word_id] = 10.0
    return word_id


def _save_tower(tower: SiglipVisionModel, tower_dir: str) -> None:
    from transformers import SiglipImageProcessor

    from .saving import save_siglip_model
    save_siglip_model(tower, tower_dir)
    size = tower.config.image_size
    SiglipImageProcessor(size={"height": size, "width": size}).save_pretrained(tower_dir)


def factory_state_dict(state: Dict[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
    """A state dict of one of our LLaVA models (tower included, either lane's names) under the names
    TinyLLaVA_Factory writes, in its module order (language_model, vision_tower, connector): the inverse
    of the converters' key map, tower names with `vision_model.`."""
    from llava_hybrid.convert.common import factory_key

    tower = hub_tower_names({k[len(TOWER_PREFIX):]: v for k, v in state.items() if k.startswith(TOWER_PREFIX)})
    ours = {k: v for k, v in state.items() if not k.startswith(TOWER_PREFIX)}
    ours.update({TOWER_PREFIX + k: v for k, v in tower.items()})
    renamed = {factory_key(k): v.contiguous() for k, v in ours.items()}
    order = ("language_model.model.", "language_model.lm_head.", "vision_tower.", "connector.")
    return dict(sorted(renamed.items(), key=lambda kv: next(i for i, p in enumerate(order) if kv[0].startswith(p))))


# ---------------------------------------------------------------------------------------------------------
# The released TinyLLaVA_Factory layout, exactly as TinyLLaVA_Factory's save_pretrained writes it under
# transformers 4.43 (tinyllava/TinyLLaVA-Phi-2-SigLIP-3.1B; MaTVLM's requirements.txt pins 4.43.1 for
# hustvl/MaTVLM_*_Mamba2), whatever transformers is installed: the 4.x weight names (tower with its
# `vision_model.` level), 2+ safetensors shards with model.safetensors.index.json, sub-configs as 4.43's
# to_diff_dict leaves them, auto_map naming remote code, Phi-2's slow tokenizer files, no
# preprocessor_config.json; the release adds mamba_config.json.

FACTORY_TRANSFORMERS_VERSION = "4.43.1"
# auto_map of the releases. The files it names are written as stand-ins that fail loudly when run:
# nothing in this project may ever execute a checkpoint's own code.
FACTORY_AUTO_MAP = {"AutoConfig": "configuration.TinyLlavaConfig",
                    "AutoModelForCausalLM": "modeling_tinyllava_phi.TinyLlavaForConditionalGeneration"}
REMOTE_CODE_STANDIN = (
    '"""Stand-in for the release\'s remote code (test fixture): it must never run."""\n'
    'raise RuntimeError("the checkpoint\'s remote code was executed (trust_remote_code must stay False)")\n')

# transformers 4.43 class defaults that to_diff_dict compares a sub-config against: a value is left out
# of config.json only when it equals both the default of TinyLlavaConfig()'s own sub-config (a Llama
# text config, a CLIP vision config with TinyLLaVA's overrides) and the sub-config class's default.
PHI_443_DEFAULTS = dict(
    _name_or_path="", architectures=None, torch_dtype=None, vocab_size=51200, hidden_size=2048,
    intermediate_size=8192, num_hidden_layers=24, num_attention_heads=32, num_key_value_heads=32,
    resid_pdrop=0.0, embd_pdrop=0.0, attention_dropout=0.0, hidden_act="gelu_new", max_position_embeddings=2048,
    initializer_range=0.02, layer_norm_eps=1e-5, use_cache=True, tie_word_embeddings=False, rope_theta=10000.0,
    rope_scaling=None, partial_rotary_factor=0.5, qk_layernorm=False, bos_token_id=1, eos_token_id=2)
LLAMA_443_DEFAULTS = dict(
    _name_or_path="", architectures=None, torch_dtype=None, vocab_size=32000, hidden_size=4096,
    intermediate_size=11008, num_hidden_layers=32, num_attention_heads=32, num_key_value_heads=32,
    hidden_act="silu", max_position_embeddings=2048, initializer_range=0.02, rms_norm_eps=1e-6, pretraining_tp=1,
    use_cache=True, rope_theta=10000.0, rope_scaling=None, attention_bias=False, attention_dropout=0.0,
    mlp_bias=False, tie_word_embeddings=False, bos_token_id=1, eos_token_id=2, pad_token_id=None)
SIGLIP_VISION_443_DEFAULTS = dict(
    _name_or_path="", hidden_size=768, intermediate_size=3072, num_hidden_layers=12, num_attention_heads=12,
    num_channels=3, image_size=224, patch_size=16, hidden_act="gelu_pytorch_tanh", layer_norm_eps=1e-6,
    attention_dropout=0.0)
CLIP_VISION_TINYLLAVA_DEFAULTS = dict(
    _name_or_path="", hidden_size=1024, intermediate_size=4096, projection_dim=768, num_hidden_layers=24,
    num_attention_heads=16, num_channels=3, image_size=336, patch_size=14, hidden_act="quick_gelu",
    layer_norm_eps=1e-5, attention_dropout=0.0, initializer_range=0.02, initializer_factor=1.0,
    vocab_size=32000, model_name_or_path="", model_name_or_path2="")

# The official release's three layer plans (32 layers): Mamba layers; attn_layers is the complement
RELEASE_PLANS = {"12.5": [0, 6, 12, 18], "25": list(range(0, 32, 4)), "50": list(range(0, 32, 2))}


def sparse_sub_config(full: Dict, composite_default: Dict, class_default: Dict) -> Dict:
    """transformers 4.43's recursive_diff_dict: keep a value unless it equals both defaults (model_type kept)."""
    kept = {k: v for k, v in full.items()
            if k not in composite_default or v != composite_default[k] or k not in class_default
            or v != class_default[k]}
    kept["model_type"] = full["model_type"]
    return kept


def phi_text_config(config, torch_dtype: str) -> Dict:
    """The release's text_config: a Phi config as AutoConfig.from_pretrained('microsoft/phi-2') gives it,
    with this model's sizes, written sparsely."""
    from llava_hybrid.compat import rope_settings

    theta, factor, _ = rope_settings(config)
    full = {name: getattr(config, name) for name in (
        "vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads",
        "num_key_value_heads", "resid_pdrop", "embd_pdrop", "attention_dropout", "hidden_act",
        "max_position_embeddings", "initializer_range", "layer_norm_eps", "use_cache", "tie_word_embeddings",
        "qk_layernorm", "bos_token_id", "eos_token_id")}
    full.update(_name_or_path="microsoft/phi-2", architectures=["PhiForCausalLM"], torch_dtype=torch_dtype,
                rope_theta=theta, partial_rotary_factor=factor, rope_scaling=None, model_type="phi")
    return sparse_sub_config(full, LLAMA_443_DEFAULTS, PHI_443_DEFAULTS)


def siglip_vision_config(tower_config) -> Dict:
    """The release's vision_config: SigLIP's vision config plus TinyLLaVA's model_name_or_path fields, sparse."""
    full = {name: getattr(tower_config, name) for name in SIGLIP_VISION_443_DEFAULTS if name != "_name_or_path"}
    full.update(_name_or_path="", model_name_or_path="google/siglip-so400m-patch14-384", model_name_or_path2="",
                model_type="siglip_vision_model")
    return sparse_sub_config(full, CLIP_VISION_TINYLLAVA_DEFAULTS, SIGLIP_VISION_443_DEFAULTS)


def factory_config_json(config, tower_config, *, architectures, torch_dtype: str, pad_token: str,
                        tokenizer_model_max_length: int) -> Dict:
    """config.json of a TinyLLaVA_Factory Phi-2 + SigLIP checkpoint (TinyLlavaConfig, 4.43 to_diff_dict)."""
    return {
        "architectures": list(architectures),
        "auto_map": dict(FACTORY_AUTO_MAP),
        "cache_dir": None,
        "connector_type": config.mm_projector_type,
        "hidden_size": config.hidden_size,
        "ignore_index": -100,
        "image_aspect_ratio": config.image_aspect_ratio,
        "image_token_index": -200,
        "llm_model_name_or_path": "microsoft/phi-2",
        "model_type": "tinyllava",
        "num_queries": 128,
        "num_resampler_layers": 3,
        "pad_token": pad_token,
        "pad_token_id": config.pad_token_id,
        "resampler_hidden_size": 768,
        "text_config": phi_text_config(config, torch_dtype),
        "tokenizer_model_max_length": tokenizer_model_max_length,
        "tokenizer_name_or_path": "microsoft/phi-2",
        "tokenizer_padding_side": "right",
        "tokenizer_use_fast": False,
        "torch_dtype": torch_dtype,
        "transformers_version": FACTORY_TRANSFORMERS_VERSION,
        "tune_type_connector": "full",
        "tune_type_llm": "full",
        "tune_type_vision_tower": "frozen",
        "tune_vision_tower_from_layer": 0,
        "use_cache": True,
        "vision_config": siglip_vision_config(tower_config),
        "vision_feature_layer": config.mm_vision_select_layer,
        # Factory "patch" = hidden_states[layer][:, 1:] (drops token 0: 728 of SigLIP's 729)
        "vision_feature_select_strategy": "patch",
        "vision_hidden_size": tower_config.hidden_size,
        "vision_model_name_or_path": "google/siglip-so400m-patch14-384",
        "vision_model_name_or_path2": "",
        "vocab_size": config.vocab_size,
    }


def _dumps(obj) -> str:
    # how transformers 4.x writes every JSON file it saves (configs, index, tokenizer files)
    return json.dumps(obj, indent=2, sort_keys=True, ensure_ascii=False) + "\n"


def write_sharded_safetensors(out_dir: str, state: Dict[str, torch.Tensor], shards: int = 2) -> list:
    """model-0000i-of-0000n.safetensors + model.safetensors.index.json, as save_pretrained writes them.

    Shards are cut as huggingface_hub's split_torch_state_dict_into_shards cuts them (tensors in state
    order; a new shard when the next tensor would pass max_shard_size), with max_shard_size chosen to
    give `shards` files, in the proportion of the released teacher (5 GB + 1.44 GB).
    """
    sizes = {k: v.numel() * v.element_size() for k, v in state.items()}
    total = sum(sizes.values())
    max_shard = int(total * 5.0 / 6.44) if shards == 2 else -(-total // shards)
    groups, current, current_size = [], [], 0
    for key, size in sizes.items():
        if current and current_size + size > max_shard:
            groups.append(current)
            current, current_size = [], 0
        current.append(key)
        current_size += size
    groups.append(current)
    if len(groups) < 2:
        raise ValueError(f"{len(groups)} shard: the state dict is too small to shard ({total} bytes)")
    names = [f"model-{i + 1:05d}-of-{len(groups):05d}.safetensors" for i in range(len(groups))]
    weight_map = {}
    for name, keys in zip(names, groups):
        save_file({k: state[k] for k in keys}, os.path.join(out_dir, name), metadata={"format": "pt"})
        weight_map.update({k: name for k in keys})
    with open(os.path.join(out_dir, "model.safetensors.index.json"), "w", encoding="utf-8") as f:
        f.write(_dumps({"metadata": {"total_size": total}, "weight_map": weight_map}))
    return names


# Phi-2's 38 added tokens (ids 50257-50294): runs of 31 down to 2 spaces, then of 9 down to 2 tabs
PHI2_ADDED_TOKENS = [" " * n for n in range(31, 1, -1)] + ["\t" * n for n in range(9, 1, -1)]


def write_phi2_slow_tokenizer(out_dir: str, model_max_length: int) -> None:
    """Phi-2's slow CodeGenTokenizer files as 4.43's save_pretrained writes them (no tokenizer.json):
    vocab.json, merges.txt, added_tokens.json, special_tokens_map.json, tokenizer_config.json."""
    with open(os.path.join(ASSET_GPT2, "vocab.json"), encoding="utf-8") as f:
        vocab = json.load(f)
    with open(os.path.join(ASSET_GPT2, "merges.txt"), encoding="utf-8") as f:
        merges = [line for line in f.read().split("\n") if line and not line.startswith("#version")]
    eot = vocab[EOT]
    added = {tok: len(vocab) + i for i, tok in enumerate(PHI2_ADDED_TOKENS)}
    with open(os.path.join(out_dir, "vocab.json"), "w", encoding="utf-8") as f:
        f.write(_dumps(vocab))
    with open(os.path.join(out_dir, "merges.txt"), "w", encoding="utf-8") as f:
        f.write("#version: 0.2\n" + "".join(m + "\n" for m in merges))
    with open(os.path.join(out_dir, "added_tokens.json"), "w", encoding="utf-8") as f:
        f.write(_dumps(added))
    special = {"content": EOT, "lstrip": False, "normalized": False, "rstrip": False, "single_word": False}
    with open(os.path.join(out_dir, "special_tokens_map.json"), "w", encoding="utf-8") as f:
        f.write(_dumps({"bos_token": special, "eos_token": special, "pad_token": EOT, "unk_token": special}))
    decoder = {str(eot): {**special, "special": True}}
    decoder.update({str(i): {"content": tok, "lstrip": False, "normalized": True, "rstrip": False,
                             "single_word": False, "special": False} for tok, i in added.items()})
    with open(os.path.join(out_dir, "tokenizer_config.json"), "w", encoding="utf-8") as f:
        f.write(_dumps({"add_prefix_space": False, "added_tokens_decoder": decoder, "bos_token": EOT,
                        "clean_up_tokenization_spaces": True, "eos_token": EOT,
                        "model_max_length": model_max_length, "pad_token": EOT, "padding_side": "right",
                        "return_token_type_ids": False, "tokenizer_class": "CodeGenTokenizer",
                        "unk_token": EOT}))


def write_factory_checkpoint(out_dir: str, model, *, torch_dtype: torch.dtype = torch.float16,
                             architectures=("TinyLlavaForConditionalGeneration",), shards: int = 2,
                             tokenizer_model_max_length: int = 3072) -> str:
    """Write LLaVA model `model` (of ours, its SigLIP tower loaded) in the released Factory layout.

    Weights are cast to `torch_dtype` (the teacher's release is float16, MaTVLM's bfloat16); the tower's
    keys get the `vision_model.` level whatever transformers names them.
    """
    os.makedirs(out_dir, exist_ok=True)
    tower = model.get_model().get_vision_tower()
    if tower is None or not tower.is_loaded:
        raise ValueError("write_factory_checkpoint: the model's vision tower must be loaded")
    state = {k: v for k, v in model.state_dict().items() if not k.startswith("model.vision_tower.")}
    state.update({TOWER_PREFIX + k: v for k, v in tower.vision_tower.state_dict().items()})
    state = {k: v.to(torch_dtype) for k, v in factory_state_dict(state).items()}
    write_sharded_safetensors(out_dir, state, shards)
    dtype_name = str(torch_dtype).replace("torch.", "")
    config = model.config
    with open(os.path.join(out_dir, "config.json"), "w", encoding="utf-8") as f:
        f.write(_dumps(factory_config_json(config, tower.config, architectures=architectures,
                                           torch_dtype=dtype_name, pad_token=EOT,
                                           tokenizer_model_max_length=tokenizer_model_max_length)))
    with open(os.path.join(out_dir, "generation_config.json"), "w", encoding="utf-8") as f:
        f.write(_dumps({"_from_model_config": True, "bos_token_id": config.bos_token_id,
                        "eos_token_id": config.eos_token_id, "pad_token_id": config.pad_token_id,
                        "transformers_version": FACTORY_TRANSFORMERS_VERSION}))
    write_phi2_slow_tokenizer(out_dir, tokenizer_model_max_length)
    for target in FACTORY_AUTO_MAP.values():
        with open(os.path.join(out_dir, target.split(".")[0] + ".py"), "w", encoding="utf-8") as f:
            f.write(REMOTE_CODE_STANDIN)
    return out_dir


def round_parameters(model, dtype: torch.dtype):
    """Round every parameter through `dtype` in place (buffers such as rotary caches stay exact); returns
    the model, which then holds in fp32 exactly the values a checkpoint in `dtype` stores."""
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(p.to(dtype).to(p.dtype))
    return model


def matvlm_mamba_config(config, mamba_layers) -> Dict:
    """mamba_config.json of the release: the official PhiMambaConfig's fields, in its order."""
    head_dim = config.hidden_size // config.num_attention_heads
    return {
        "d_model": config.hidden_size,
        "ssm_cfg": {"expand": 1, "ngroups": config.num_attention_heads, "d_state": head_dim},
        "layer_norm_eps": config.layer_norm_eps,
        "vocab_size": None,
        "d_inner": config.hidden_size,
        "d_xb": config.num_key_value_heads * head_dim,
        "intermediate_size": config.intermediate_size,
        "hidden_act": config.hidden_act,
        "n_layer": config.num_hidden_layers,
        "attn_layers": [i for i in range(config.num_hidden_layers) if i not in set(mamba_layers)],
        "resid_pdrop": config.resid_pdrop,
        "bidirectional": False,
        "is_bias": False,
    }


def build_matvlm_release(out_dir: str, teacher_dir: str, plan: str = "25", *, seed: int = 0,
                         shards: int = 2):
    """Write a MaTVLM release (hustvl/MaTVLM_*_Mamba2 layout) of a student of `teacher_dir`; return
    (out_dir, the student in memory, its tower loaded, weights rounded to bfloat16 as the release holds them).

    plan: "12.5" | "25" | "50" (RELEASE_PLANS, 32-layer teachers) or an explicit list of Mamba layers.
    The student's weights are Eq. 6 from the teacher (`build_llava_student`), written in bfloat16 with
    mamba_config.json as json.dump(PhiMambaConfig.__dict__, indent=4) writes it.
    """
    from llava_hybrid.host.hybrid_models import build_llava_student
    from llava_hybrid.host.phi import LlavaPhiForCausalLM

    mamba_layers = RELEASE_PLANS[plan] if isinstance(plan, str) else list(plan)
    teacher = LlavaPhiForCausalLM.from_pretrained(teacher_dir).eval()
    teacher.get_model().get_vision_tower().load_model()
    if teacher.config.num_hidden_layers <= max(mamba_layers):
        raise ValueError(f"plan {plan!r} needs {max(mamba_layers) + 1}+ layers; the teacher has "
                         f"{teacher.config.num_hidden_layers}")
    student = build_llava_student(teacher, mamba_layers, seed=seed)
    round_parameters(student, torch.bfloat16)  # the release holds bfloat16 weights
    write_factory_checkpoint(out_dir, student, torch_dtype=torch.bfloat16, shards=shards,
                             architectures=("HybridTinyLlavaForConditionalGeneration",))
    with open(os.path.join(out_dir, "mamba_config.json"), "w", encoding="utf-8") as f:
        json.dump(matvlm_mamba_config(student.config, mamba_layers), f, indent=4)
    return out_dir, student


def rewrite_factory_weights(ckpt_dir: str, edit, shards: int = 2) -> str:
    """Load a Factory checkpoint's tensors, apply `edit(state)` (in place), write them back as shards + index
    (tests make broken or re-saved variants of a release this way)."""
    from llava_hybrid.checkpoint_files import load_state_dict

    state, files = load_state_dict(ckpt_dir, "rewrite_factory_weights")
    edit(state)
    for file in files + [os.path.join(ckpt_dir, "model.safetensors.index.json")]:
        if os.path.exists(file):
            os.remove(file)
    write_sharded_safetensors(ckpt_dir, state, shards)
    return ckpt_dir
