"""TinyLLaVA_Factory teacher (tinyllava/TinyLLaVA-Phi-2-SigLIP-3.1B, the MaTVLM teacher) -> `llava_phi`.

The Factory ships a remote-code model; this rewrites it, without running that code, as our
`llava_phi` checkpoint (LLaVA layout):
    <dst>/config.json, model.safetensors (LM + projector), tokenizer files,
    <dst>/vision_tower/ (SiglipVisionModel + preprocessor_config.json; config mm_vision_tower points here).
The LM head is the checkpoint's own (`language_model.lm_head.*`).
"""
from __future__ import annotations

from llava_hybrid.checkpoint_files import load_state_dict

from .common import (assign_weights, build_on_meta, check_destination, check_mapped_state, expected_shapes,
                     factory_tower_config, map_factory_key, read_factory_config, source_name,
                     translate_factory_config, write_converted)


def convert_factory_checkpoint(src: str, dst: str) -> str:
    """Rewrite a TinyLLaVA_Factory checkpoint `src` as our llava_phi checkpoint in `dst`; return dst.

    Every source tensor must map through the Factory key map onto a parameter of our model with the
    same shape; a missing or truncated shard, unexpected or missing keys, or shape mismatches raise a
    CheckpointError naming the file before anything is written. `dst` must be new (or empty) and not
    `src`; it appears only when complete.
    """
    from llava_hybrid.host.phi import LlavaPhiConfig, LlavaPhiForCausalLM

    check_destination(src, dst)
    src_config = read_factory_config(src, "a TinyLLaVA_Factory checkpoint")
    config = translate_factory_config(src_config)
    tower_config = factory_tower_config(src_config)

    # 1. read every shard, rename and check every tensor against our model (meta device)
    state, files = load_state_dict(src, "--src")
    mapped = {k: map_factory_key(k) for k in state}
    model, tower = build_on_meta(LlavaPhiForCausalLM, LlavaPhiConfig, config, tower_config)
    check_mapped_state(state, mapped, expected_shapes(model, tower), source_name(src, files),
                       "a TinyLLaVA_Factory Phi + SigLIP checkpoint")

    # 2. the tensors into the model, saved through the one save path
    assign_weights(model, tower, {mapped[k]: v for k, v in state.items()})
    return write_converted(src, dst, src_config, model, tower, tower_config)

