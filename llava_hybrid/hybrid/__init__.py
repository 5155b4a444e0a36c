"""Hybrid decoders: Phi / Llama whose chosen layers have Mamba-2 instead of attention (MaTVLM).

plan_mamba_layers    the --mm_hybrid_* flags -> sorted layer indices
HybridPhiConfig, HybridLlamaConfig, HybridPhiForCausalLM, HybridLlamaForCausalLM
HybridCache          pre-allocated KV (attention layers) + Mamba2State (Mamba layers)
generate_tokens      the one decode loop (greedy / sample / beam), also `model.generate(...)`
"""

from __future__ import annotations

from .cache import HybridCache
from .configuration import HybridLlamaConfig, HybridPhiConfig
from .generation import GenerationOutput, generate_tokens
from .modeling_llama import HybridLlamaForCausalLM, HybridLlamaModel
from .modeling_phi import HybridPhiForCausalLM, HybridPhiModel
from .plan import layer_pattern, plan_mamba_layers

__all__ = [
    "GenerationOutput",
    "HybridCache",
    "HybridLlamaConfig",
    "HybridLlamaForCausalLM",
    "HybridLlamaModel",
    "HybridPhiConfig",
    "HybridPhiForCausalLM",
    "HybridPhiModel",
    "generate_tokens",
    "layer_pattern",
    "plan_mamba_layers",
    "register",
]

_REGISTERED = False


def register() -> None:
    """Register hybrid_phi / hybrid_llama with AutoConfig and AutoModelForCausalLM (idempotent)."""
    global _REGISTERED
    if _REGISTERED:
        return
    from transformers import AutoConfig, AutoModelForCausalLM

    pairs = ((HybridPhiConfig, HybridPhiForCausalLM), (HybridLlamaConfig, HybridLlamaForCausalLM))
    for config_cls, model_cls in pairs:
        AutoConfig.register(config_cls.model_type, config_cls, exist_ok=True)
        AutoModelForCausalLM.register(config_cls, model_cls, exist_ok=True)
    _REGISTERED = True
