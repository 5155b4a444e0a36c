"""The official MaTVLM release (hustvl/MaTVLM_*_Mamba2) -> this project's `llava_hybrid_phi` checkpoint.

The release is a TinyLLaVA_Factory checkpoint (config.json model_type "tinyllava"; keys
`language_model.model.*`, `language_model.lm_head.*`, `vision_tower._vision_tower.*`,
`connector._connector.{0,2}.*`) whose Mamba layers hold `language_model.model.layers.{i}.mamba.*`
(in_proj, conv1d, dt_bias, A_log, D, norm, out_proj: mamba_ssm Mamba2 names, which our mixer keeps),
plus `mamba_config.json` whose `attn_layers` lists the layers that kept attention.

Output (loadable by `load_pretrained_model` once `llava_hybrid` is active):
    <dst>/config.json (model_type llava_hybrid_phi, mamba_layers = the complement of attn_layers),
    <dst>/model.safetensors (LM + projector), tokenizer files, <dst>/vision_tower/ (SigLIP + processor).
"""
from __future__ import annotations

import json
import os
import re
from typing import Dict, List, Tuple

import torch

from llava_hybrid.host.checkpoints import (TOWER_PREFIX, check_mapped_state, load_factory_state_dict,
                                           map_factory_key, read_factory_config, translate_factory_config,
                                           write_converted_checkpoint)

MAMBA_CONFIG = "mamba_config.json"
# Mamba layer keys: the one rule the Factory key map lacks (checked before it)
MAMBA_KEY = re.compile(r"^language_model\.model\.layers\.(\d+)\.mamba\.(.+)$")


def map_matvlm_key(key: str) -> Tuple[str | None, int | None]:
    """(our name, Mamba layer index or None) for a MaTVLM release key; our name None when no rule matches."""
    match = MAMBA_KEY.match(key)
    if match:
        return f"model.layers.{match.group(1)}.mamba.{match.group(2)}", int(match.group(1))
    return map_factory_key(key), None


def read_mamba_layers(src: str, num_layers: int) -> Tuple[List[int], Dict]:
    """Mamba layer indices (the complement of `attn_layers`) and the parsed mamba_config.json."""
    path = os.path.join(src, MAMBA_CONFIG)
    if not os.path.isfile(path):
        raise ValueError(f"--src {src!r}: no {MAMBA_CONFIG} (the MaTVLM release lists its attention layers there)")
    with open(path) as f:
        mamba_config = json.load(f)
    attn = mamba_config.get("attn_layers")
    if not isinstance(attn, list) or any(not isinstance(i, int) or not 0 <= i < num_layers for i in attn):
        raise ValueError(f"{path}: attn_layers={attn!r} must be a list of layer indices in 0..{num_layers - 1}")
    return [i for i in range(num_layers) if i not in set(attn)], mamba_config


def matvlm_config(src_config: Dict, mamba_layers: List[int], mamba_config: Dict, carry_bias: bool) -> Dict:
    """Our llava_hybrid_phi config dict: the Factory translation + the hybrid fields."""
    config = translate_factory_config(src_config)
    d_state = (mamba_config.get("ssm_cfg") or {}).get("d_state")
    config.update(model_type="llava_hybrid_phi", architectures=["LlavaHybridPhiForCausalLM"],
                  mamba_layers=mamba_layers, mamba_d_state=d_state, mamba_carry_bias=carry_bias)
    return config


def _expected_shapes(config: Dict, tower_config) -> Dict[str, torch.Size]:
    """Parameter shapes of our LLaVA hybrid Phi for `config` (meta device: no memory), tower included."""
    from llava.model.multimodal_projector.builder import build_vision_projector
    from transformers import SiglipVisionModel

    from llava_hybrid.host.hybrid_models import LlavaHybridPhiConfig, LlavaHybridPhiForCausalLM

    lm_config = LlavaHybridPhiConfig(**{k: v for k, v in config.items()
                                        if k not in ("mm_vision_tower", "model_type")})
    with torch.device("meta"):
        model = LlavaHybridPhiForCausalLM(lm_config)  # no mm_vision_tower: no tower, no projector
        projector = build_vision_projector(lm_config)
        tower = SiglipVisionModel(tower_config)
    shapes = {k: v.shape for k, v in model.state_dict().items()}
    shapes.update({f"model.mm_projector.{k}": v.shape for k, v in projector.state_dict().items()})
    shapes.update({TOWER_PREFIX + k: v.shape for k, v in tower.state_dict().items()})
    return shapes


def _tower_config(src_config: Dict):
    from transformers import SiglipVisionConfig

    fields = {k: v for k, v in (src_config.get("vision_config") or {}).items()
              if k not in ("transformers_version", "model_type")}
    return SiglipVisionConfig(**fields)


def convert_matvlm_checkpoint(src: str, dst: str) -> str:
    """Rewrite the MaTVLM release at `src` as our llava_hybrid_phi checkpoint in `dst`; return dst.

    Every source tensor must map (Mamba rule, then the host's Factory key map) onto a parameter of our
    model with the same shape; a Mamba key of an attention layer, any unmapped key, a missing weight or
    a shape mismatch raises ValueError naming the source file and the keys.
    """
    src_config = read_factory_config(src, "the MaTVLM release, a TinyLLaVA_Factory checkpoint")
    num_layers = int((src_config.get("text_config") or {}).get("num_hidden_layers", 0))
    mamba_layers, mamba_config = read_mamba_layers(src, num_layers)

    # 1. rename every tensor; Mamba keys only on Mamba layers
    state, source_name = load_factory_state_dict(src)
    mapped, wrong_layer = {}, []
    for key in state:
        ours, layer = map_matvlm_key(key)
        if layer is not None and layer not in mamba_layers:
            wrong_layer.append(key)
        mapped[key] = ours
    if wrong_layer:
        raise ValueError(f"{source_name}: Mamba weights on layers that {MAMBA_CONFIG} lists as attention "
                         f"(attn_layers): {sorted(wrong_layer)[:20]}")
    carry_bias = any(o is not None and o.endswith(("mamba.in_proj.bias", "mamba.out_proj.bias"))
                     for o in mapped.values())
    config = matvlm_config(src_config, mamba_layers, mamba_config, carry_bias)
    tower_config = _tower_config(src_config)

    # 2. check names and shapes against our model
    expected = _expected_shapes(config, tower_config)
    check_mapped_state(state, mapped, expected, source_name,
                       f"a MaTVLM Phi + SigLIP checkpoint with Mamba layers {mamba_layers}")

    # 3. write LM + projector, the tower directory, the tokenizer (the host's writer), mamba_config.json
    write_converted_checkpoint(src, dst, config, {mapped[k]: v for k, v in state.items()}, tower_config, src_config,
                               extra_files=(MAMBA_CONFIG,))
    return dst
