"""generate() passes `cache_position` to forward(); LLaVA's forward has a closed signature."""
from __future__ import annotations

from typing import List, Optional

from llava_hybrid._patching import Patch, Site


def _forward(original, cls):
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

    return forward


PATCH = Patch(
    name="cache_position",
    reason="generate() passes cache_position to forward(); LLaVA's forward must accept it by name",
    upstream="llava.model.language_model.llava_llama.LlavaLlamaForCausalLM.forward (and LlavaMistralForCausalLM.forward)",
    target="llava.model.language_model.llava_llama",
    versions={"transformers": ">=4.38"},
    note="5.23 still accepts it by name; it builds it only for remote code",
    sites=(Site("llava.model.language_model.llava_llama", "LlavaLlamaForCausalLM", "forward", _forward),
           # llava_mistral needs a transformers with Mistral: skipped where it does not import
           Site("llava.model.language_model.llava_mistral", "LlavaMistralForCausalLM", "forward", _forward,
                optional=True)),
)
