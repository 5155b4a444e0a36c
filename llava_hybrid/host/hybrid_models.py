"""LLaVA models over the hybrid decoders: the MaTVLM student in LLaVA's layout, and its builder.

Built like `llava/model/language_model/llava_llama.py`: LLaVA's meta classes (vision tower, projector,
`prepare_inputs_labels_for_multimodal`) mixed into the project's hybrid decoders. Weight names are the
hybrid decoder's (transformers' names, `model.layers.{i}.mamba.*` for Mamba layers) plus LLaVA's
`model.mm_projector.*`. forward / generate / save_pretrained are the host's LlavaLMMixin, first in the
bases, so `super()` from it reaches the hybrid causal LM: the image splice runs here, the loss and the
decode loop (hybrid/generation.py) there. The tower is saved beside the weights as `vision_tower/`, so
a saved student is self-contained and loads through `load_pretrained_model`.

    model_type "llava_hybrid_phi"    LlavaHybridPhiConfig   / LlavaHybridPhiForCausalLM
    model_type "llava_hybrid_llama"  LlavaHybridLlamaConfig / LlavaHybridLlamaForCausalLM
"""
from __future__ import annotations

from typing import Sequence

from llava.model.llava_arch import LlavaMetaModel
from torch import nn

from llava_hybrid.hybrid.configuration import HybridLlamaConfig, HybridPhiConfig, model_family
from llava_hybrid.hybrid.init import build_student
from llava_hybrid.hybrid.modeling_llama import HybridLlamaForCausalLM, HybridLlamaModel
from llava_hybrid.hybrid.modeling_phi import HybridPhiForCausalLM, HybridPhiModel

from .llava_lm import LlavaLMMixin


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


class LlavaHybridPhiForCausalLM(LlavaLMMixin, HybridPhiForCausalLM):
    """The MaTVLM student in LLaVA layout: hybrid Phi + SigLIP tower + projector."""

    config_class = LlavaHybridPhiConfig
    decoder_class = LlavaHybridPhiModel


class LlavaHybridLlamaForCausalLM(LlavaLMMixin, HybridLlamaForCausalLM):
    """LLaVA-1.5-style hybrid: hybrid Llama + vision tower + projector."""

    config_class = LlavaHybridLlamaConfig
    decoder_class = LlavaHybridLlamaModel


# teacher family (hybrid.configuration.model_family) -> the LLaVA student class
STUDENT_CLASSES = {"phi": LlavaHybridPhiForCausalLM, "llama": LlavaHybridLlamaForCausalLM}


def build_llava_student(teacher: nn.Module, mamba_layers: Sequence[int], **kwargs) -> nn.Module:
    """`hybrid.init.build_student` for a LLaVA teacher (LlavaPhiForCausalLM, LLaVA's LlavaLlamaForCausalLM).

    The student is the LLaVA hybrid class of the teacher's family; every config field (LLaVA's mm_*
    included) and the projector carry over, and the teacher's tower is taken over as it is (a fresh
    LLaVA model would only delay-load it). kwargs: those of build_student (init_from_attention,
    carry_bias, seed).
    """
    cls = STUDENT_CLASSES[model_family(teacher.config)]
    tower = teacher.get_model().get_vision_tower()
    adopt = {"model.vision_tower": tower} if tower is not None else None
    return build_student(teacher, mamba_layers, student_class=cls, adopt=adopt, **kwargs)


def register() -> None:
    """AutoConfig / AutoModelForCausalLM and the LLaVA builder registry for both model types (idempotent)."""
    from transformers import AutoConfig, AutoModelForCausalLM

    from .builder import register_model_class

    for config_cls, model_cls in ((LlavaHybridPhiConfig, LlavaHybridPhiForCausalLM),
                                  (LlavaHybridLlamaConfig, LlavaHybridLlamaForCausalLM)):
        AutoConfig.register(config_cls.model_type, config_cls, exist_ok=True)
        AutoModelForCausalLM.register(config_cls, model_cls, exist_ok=True)
        register_model_class(config_cls.model_type, model_cls)
