"""What the Phi and Llama hybrid decoders share: the layer's token mixer (attention or Mamba-2), the
decoder loop, the causal-LM head with loss, and `generate`.

Our own modules, not subclasses of transformers' Phi/Llama models (their cache APIs change between
versions); `PreTrainedModel` is used for save/from_pretrained, weight init and gradient checkpointing.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from transformers import PreTrainedModel
from transformers.modeling_outputs import BaseModelOutputWithPast, CausalLMOutputWithPast

from llava_hybrid.compat import tied_weights_keys
from llava_hybrid.mamba2.mixer import Mamba2Mixer

from .cache import HybridCache
from .configuration import check_hybrid_config, mamba_dims
from .layers import RMSNorm, left_align

IGNORE_INDEX = -100


def build_mamba_mixer(config, layer_idx: int) -> nn.Module:
    """The Mamba-2 mixer that replaces a layer's attention (sizes: configuration.mamba_dims)."""
    return Mamba2Mixer.from_dims(mamba_dims(config), chunk_size=config.mamba_chunk_size,
                                 bias=config.mamba_carry_bias, layer_idx=layer_idx, backend=config.mamba_backend)


class HybridDecoderLayer(nn.Module):
    """Base of a decoder layer whose token mixer is `self_attn` (attention) or `mamba` (Mamba-2)."""

    def __init__(self, config, layer_idx: int, attention_cls):
        super().__init__()
        self.layer_idx = layer_idx
        self.is_mamba = layer_idx in config.mamba_layers
        if self.is_mamba:
            self.mamba = build_mamba_mixer(config, layer_idx)
        else:
            self.self_attn = attention_cls(config, layer_idx)

    def mix_tokens(self, x, attention_mask=None, position_ids=None, cache=None) -> torch.Tensor:
        """Token mixing of the (normed) input x (B, L, D) -> (B, L, D).

        attention_mask: (B, past+L) 1 = token, 0 = padding. Attention uses all of it; Mamba uses the
        last L columns (padded positions are zeroed before its conv and scan).
        """
        if self.is_mamba:
            if cache is not None and cache.stepping:  # the static decode step: state updated in place
                return self.mamba.step(x, cache.mamba_state(self.layer_idx))
            mask = attention_mask[:, -x.shape[1] :] if attention_mask is not None else None
            state = cache.mamba_state(self.layer_idx) if cache is not None else None
            return self.mamba(x, attention_mask=mask, state=state)
        return self.self_attn(x, attention_mask, position_ids, cache)


class HybridPreTrainedModel(PreTrainedModel):
    """save/from_pretrained, init and gradient-checkpointing plumbing for both families."""

    base_model_prefix = "model"
    supports_gradient_checkpointing = True
    _supports_sdpa = True
    _skip_keys_device_placement = ["past_key_values"]

    def _init_weights(self, module):
        """Normal(0, initializer_range) for Linear/Embedding, ones/zeros for norms; the Mamba mixer's own
        mixer is re-initialised by its own `reset_parameters` (A_log, D, dt_bias as mamba_ssm)."""
        std = self.config.initializer_range
        if isinstance(module, nn.Linear):
            nn.init.normal_(module.weight, mean=0.0, std=std)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding):
            nn.init.normal_(module.weight, mean=0.0, std=std)
        elif isinstance(module, (nn.LayerNorm, RMSNorm)):
            nn.init.ones_(module.weight)
            if getattr(module, "bias", None) is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, Mamba2Mixer):
            # runs after the mixer's children (children-first apply): the mixer's own init wins. Skipped
            # when any of its parameters was loaded from a checkpoint (transformers 5 flags those).
            if not any(getattr(p, "_is_hf_initialized", False) for p in module.parameters()):
                module.reset_parameters()


