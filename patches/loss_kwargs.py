"""(g) Trainer.compute_loss passes num_items_in_batch to models it thinks accept loss kwargs."""
from __future__ import annotations

import importlib

from llava_hybrid import _patching
from llava_hybrid.compat import transformers_version

NAME = "loss_kwargs"
REASON = ("Trainer passes num_items_in_batch to a forward with **kwargs and then skips the grad-accumulation "
          "division; LLaVA models return a per-batch mean loss, so they must say they accept no loss kwargs")
UPSTREAM = "llava.model.llava_arch.LlavaMetaForCausalLM (read by Trainer.compute_loss / training_step)"
VERSIONS = "transformers >= 4.46"
TARGET = "llava.model.llava_arch"


def needed() -> bool:
    """True from transformers 4.46 (num_items_in_batch)."""
    return transformers_version() >= (4, 46, 0)


def apply() -> bool:
    """Set accepts_loss_kwargs = False on LLaVA's causal-LM mixin (every LLaVA model inherits it)."""
    arch = importlib.import_module("llava.model.llava_arch")
    mixin = arch.LlavaMetaForCausalLM
    if mixin.__dict__.get("accepts_loss_kwargs") is False:
        return False
    _patching.replace_attr(mixin, "accepts_loss_kwargs", False)
    return True
