"""LLaVA models over the hybrid decoders: the MaTVLM student in LLaVA's layout.

Built like `llava/model/language_model/llava_llama.py`: LLaVA's meta classes (vision tower, projector,
`prepare_inputs_labels_for_multimodal`) mixed into the project's hybrid decoders. Weight names are the
hybrid decoder's (transformers' names, `model.layers.{i}.mamba.*` for Mamba layers) plus LLaVA's
`model.mm_projector.*`. forward / generate / save_pretrained are the host's LlavaLMMixin (the tower is saved
beside the weights as `vision_tower/`, so a saved student is self-contained and loads through
`load_pretrained_model`); only the decode loop differs: the project's own (hybrid/generation.py).

    model_type "llava_hybrid_phi"    LlavaHybridPhiConfig   / LlavaHybridPhiForCausalLM
    model_type "llava_hybrid_llama"  LlavaHybridLlamaConfig / LlavaHybridLlamaForCausalLM
"""
from __future__ import annotations

from typing import Optional

import torch
from llava.model.llava_arch import LlavaMetaModel

from llava_hybrid.host.llava_lm import LlavaLMMixin

from .configuration import HybridLlamaConfig, HybridPhiConfig
from .modeling_base import HybridCausalLMBase
from .modeling_llama import HybridLlamaForCausalLM, HybridLlamaModel
from .modeling_phi import HybridPhiForCausalLM, HybridPhiModel


class LlavaHybridPhiConfig(HybridPhiConfig):
    """HybridPhiConfig plus LLaVA's `mm_*` fields (plain serialisable attributes)."""

    model_type = "llava_hybrid_phi"


class LlavaHybridLlamaConfig(HybridLlamaConfig):
    """HybridLlamaConfig plus LLaVA's `mm_*` fields."""

    model_type = "llava_hybrid_llama"


class LlavaHybridPhiModel(LlavaMetaModel, HybridPhiModel):
    """Hybrid Phi decoder + `vision_tower` and `mm_projector`."""

    config_class = LlavaHybridPhiConfig


class LlavaHybridLlamaModel(LlavaMetaModel, HybridLlamaModel):
    """Hybrid Llama decoder + `vision_tower` and `mm_projector`."""

    config_class = LlavaHybridLlamaConfig


class LlavaHybridMixin(LlavaLMMixin):
    """LlavaLMMixin (forward / generate / save_pretrained) ending generate in the project's decode loop.
    Listed first in the bases of both LLaVA hybrid classes, so `super()` reaches the hybrid causal LM."""

    def generate_from_embeds(self, inputs_embeds: torch.Tensor, attention_mask: Optional[torch.Tensor] = None,
                             position_ids: Optional[torch.Tensor] = None, **kwargs) -> torch.LongTensor:
        """Prompt embeddings (B, L, D) -> new tokens (B, T) by HybridCausalLMBase.generate.

        The rows are left-aligned first (LLaVA pads on the right by default; the decode loop wants left
        padding) and `position_ids` are dropped (the decode loop derives positions from the mask).
        gen kwargs: see HybridCausalLMBase.generate.
        """
        if attention_mask is not None:
            inputs_embeds, attention_mask = left_align(inputs_embeds, attention_mask)
        return HybridCausalLMBase.generate(self, inputs_embeds=inputs_embeds, attention_mask=attention_mask,
                                           **kwargs)


def left_align(embeds: torch.Tensor, mask: torch.Tensor):
    """Move each row's padding to the left, keeping token order: embeds (B, L, D), mask (B, L) 1 = token."""
    order = torch.argsort(mask.long(), dim=1, stable=True)  # padding (0) first, then tokens in order
    embeds = torch.gather(embeds, 1, order[..., None].expand_as(embeds))  # (B, L, D)
    return embeds, torch.gather(mask, 1, order)


class LlavaHybridPhiForCausalLM(LlavaHybridMixin, HybridPhiForCausalLM):
    """The MaTVLM student in LLaVA layout: hybrid Phi + SigLIP tower + projector."""

    config_class = LlavaHybridPhiConfig
    decoder_class = LlavaHybridPhiModel


class LlavaHybridLlamaForCausalLM(LlavaHybridMixin, HybridLlamaForCausalLM):
    """LLaVA-1.5-style hybrid: hybrid Llama + vision tower + projector."""

    config_class = LlavaHybridLlamaConfig
    decoder_class = LlavaHybridLlamaModel


def register() -> None:
    """AutoConfig / AutoModelForCausalLM and the LLaVA builder registry for both model types (idempotent)."""
    from transformers import AutoConfig, AutoModelForCausalLM

    from llava_hybrid.host.builder import register_model_class

    for config_cls, model_cls in ((LlavaHybridPhiConfig, LlavaHybridPhiForCausalLM),
                                  (LlavaHybridLlamaConfig, LlavaHybridLlamaForCausalLM)):
        AutoConfig.register(config_cls.model_type, config_cls, exist_ok=True)
        AutoModelForCausalLM.register(config_cls, model_cls, exist_ok=True)
        register_model_class(config_cls.model_type, model_cls)
