"""The multimodal forward / generate / save shared by every LLaVA class of ours.

`LlavaLMMixin` is listed first in the bases of a LLaVA causal LM (teacher `LlavaPhiForCausalLM`, the
hybrid students), so its methods override the language model's and `super()` reaches it:

    forward          image placeholders (IMAGE_TOKEN_INDEX, -200) + images -> spliced embeddings
                     (LLaVA's `prepare_inputs_labels_for_multimodal`) -> the language model's forward
    generate         prompt ids + images -> embeddings -> the language model's own `generate`
                     (transformers' for the teacher, the project's decode loop for a hybrid student)
    save_pretrained  a self-contained checkpoint through the one save path (host.saving.save_llava_checkpoint)
"""
from __future__ import annotations

from typing import List, Optional, Tuple

import torch
from llava.model.llava_arch import LlavaMetaForCausalLM
from transformers.modeling_outputs import CausalLMOutputWithPast

from .saving import save_llava_checkpoint


class LlavaLMMixin(LlavaMetaForCausalLM):
    """LLaVA's image splicing in front of a causal LM whose decoder is `self.model`."""

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
        """input_ids (B, L) with -200 image placeholders + images (B, 3, H, W) -> logits (B, L', V).

        L' = L + (image tokens - 1) per image; labels get IGNORE_INDEX over image tokens. With
        `inputs_embeds` given, images are ignored (the embeddings already hold them). Optional
        arguments that are set (`output_attentions`, `output_hidden_states`, `cache_position`: passed
        by transformers' generate and trainers) and other keywords go on to the language model.
        """
        if inputs_embeds is None:
            (input_ids, position_ids, attention_mask, past_key_values, inputs_embeds,
             labels) = self.prepare_inputs_labels_for_multimodal(
                input_ids, position_ids, attention_mask, past_key_values, labels, images, image_sizes)
        for name, value in (("output_attentions", output_attentions),
                            ("output_hidden_states", output_hidden_states), ("cache_position", cache_position)):
            if value is not None:
                kwargs[name] = value
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

    def embed_prompt(self, inputs: Optional[torch.Tensor], images: Optional[torch.Tensor] = None,
                     image_sizes=None, attention_mask: Optional[torch.Tensor] = None,
                     position_ids: Optional[torch.Tensor] = None) -> Tuple[torch.Tensor, Optional[torch.Tensor],
                                                                          Optional[torch.Tensor]]:
        """Prompt ids (B, L) (+ images) -> (inputs_embeds (B, L', D), attention_mask (B, L'), position_ids)."""
        if inputs is None:
            raise ValueError("generate needs the prompt token ids as `inputs`")
        if images is None:
            return self.get_model().embed_tokens(inputs), attention_mask, position_ids  # (B, L, D)
        (_, position_ids, attention_mask, _, inputs_embeds, _) = self.prepare_inputs_labels_for_multimodal(
            inputs, position_ids, attention_mask, None, None, images, image_sizes=image_sizes)
        return inputs_embeds, attention_mask, position_ids

    @torch.no_grad()
    def generate(self, inputs: Optional[torch.Tensor] = None, images: Optional[torch.Tensor] = None,
                 image_sizes: Optional[torch.Tensor] = None, **kwargs) -> torch.LongTensor:
        """Generate from a prompt (B, L) with image placeholders; returns ONLY the new tokens (B, T).

        The prompt is turned into embeddings (images spliced in) and the language model's `generate`
        (next in the MRO) runs from them, so the returned ids never hold the prompt (LLaVA's eval
        scripts decode the whole output). `input_ids=` is accepted for `inputs`; `inputs_embeds=` is
        refused. Empty prompt ids (B, 0) go with the embeddings: without them transformers 4.37 seeds
        the output with a (B, 1) bos column (newer versions start empty), so on every version the
        result holds only the new tokens (tests/test_llava_phi.py checks this).
        """
        if "inputs_embeds" in kwargs:
            raise ValueError("generate(inputs_embeds=...) is not supported: pass token ids (and images)")
        inputs = kwargs.pop("input_ids", inputs)
        inputs_embeds, attention_mask, position_ids = self.embed_prompt(
            inputs, images, image_sizes, kwargs.pop("attention_mask", None), kwargs.pop("position_ids", None))
        empty_ids = torch.empty(inputs_embeds.shape[0], 0, dtype=torch.long, device=inputs_embeds.device)
        return super().generate(empty_ids, position_ids=position_ids, attention_mask=attention_mask,
                                inputs_embeds=inputs_embeds, **kwargs)

    def save_pretrained(self, save_directory, is_main_process: bool = True, state_dict=None, **kwargs):
        """Weights + config, with the vision tower in `<save_directory>/vision_tower/`, written atomically
        and lane-portable (host.saving.save_llava_checkpoint): the directory loads through
        load_pretrained_model on either transformers lane."""
        save_llava_checkpoint(self, save_directory, state_dict=state_dict, is_main_process=is_main_process,
                              **kwargs)
