"""Hybrid Llama-family decoder (LLaVA-1.5 / Vicuna, SmolLM2): RMSNorm pre-norm, GQA, SwiGLU.

    x <- x + mixer(RMSNorm(x));  x <- x + MLP(RMSNorm(x)),   mixer = attention or Mamba-2

Weight names equal transformers' LlamaForCausalLM (`self_attn.{q,k,v,o}_proj`, `mlp.{gate,up,down}_proj`,
`input_layernorm`, `post_attention_layernorm`, `model.norm`, `lm_head`); a Mamba layer has
`model.layers.{i}.mamba.*` instead of `self_attn.*`. lm_head is tied to embed_tokens when
config.tie_word_embeddings (SmolLM2).
"""

from __future__ import annotations

import torch
from torch import nn
from transformers.activations import ACT2FN

from .configuration import HybridLlamaConfig
from .layers import Attention, RMSNorm
from .modeling_base import HybridCausalLMBase, HybridDecoderBase, HybridDecoderLayer


class LlamaHybridAttention(Attention):
    """Llama attention: q/k/v/o biases iff config.attention_bias; full rotary; GQA."""

    def __init__(self, config, layer_idx: int):
        bias = bool(getattr(config, "attention_bias", False))
        super().__init__(config, layer_idx, qkv_bias=bias)
        self.o_proj = nn.Linear(self.num_heads * self.head_dim, config.hidden_size, bias=bias)

    def out_proj_module(self) -> nn.Linear:
        return self.o_proj


class LlamaMLP(nn.Module):
    """SwiGLU: down(act(gate(x)) * up(x)), act = config.hidden_act (silu)."""

    def __init__(self, config):
        super().__init__()
        bias = bool(getattr(config, "mlp_bias", False))
        self.gate_proj = nn.Linear(config.hidden_size, config.intermediate_size, bias=bias)
        self.up_proj = nn.Linear(config.hidden_size, config.intermediate_size, bias=bias)
        self.down_proj = nn.Linear(config.intermediate_size, config.hidden_size, bias=bias)
        self.act_fn = ACT2FN[config.hidden_act]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down_proj(self.act_fn(self.gate_proj(x)) * self.up_proj(x))


class LlamaHybridDecoderLayer(HybridDecoderLayer):
    """Pre-norm block: x + mixer(norm1(x)), then + MLP(norm2(.))."""

    def __init__(self, config, layer_idx: int):
        super().__init__(config, layer_idx, LlamaHybridAttention)
        self.mlp = LlamaMLP(config)
        self.input_layernorm = RMSNorm(config.hidden_size, eps=config.rms_norm_eps)
        self.post_attention_layernorm = RMSNorm(config.hidden_size, eps=config.rms_norm_eps)

    def forward(self, hidden_states, attention_mask=None, position_ids=None, cache=None) -> torch.Tensor:
        """(B, L, D) -> (B, L, D); attention_mask (B, past+L) 1 = token; cache: HybridCache or None."""
        mixed = self.mix_tokens(self.input_layernorm(hidden_states), attention_mask, position_ids, cache)
        h = hidden_states + mixed  # (B, L, D)
        return h + self.mlp(self.post_attention_layernorm(h))


class HybridLlamaModel(HybridDecoderBase):
    """Llama decoder with attention or Mamba-2 per layer (no lm_head)."""

    config_class = HybridLlamaConfig
    _no_split_modules = ["LlamaHybridDecoderLayer"]

    def __init__(self, config: HybridLlamaConfig):
        super().__init__(config)
        self.padding_idx = config.pad_token_id
        self.embed_tokens = nn.Embedding(config.vocab_size, config.hidden_size, self.padding_idx)
        self.embed_dropout = nn.Identity()
        self.layers = nn.ModuleList(LlamaHybridDecoderLayer(config, i) for i in range(config.num_hidden_layers))
        self.norm = RMSNorm(config.hidden_size, eps=config.rms_norm_eps)
        self.post_init()

    def final_norm_module(self) -> nn.Module:
        return self.norm


class HybridLlamaForCausalLM(HybridCausalLMBase):
    """Hybrid Llama + lm_head (no bias; tied when config.tie_word_embeddings)."""

    config_class = HybridLlamaConfig
    decoder_class = HybridLlamaModel
    lm_head_bias = False
    _no_split_modules = ["LlamaHybridDecoderLayer"]
