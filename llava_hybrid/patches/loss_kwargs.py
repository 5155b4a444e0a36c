"""Trainer.compute_loss passes num_items_in_batch to models it thinks accept loss kwargs."""
from __future__ import annotations

from llava_hybrid._patching import Patch, Site

PATCH = Patch(
    name="loss_kwargs",
    reason=("Trainer passes num_items_in_batch to a forward with **kwargs and then skips the grad-accumulation "
            "division; LLaVA models return a per-batch mean loss, so they must say they accept no loss kwargs"),
    upstream="llava.model.llava_arch.LlavaMetaForCausalLM (read by Trainer.compute_loss / training_step)",
    target="llava.model.llava_arch",
    versions={"transformers": ">=4.46"},
    # accepts_loss_kwargs = False on LLaVA's causal-LM mixin: every LLaVA model inherits it
    sites=(Site("llava.model.llava_arch", "LlavaMetaForCausalLM", "accepts_loss_kwargs", lambda original, cls: False),),
)
