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

from typing import List, Optional

import torch
import torch.nn as nn
from transformers import AutoConfig, AutoModelForCausalLM, PhiConfig, PhiForCausalLM, PhiModel
from transformers.modeling_outputs import CausalLMOutputWithPast

from llava.model.llava_arch import LlavaMetaForCausalLM, LlavaMetaModel


class LlavaPhiConfig(PhiConfig):
    """PhiConfig plus LLaVA's `mm_*` fields (kept as plain serialisable attributes)."""

    model_type = "llava_phi"


class TinyLlavaPhiConfig(LlavaPhiConfig):
    """bczhou/TinyLLaVA-3.1B's config type; same fields, same model class."""

    model_type = "tiny_llava_phi"


class LlavaPhiModel(LlavaMetaModel, PhiModel):
    """PhiModel + LLaVA's vision tower and projector (`model.vision_tower`, `model.mm_projector`)."""

    config_class = LlavaPhiConfig

    def __init__(self, config: PhiConfig):
        super().__init__(config)


class LlavaPhiForCausalLM(PhiForCausalLM, LlavaMetaForCausalLM):
    """Phi causal LM that splices projected image features at IMAGE_TOKEN_INDEX (-200) positions."""

    config_class = LlavaPhiConfig

    def __init__(self, config: PhiConfig):
        super(PhiForCausalLM, self).__init__(config)
        self.model = LlavaPhiModel(config)
        self.vocab_size = config.vocab_size
        self.lm_head = nn.Linear(config.hidden_size, config.vocab_size, bias=True)  # Phi: lm_head has a bias
        self.post_init()

    def get_model(self) -> LlavaPhiModel:
        return self.model

    def forward(
        self,
        input_ids: Optional[torch.LongTensor] = None,
        attention_mask: Optional[torch.Tensor] = None,
        position_ids: Optional[torch.LongTensor] = None,
        past_key_values=None,
        inputs_embeds: Optional[torch.FloatTensor] = None,
        labels: Optional[torch.LongTensor] = None,
        use_cache: Optional[bool] = None,
        output_attentions: Optional[bool] = None,
        output_hidden_states: Optional[bool] = None,
        images: Optional[torch.FloatTensor] = None,
        image_sizes: Optional[List[List[int]]] = None,
        return_dict: Optional[bool] = None,
        cache_position: Optional[torch.LongTensor] = None,
        **kwargs,
    ) -> CausalLMOutputWithPast:
        """input_ids (B, L) with -200 image placeholders + images (B, 3, H, W) -> logits (B, L', V).

        L' = L + (image tokens - 1) per image. With `inputs_embeds` given, images are ignored (the
        embeddings already hold them, as in `generate`). `cache_position` is accepted because
        transformers' generate passes it; it is forwarded so the causal mask matches the cache.
        """
        if inputs_embeds is None:
            (input_ids, position_ids, attention_mask, past_key_values, inputs_embeds,
             labels) = self.prepare_inputs_labels_for_multimodal(
                input_ids, position_ids, attention_mask, past_key_values, labels, images, image_sizes)
        if output_attentions is not None:
            kwargs["output_attentions"] = output_attentions
        if output_hidden_states is not None:
            kwargs["output_hidden_states"] = output_hidden_states
        if cache_position is not None:
            kwargs["cache_position"] = cache_position
        return super().forward(
            input_ids=input_ids,
            attention_mask=attention_mask,
            position_ids=position_ids,
            past_key_values=past_key_values,
            inputs_embeds=inputs_embeds,
            labels=labels,
            use_cache=use_cache,
            return_dict=return_dict,
            **kwargs,
        )

    @torch.no_grad()
    def generate(self, inputs: Optional[torch.Tensor] = None, images: Optional[torch.Tensor] = None,
                 image_sizes: Optional[torch.Tensor] = None, **kwargs) -> torch.LongTensor:
        """Generate from a prompt (B, L) with image placeholders; returns ONLY the new tokens (B, T).

        The prompt is turned into embeddings (images spliced in) and generation runs from
        `inputs_embeds`, so the returned ids never contain the prompt (LLaVA's eval scripts decode
        the whole output).
        """
        position_ids = kwargs.pop("position_ids", None)
        attention_mask = kwargs.pop("attention_mask", None)
        if "inputs_embeds" in kwargs:
            raise ValueError("generate(inputs_embeds=...) is not supported: pass token ids and images")
        if inputs is None:
            raise ValueError("generate needs the prompt token ids as `inputs`")
        if images is not None:
            (_, position_ids, attention_mask, _, inputs_embeds, _) = self.prepare_inputs_labels_for_multimodal(
                inputs, position_ids, attention_mask, None, None, images, image_sizes=image_sizes)
        else:
            inputs_embeds = self.get_model().embed_tokens(inputs)  # (B, L, D)
        # transformers (4.37 .. 5.23) starts an embeds-only decoder generate from empty input_ids,
        # so the result holds only the new tokens; tests/test_llava_phi.py checks this.
        return super().generate(position_ids=position_ids, attention_mask=attention_mask,
                                inputs_embeds=inputs_embeds, **kwargs)


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
