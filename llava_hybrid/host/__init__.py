"""What LLaVA lacks to host the TinyLLaVA teacher: SigLIP tower, LLaVA-Phi model, phi template and
preprocessing, a model_type-dispatching loader, checkpoint aliases and the Factory conversion."""
from __future__ import annotations

import importlib.util

_REGISTERED = False


def register() -> None:
    """Apply the host room's registrations and patches (idempotent).

    SigLIP in LLaVA's build_vision_tower, llava_phi / tiny_llava_phi with AutoConfig /
    AutoModelForCausalLM and in the builder registry, the patched load_pretrained_model, and (when
    present) the phi conversation template and phi preprocessing.
    """
    global _REGISTERED
    if _REGISTERED:
        return
    from llava_hybrid.host import builder, phi, siglip

    siglip.register()
    phi.register()
    builder.register_model_class(phi.LlavaPhiConfig.model_type, phi.LlavaPhiForCausalLM)
    builder.register_model_class(phi.TinyLlavaPhiConfig.model_type, phi.TinyLlavaPhiForCausalLM)
    builder.register()
    for name in ("conversation", "preprocess"):  # a colleague's modules; registered when they exist
        if importlib.util.find_spec(f"llava_hybrid.host.{name}") is not None:
            importlib.import_module(f"llava_hybrid.host.{name}").register()
    _REGISTERED = True