class HybridDecoderBase(HybridPreTrainedModel):
    """Embeddings -> layers -> final norm. Subclasses build `embed_tokens`, `layers`, the final norm
    (`final_norm_module()`), and `embed_dropout` (identity for Llama)."""

    def __init__(self, config):
        check_hybrid_config(config)
        super().__init__(config)
        self.gradient_checkpointing = False

    def final_norm_module(self) -> nn.Module:
        """The norm after the last layer (Phi `final_layernorm`, Llama `norm`)."""
        raise NotImplementedError

    def get_input_embeddings(self):
        return self.embed_tokens

    def set_input_embeddings(self, value):
        self.embed_tokens = value

    def forward(
        self,
        input_ids=None,
        attention_mask=None,
        position_ids=None,
        past_key_values: HybridCache | None = None,
        inputs_embeds=None,
        use_cache=None,
        output_hidden_states=None,
        return_dict=None,
        cache_position=None,
        **kwargs,
    ) -> BaseModelOutputWithPast:
        """(B, L) ids or (B, L, D) embeddings -> last hidden state (B, L, D), normed.

        attention_mask: (B, past+L), 1 = token. position_ids: (B, L); default cache_position if given,
        else past..past+L-1. past_key_values: a HybridCache, advanced by L after all layers.
        hidden_states (with output_hidden_states): embeddings, the input of each later layer, and the
        normed output, as transformers (so hidden_states[l] is layer l's input for l < num_layers).
        """
        if (input_ids is None) == (inputs_embeds is None):
            raise ValueError("pass exactly one of input_ids or inputs_embeds")
        if inputs_embeds is None:
            inputs_embeds = self.embed_tokens(input_ids)  # (B, L, D)
        b, l, _ = inputs_embeds.shape
        cache = past_key_values
        past = cache.length if cache is not None else 0
        if position_ids is None:
            if cache_position is not None:
                position_ids = cache_position.view(1, -1).expand(b, l)
            else:
                position_ids = torch.arange(past, past + l, device=inputs_embeds.device).expand(b, l)
        if attention_mask is not None and past == 0 and bool(attention_mask.all()):
            attention_mask = None  # no padding: take the plain causal path

        hidden = self.embed_dropout(inputs_embeds)
        all_hidden = [] if output_hidden_states else None
        for layer in self.layers:
            if all_hidden is not None:
                all_hidden.append(hidden)
            if self.gradient_checkpointing and self.training:
                hidden = self._gradient_checkpointing_func(
                    layer.__call__, hidden, attention_mask, position_ids, cache
                )
            else:
                hidden = layer(hidden, attention_mask, position_ids, cache)
        hidden = self.final_norm_module()(hidden)
        if all_hidden is not None:
            all_hidden.append(hidden)
            all_hidden = tuple(all_hidden)  # (embeddings, inputs of layers 1.., normed output)
        if cache is not None:
            cache.advance(l)
        output = BaseModelOutputWithPast(last_hidden_state=hidden, past_key_values=cache, hidden_states=all_hidden)
        return output if return_dict is not False else output.to_tuple()


    def decode_step(self, tokens: torch.Tensor, positions: torch.Tensor, cache: HybridCache) -> torch.Tensor:
        """The static decode step of every layer: tokens (B,) at positions (B, 1) -> last hidden (B, D), normed.

        The cache must be in its static decode (`cache.start_decode`): each attention layer writes K/V at
        the cache's slot tensor and attends to the whole buffer under its key mask, each Mamba layer updates
        its fixed-size state in place, and the slot moves on by one. Shapes and Python values are the same
        at every step and context length (what torch.compile and CUDA graphs need)."""
        cache.open_slot()
        hidden = self.embed_dropout(self.embed_tokens(tokens[:, None]))  # (B, 1, D)
        for layer in self.layers:
            hidden = layer(hidden, None, positions, cache)
        cache.close_slot()
        return self.final_norm_module()(hidden)[:, 0]  # (B, D)


