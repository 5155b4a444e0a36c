"""LLaVA models over the hybrid decoders: the MaTVLM student in LLaVA's layout.

Built like `llava/model/language_model/llava_llama.py`: LLaVA's meta classes (vision tower, projector,
`prepare_inputs_labels_for_multimodal`) mixed into the project's hybrid decoders. Weight names are the
hybrid decoder's (transformers' names, `model.layers.{i}.mamba.*` for Mamba layers) plus LLaVA's
`model.mm_projector.*`; the vision tower is saved beside the weights as `vision_tower/` (config
`mm_vision_tower: "vision_tower"`, resolved against the checkpoint directory), so a saved student is
self-contained and loads through `load_pretrained_model`.

    model_type "llava_hybrid_phi"    LlavaHybridPhiConfig   / LlavaHybridPhiForCausalLM
    model_type "llava_hybrid_llama"  LlavaHybridLlamaConfig / LlavaHybridLlamaForCausalLM
"""
from __future__ import annotations

import os
import shutil
from typing import List, Optional

import torch
from llava.model.llava_arch import LlavaMetaForCausalLM, LlavaMetaModel
from transformers.modeling_outputs import CausalLMOutputWithPast

from .configuration import HybridLlamaConfig, HybridPhiConfig
from .modeling_llama import HybridLlamaForCausalLM, HybridLlamaModel
from .modeling_phi import HybridPhiForCausalLM, HybridPhiModel

TOWER_SUBDIR = "vision_tower"  # where save_pretrained puts the vision tower, relative to the checkpoint


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


class LlavaHybridMixin(LlavaMetaForCausalLM):
    """forward / generate / save_pretrained shared by both LLaVA hybrid classes. Listed first in their
    bases, so these override the hybrid causal LM's and `super()` reaches it."""

    def get_model(self):
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
        """input_ids (B, L) with IMAGE_TOKEN_INDEX (-200) placeholders + images (B, 3, H, W) -> logits (B, L', V).

        L' = L + (image tokens - 1) per image; labels get IGNORE_INDEX over image tokens. Without images
        (or with inputs_embeds) this is the hybrid decoder's forward. `cache_position` is accepted
        because transformers' trainers / generate pass it.
        """
        if inputs_embeds is None:
            (input_ids, position_ids, attention_mask, past_key_values, inputs_embeds,
             labels) = self.prepare_inputs_labels_for_multimodal(
                input_ids, position_ids, attention_mask, past_key_values, labels, images, image_sizes)
        return super().forward(
            input_ids=input_ids,
            attention_mask=attention_mask,
            position_ids=position_ids,
            past_key_values=past_key_values,
            inputs_embeds=inputs_embeds,
            labels=labels,
            use_cache=use_cache,
            output_hidden_states=output_hidden_states,
            return_dict=return_dict,
            cache_position=cache_position,
        )

    @torch.no_grad()
    def generate(self, inputs: Optional[torch.Tensor] = None, images: Optional[torch.Tensor] = None,
                 image_sizes: Optional[torch.Tensor] = None, **kwargs) -> torch.LongTensor:
        """Prompt ids (B, L) with image placeholders -> ONLY the new tokens (B, T).

        Images are spliced in as LLaVA does (`prepare_inputs_labels_for_multimodal`), the rows are
        left-aligned (LLaVA pads on the right by default; the decode loop wants left padding), then the
        project's decode loop runs from the embeddings. gen kwargs: see HybridCausalLMBase.generate.
        """
        kwargs.pop("position_ids", None)  # the decode loop derives positions from the mask
        attention_mask = kwargs.pop("attention_mask", None)
        if "inputs_embeds" in kwargs:
            raise ValueError("generate(inputs_embeds=...) is not supported: pass token ids (and images)")
        inputs = kwargs.pop("input_ids", inputs)
        if inputs is None:
            raise ValueError("generate needs the prompt token ids as `inputs`")
        if images is not None:
            (_, _, attention_mask, _, inputs_embeds, _) = self.prepare_inputs_labels_for_multimodal(
                inputs, None, attention_mask, None, None, images, image_sizes=image_sizes)
        else:
            inputs_embeds = self.get_model().embed_tokens(inputs)  # (B, L, D)
        if attention_mask is not None:
            inputs_embeds, attention_mask = left_align(inputs_embeds, attention_mask)
        return super().generate(inputs_embeds=inputs_embeds, attention_mask=attention_mask, **kwargs)

    def save_pretrained(self, save_directory, *args, state_dict=None, **kwargs):
        """Save weights and config, with the vision tower (weights + image processor) in `vision_tower/`.

        The tower's weights are not repeated in the LM's safetensors: LLaVA delay-loads the tower from
        `mm_vision_tower`, which the saved config points at `vision_tower/` beside the weights.
        """
        tower = self.get_model().get_vision_tower()
        if tower is None:
            return super().save_pretrained(save_directory, *args, state_dict=state_dict, **kwargs)
        os.makedirs(save_directory, exist_ok=True)
        _save_tower(tower, self.config, os.path.join(save_directory, TOWER_SUBDIR))
        state_dict = self.state_dict() if state_dict is None else state_dict
        state_dict = {k: v for k, v in state_dict.items() if not k.startswith("model.vision_tower.")}
        original = self.config.mm_vision_tower
        self.config.mm_vision_tower = TOWER_SUBDIR
        try:
            return super().save_pretrained(save_directory, *args, state_dict=state_dict, **kwargs)
        finally:
            self.config.mm_vision_tower = original


def left_align(embeds: torch.Tensor, mask: torch.Tensor):
    """Move each row's padding to the left, keeping token order: embeds (B, L, D), mask (B, L) 1 = token."""
    order = torch.argsort(mask.long(), dim=1, stable=True)  # padding (0) first, then tokens in order
    embeds = torch.gather(embeds, 1, order[..., None].expand_as(embeds))  # (B, L, D)
    return embeds, torch.gather(mask, 1, order)


def _save_tower(tower, config, tower_dir: str) -> None:
    """A loaded tower: its model + image processor; a delay-loaded one: a copy of its local directory."""
    if getattr(tower, "is_loaded", False):
        tower.vision_tower.save_pretrained(tower_dir)
        processor = getattr(tower, "image_processor", None)
        if processor is not None:
            processor.save_pretrained(tower_dir)
        return
    from llava_hybrid.host.siglip import resolve_tower_path

    source = resolve_tower_path(str(config.mm_vision_tower), config)
    if not os.path.isdir(source):
        raise ValueError(f"cannot save the vision tower: config mm_vision_tower={config.mm_vision_tower!r} is "
                         "not loaded and not a local directory")
    if os.path.abspath(source) != os.path.abspath(tower_dir):
        shutil.copytree(source, tower_dir, dirs_exist_ok=True)


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
