"""LLaVA over transformers' Phi: the TinyLLaVA teacher's language model (Phi-2) in LLaVA's layout.

Built like `llava/model/language_model/llava_llama.py`: LLaVA's meta classes (vision tower,
projector, `prepare_inputs_labels_for_multimodal`) mixed into transformers' `PhiModel` /
`PhiForCausalLM`. Weight names are transformers' Phi names plus LLaVA's
`model.vision_tower.vision_tower.*` and `model.mm_projector.*`.

Two config model_types load into this class:
  `llava_phi`       this project's own checkpoints (tiny ones, converted Factory ones),
  `tiny_llava_phi`  bczhou/TinyLLaVA-3.1B (LLaVA layout, mlp2x_gelu, mm_hidden_size 1152,
                    select layer -2, 729 SigLIP tokens, image_aspect_ratio pad).
"""
from __future__ import annotations

import torch.nn as nn
from llava.model.llava_arch import LlavaMetaModel
from transformers import AutoConfig, AutoModelForCausalLM, PhiConfig, PhiForCausalLM, PhiModel

from llava_hybrid.compat import lift_rope_parameters

from .llava_lm import LlavaLMMixin




class LlavaPhiConfig(PhiConfig):
    """PhiConfig plus LLaVA's `mm_*` fields (kept as plain serialisable attributes)."""

    model_type = "llava_phi"

    def __init__(self, **kwargs):
        # a checkpoint saved on either lane builds the same model on both (compat.lift_rope_parameters)
        super().__init__(**lift_rope_parameters(kwargs))


class TinyLlavaPhiConfig(LlavaPhiConfig):
    """bczhou/TinyLLaVA-3.1B's config type; same fields, same model class."""

    model_type = "tiny_llava_phi"


class LlavaPhiModel(LlavaMetaModel, PhiModel):
    """PhiModel + LLaVA's vision tower and projector (`model.vision_tower`, `model.mm_projector`)."""

    config_class = LlavaPhiConfig

    def __init__(self, config: PhiConfig):
        super().__init__(config)


class LlavaPhiForCausalLM(LlavaLMMixin, PhiForCausalLM):
    """Phi causal LM that splices projected image features at IMAGE_TOKEN_INDEX (-200) positions.

    forward / generate / save_pretrained: LlavaLMMixin; generate ends in transformers' decode loop."""

    config_class = LlavaPhiConfig

    def __init__(self, config: PhiConfig):
        super(PhiForCausalLM, self).__init__(config)
        self.model = LlavaPhiModel(config)
        self.vocab_size = config.vocab_size
        self.lm_head = nn.Linear(config.hidden_size, config.vocab_size, bias=True)  # Phi: lm_head has a bias
        self.post_init()


class TinyLlavaPhiForCausalLM(LlavaPhiForCausalLM):
    """The same model for `tiny_llava_phi` configs (a separate class only because transformers'
    AutoModel registry keys a model class by its config class)."""

    config_class = TinyLlavaPhiConfig


def register() -> None:
    """Register both config types with AutoConfig / AutoModelForCausalLM (idempotent)."""
    for config_cls, model_cls in ((LlavaPhiConfig, LlavaPhiForCausalLM),
                                  (TinyLlavaPhiConfig, TinyLlavaPhiForCausalLM)):
        AutoConfig.register(config_cls.model_type, config_cls, exist_ok=True)
        AutoModelForCausalLM.register(config_cls, model_cls, exist_ok=True)
