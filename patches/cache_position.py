"""(b) generate() passes `cache_position` to forward(); LLaVA's forward has a closed signature."""
from __future__ import annotations

import importlib
from typing import List, Optional

from llava_hybrid import _patching
from llava_hybrid.compat import transformers_version

NAME = "cache_position"
REASON = "generate() passes cache_position to forward(); LLaVA's forward must accept it by name"
UPSTREAM = "llava.model.language_model.llava_llama.LlavaLlamaForCausalLM.forward (and LlavaMistralForCausalLM.forward)"
VERSIONS = "transformers >= 4.38 (5.23 still accepts it by name; it builds it only for remote code)"
TARGET = "llava.model.language_model.llava_llama"

# (module, class) pairs whose forward is LLaVA's closed-signature wrapper.
_SITES = (
    ("llava.model.language_model.llava_llama", "LlavaLlamaForCausalLM"),
    ("llava.model.language_model.llava_mistral", "LlavaMistralForCausalLM"),
)


def needed() -> bool:
    """True from transformers 4.38, where generate started passing cache_position."""
    return transformers_version() >= (4, 38, 0)


def _make_forward(cls, original):
    # A named signature (not **kwargs): generate() validates its kwargs and builds the attention
    # mask from the forward's parameter names, and Trainer reads **kwargs as "accepts loss kwargs".
    def forward(self, input_ids=None, attention_mask=None, position_ids=None, past_key_values=None,
                inputs_embeds=None, labels=None, use_cache=None, output_attentions=None,
                output_hidden_states=None, images=None, image_sizes: Optional[List[List[int]]] = None,
                return_dict=None, cache_position=None):
        """LLaVA's forward, also accepting `cache_position` (positions of these tokens in the cache)."""
        if inputs_embeds is None:
            (input_ids, position_ids, attention_mask, past_key_values, inputs_embeds,
             labels) = self.prepare_inputs_labels_for_multimodal(
                input_ids, position_ids, attention_mask, past_key_values, labels, images, image_sizes)
        extra = {} if cache_position is None else {"cache_position": cache_position}
        # The language model's own forward (LlamaForCausalLM / MistralForCausalLM).
        return super(cls, self).forward(
            input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids,
            past_key_values=past_key_values, inputs_embeds=inputs_embeds, labels=labels,
            use_cache=use_cache, output_attentions=output_attentions,
            output_hidden_states=output_hidden_states, return_dict=return_dict, **extra)

    forward.__wrapped_llava__ = original
    return forward


def apply() -> bool:
    """Replace each LLaVA forward by one that also accepts cache_position; True if any changed."""
    changed = False
    for mod_name, cls_name in _SITES:
        try:
            cls = getattr(importlib.import_module(mod_name), cls_name)
        except ImportError:  # llava_mistral needs a transformers with Mistral; skip where absent
            continue
        original = cls.__dict__.get("forward")
        if original is None or getattr(original, "__wrapped_llava__", None) is not None:
            continue
        _patching.replace_attr(cls, "forward", _make_forward(cls, original))
        changed = True
    return changed
