"""Everything that touches `llava`: what LLaVA lacks to host the TinyLLaVA teacher (SigLIP tower,
LLaVA-Phi model, phi template and preprocessing, a model_type-dispatching loader), the LLaVA hybrid
student classes, checkpoint saving and the SFT entry."""
from __future__ import annotations

_REGISTERED = False


def register() -> None:
    """Apply the host's registrations (idempotent).

    SigLIP in LLaVA's build_vision_tower; llava_phi / tiny_llava_phi and llava_hybrid_phi /
    llava_hybrid_llama with AutoConfig / AutoModelForCausalLM and in the builder registry; the
    patched load_pretrained_model; the phi conversation template; phi preprocessing and the
    pad == eos-safe collator (when llava.train.train is imported).
    """
    global _REGISTERED
    if _REGISTERED:
        return
    from llava_hybrid.host import builder, conversation, hybrid_models, phi, preprocess, siglip

    siglip.register()
    phi.register()
    builder.register_model_class(phi.LlavaPhiConfig.model_type, phi.LlavaPhiForCausalLM)
    builder.register_model_class(phi.TinyLlavaPhiConfig.model_type, phi.TinyLlavaPhiForCausalLM)
    hybrid_models.register()
    builder.register()
    conversation.register()
    preprocess.register()
    _REGISTERED = True
