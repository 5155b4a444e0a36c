"""The official MaTVLM release (hustvl/MaTVLM_*_Mamba2) -> this project's `llava_hybrid_phi` checkpoint.

The release is a TinyLLaVA_Factory checkpoint (config.json model_type "tinyllava"; keys
`language_model.model.*`, `language_model.lm_head.*`, `vision_tower._vision_tower.vision_model.*`,
`connector._connector.{0,2}.*`) whose Mamba layers hold `language_model.model.layers.{i}.mamba.*`
(in_proj, conv1d, dt_bias, A_log, D, norm, out_proj: mamba_ssm Mamba2 names, which our mixer keeps),
plus `mamba_config.json` (the official `PhiMambaConfig.__dict__`) whose `attn_layers` lists the layers
that kept attention.

Output (loadable by `load_pretrained_model` once `llava_hybrid` is active):
    <dst>/config.json (model_type llava_hybrid_phi, mamba_layers = the complement of attn_layers),
    <dst>/model.safetensors (LM + projector), tokenizer files, <dst>/vision_tower/ (SigLIP + processor),
    <dst>/mamba_config.json (the release's, copied).

The LM head is the checkpoint's own `language_model.lm_head.*`, the head the student was distilled
with. The official inference wrapper (mamba2_inference/hybrid_wrapper_tinyllava.py) instead builds
microsoft/phi-2 and loads only the `language_model.model.*` keys (strict=False), so it answers with
phi-2's base lm_head; answers can therefore differ from the official eval scripts'.
"""
from __future__ import annotations

import json
import os
import re
from typing import Dict, List, Tuple

from llava_hybrid.checkpoint_files import CheckpointError, load_state_dict

from .common import (assign_weights, build_on_meta, check_destination, check_mapped_state, expected_shapes,
                     factory_tower_config, map_factory_key, read_factory_config, source_name,
                     translate_factory_config, write_converted)

MAMBA_CONFIG = "mamba_config.json"
# Mamba layer keys: the Factory key map renames them; this tells which layer each belongs to
MAMBA_KEY = re.compile(r"^language_model\.model\.layers\.(\d+)\.mamba\.")


def read_mamba_layers(src: str, num_layers: int) -> Tuple[List[int], Dict]:
    """Mamba layer indices (the complement of `attn_layers`) and the parsed mamba_config.json."""
    path = os.path.join(src, MAMBA_CONFIG)
    if not os.path.isfile(path):
        raise CheckpointError(f"--src {src!r}: no {MAMBA_CONFIG} (the MaTVLM release lists its attention "
                              "layers there)")
    try:
        with open(path, encoding="utf-8") as f:
            mamba_config = json.load(f)
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise CheckpointError(f"--src {path}: unreadable ({err})") from err
    attn = mamba_config.get("attn_layers") if isinstance(mamba_config, dict) else None
    if not isinstance(attn, list) or any(not isinstance(i, int) or not 0 <= i < num_layers for i in attn):
        raise CheckpointError(f"{path}: attn_layers={attn!r} must be a list of layer indices in "
                              f"0..{num_layers - 1}")
    n_layer = mamba_config.get("n_layer", num_layers)
    if n_layer != num_layers:
        raise CheckpointError(f"{path}: n_layer={n_layer} but config.json's text_config has {num_layers} layers")
    return [i for i in range(num_layers) if i not in set(attn)], mamba_config


def matvlm_config(src_config: Dict, mamba_layers: List[int], mamba_config: Dict, carry_bias: bool) -> Dict:
    """Our llava_hybrid_phi config dict: the Factory translation + the hybrid fields."""
    config = translate_factory_config(src_config)
    d_state = (mamba_config.get("ssm_cfg") or {}).get("d_state")
    config.update(architectures=["LlavaHybridPhiForCausalLM"], mamba_layers=mamba_layers,
                  mamba_d_state=d_state, mamba_carry_bias=carry_bias)
    return config


def convert_matvlm_checkpoint(src: str, dst: str) -> str:
    """Rewrite the MaTVLM release at `src` as our llava_hybrid_phi checkpoint in `dst`; return dst.

    Every source tensor must map (the Factory key map) onto a parameter of our model with the same
    shape; a missing or truncated shard, a Mamba key of an attention layer, any unmapped key, a missing
    weight or a shape mismatch raises a CheckpointError naming the source file and the keys, before
    anything is written. `dst` must be new (or empty) and not `src`; it appears only when complete.
    """
    from llava_hybrid.host.hybrid_models import LlavaHybridPhiConfig, LlavaHybridPhiForCausalLM

    check_destination(src, dst)
    src_config = read_factory_config(src, "the MaTVLM release, a TinyLLaVA_Factory checkpoint")
    num_layers = int((src_config.get("text_config") or {}).get("num_hidden_layers", 0))
    mamba_layers, mamba_config = read_mamba_layers(src, num_layers)

    # 1. read every shard; rename every tensor; Mamba keys only on Mamba layers
    state, files = load_state_dict(src, "--src")
    name = source_name(src, files)
    wrong_layer = sorted(k for k in state if (m := MAMBA_KEY.match(k)) and int(m.group(1)) not in mamba_layers)
    if wrong_layer:
        raise CheckpointError(f"{name}: Mamba weights on layers that {MAMBA_CONFIG} lists as attention "
                              f"(attn_layers): {wrong_layer[:20]}")
    mapped = {k: map_factory_key(k) for k in state}
    carry_bias = any(o is not None and o.endswith(("mamba.in_proj.bias", "mamba.out_proj.bias"))
                     for o in mapped.values())
    config = matvlm_config(src_config, mamba_layers, mamba_config, carry_bias)
    tower_config = factory_tower_config(src_config)

    # 2. check names and shapes against our model (meta device)
    model, tower = build_on_meta(LlavaHybridPhiForCausalLM, LlavaHybridPhiConfig, config, tower_config)
    check_mapped_state(state, mapped, expected_shapes(model, tower), name,
                       f"a MaTVLM Phi + SigLIP checkpoint with Mamba layers {mamba_layers}")

    # 3. the tensors into the model, saved through the one save path with the release's mamba_config.json
    assign_weights(model, tower, {mapped[k]: v for k, v in state.items()})
    return write_converted(src, dst, src_config, model, tower, tower_config, extra_files=(MAMBA_CONFIG,))