class HybridCausalLMBase(HybridPreTrainedModel):
    """Decoder + lm_head, loss, and the project's `generate`. Subclasses set `decoder_class` (a LLaVA
    subclass may replace it with its LLaVA model class) and `lm_head_bias`."""

    decoder_class: type = None
    lm_head_bias = False
    _tied_weights_keys = tied_weights_keys("lm_head.weight", "model.embed_tokens.weight")

    def __init__(self, config):
        super().__init__(config)
        self.model = self.decoder_class(config)
        self.vocab_size = config.vocab_size
        self.lm_head = nn.Linear(config.hidden_size, config.vocab_size, bias=self.lm_head_bias)
        self.post_init()

    def get_model(self):
        return self.model

    def get_decoder(self):
        return self.model

    def get_input_embeddings(self):
        return self.model.embed_tokens

    def set_input_embeddings(self, value):
        self.model.embed_tokens = value

    def get_output_embeddings(self):
        return self.lm_head

    def set_output_embeddings(self, value):
        self.lm_head = value

    def allocate_cache(self, batch_size: int, max_length: int, device=None, dtype=None) -> HybridCache:
        """A HybridCache for this model (device/dtype default to the embedding's)."""
        weight = self.get_input_embeddings().weight
        return HybridCache(self.config, batch_size, max_length, device or weight.device, dtype or weight.dtype)

    def forward(
        self,
        input_ids=None,
        attention_mask=None,
        position_ids=None,
        past_key_values=None,
        inputs_embeds=None,
        labels=None,
        use_cache=None,
        output_hidden_states=None,
        return_dict=None,
        cache_position=None,
        **kwargs,
    ) -> CausalLMOutputWithPast:
        """Logits (B, L, V); with labels (B, L): mean cross-entropy of token t+1 given <= t, in fp32,
        ignoring IGNORE_INDEX (-100). `use_cache` without a cache is ignored (the decode loop allocates
        the cache, see llava_hybrid.hybrid.generation). return_dict=False gives a tuple, as transformers;
        other keyword arguments (e.g. the Trainer's num_items_in_batch) are ignored."""
        out = self.model(
            input_ids=input_ids,
            attention_mask=attention_mask,
            position_ids=position_ids,
            past_key_values=past_key_values,
            inputs_embeds=inputs_embeds,
            output_hidden_states=output_hidden_states,
            cache_position=cache_position,
        )
        logits = self.lm_head(out.last_hidden_state)  # (B, L, V)
        loss = None
        if labels is not None:
            shift_logits = logits[:, :-1].float().reshape(-1, logits.shape[-1])  # (B*(L-1), V)
            shift_labels = labels[:, 1:].reshape(-1).to(logits.device)  # (B*(L-1),)
            loss = F.cross_entropy(shift_logits, shift_labels, ignore_index=IGNORE_INDEX)
        output = CausalLMOutputWithPast(
            loss=loss, logits=logits, past_key_values=out.past_key_values, hidden_states=out.hidden_states
        )
        return output if return_dict is not False else output.to_tuple()

    def next_token_logits(self, input_ids=None, inputs_embeds=None, attention_mask=None, position_ids=None,
                          cache=None) -> torch.Tensor:
        """Logits of the last position only, (B, V): what the decode loop needs (no (B, L, V) tensor)."""
        out = self.model(
            input_ids=input_ids,
            inputs_embeds=inputs_embeds,
            attention_mask=attention_mask,
            position_ids=position_ids,
            past_key_values=cache,
        )
        return self.lm_head(out.last_hidden_state[:, -1])

    def decode_step(self, tokens: torch.Tensor, positions: torch.Tensor, cache: HybridCache) -> torch.Tensor:
        """Next-token logits (B, V) of tokens (B,) at positions (B, 1): the static one-token step of the whole
        model (HybridDecoderBase.decode_step + lm_head) that the decode loop compiles or graph-captures."""
        return self.lm_head(self.model.decode_step(tokens, positions, cache))

    @torch.no_grad()
    def generate(self, inputs=None, **kwargs):
        """HF-style generate through the project's decode loop; returns only the new tokens (B, T).

        Accepts input_ids (positional `inputs` or `input_ids=`) or inputs_embeds, attention_mask,
        do_sample, temperature, top_p, num_beams, max_new_tokens, eos_token_id, pad_token_id, use_cache,
        generator. See llava_hybrid.hybrid.generation.generate_from_kwargs. Empty ids (B, 0) beside
        inputs_embeds mean "the prompt is the embeddings" (transformers' convention, which the LLaVA
        classes use); right-padded rows are left-aligned first (`layers.left_align`).
        """
        from .generation import generate_from_kwargs

        inputs = kwargs.pop("input_ids", inputs)
        embeds, mask = kwargs.pop("inputs_embeds", None), kwargs.pop("attention_mask", None)
        if embeds is not None and inputs is not None and inputs.shape[-1] == 0:
            inputs = None  # (B, 0) ids: the prompt is the embeddings
        if mask is not None and embeds is not None:
            embeds, mask = left_align(embeds, mask)  # (B, L, D), (B, L)
        elif mask is not None and inputs is not None:
            inputs, mask = left_align(inputs, mask)  # (B, L), (B, L)
        return generate_from_kwargs(self, inputs, inputs_embeds=embeds, attention_mask=mask, **kwargs)
