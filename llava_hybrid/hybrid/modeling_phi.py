"""Hybrid Phi decoder (Phi-2 block: one LayerNorm feeding attention and MLP in parallel).

    h = LN(x);  x <- x + drop(mixer(h)) + drop(MLP(h)),   mixer = attention or Mamba-2 (config.mamba_layers)

Weight names equal transformers' PhiForCausalLM (`model.layers.{i}.self_attn.{q,k,v}_proj/dense`,
`mlp.fc1/fc2`, `input_layernorm`, `model.final_layernorm`, `lm_head` with bias); a Mamba layer has
`model.layers.{i}.mamba.*` instead of `self_attn.*`.
"""

from __future__ import annotations

import torch
from torch import nn
from transformers.activations import ACT2FN

from .configuration import HybridPhiConfig
from .layers import Attention
from .modeling_base import HybridCausalLMBase, HybridDecoderBase, HybridDecoderLayer


class PhiHybridAttention(Attention):
    """Phi attention: biases on q/k/v and on the output projection `dense`; partial rotary."""

    def __init__(self, config, layer_idx: int):
        super().__init__(config, layer_idx, qkv_bias=True)
        if getattr(config, "qk_layernorm", False):
            raise ValueError("config.qk_layernorm=True is not supported by the hybrid Phi decoder")
        self.dense = nn.Linear(self.num_heads * self.head_dim, config.hidden_size, bias=True)

    def out_proj_module(self) -> nn.Linear:
        return self.dense


class PhiMLP(nn.Module):
    """fc2(act(fc1(x))), act = config.hidden_act (gelu_new for Phi-2)."""

    def __init__(self, config):
        super().__init__()
        self.activation_fn = ACT2FN[config.hidden_act]
        self.fc1 = nn.Linear(config.hidden_size, config.intermediate_size)
        self.fc2 = nn.Linear(config.intermediate_size, config.hidden_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.activation_fn(self.fc1(x)))


class PhiHybridDecoderLayer(HybridDecoderLayer):
    """Parallel block: x + drop(mixer(LN(x))) + drop(MLP(LN(x)))."""

    def __init__(self, config, layer_idx: int):
        super().__init__(config, layer_idx, PhiHybridAttention)
        self.mlp = PhiMLP(config)
        self.input_layernorm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.resid_dropout = nn.Dropout(config.resid_pdrop)

    def forward(self, hidden_states, attention_mask=None, position_ids=None, cache=None) -> torch.Tensor:
        """(B, L, D) -> (B, L, D); attention_mask (B, past+L) 1 = token; cache: HybridCache or None."""
        h = self.input_layernorm(hidden_states)  # (B, L, D)
        mixed = self.resid_dropout(self.mix_tokens(h, attention_mask, position_ids, cache))
        return hidden_states + mixed + self.resid_dropout(self.mlp(h))


class HybridPhiModel(HybridDecoderBase):
    """Phi decoder with attention or Mamba-2 per layer (no lm_head)."""

    config_class = HybridPhiConfig
    _no_split_modules = ["PhiHybridDecoderLayer"]

    def __init__(self, config: HybridPhiConfig):
        super().__init__(config)
        self.padding_idx = config.pad_token_id
        self.embed_tokens = nn.Embedding(config.vocab_size, config.hidden_size, self.padding_idx)
        self.embed_dropout = nn.Dropout(config.embd_pdrop)
        self.layers = nn.ModuleList(PhiHybridDecoderLayer(config, i) for i in range(config.num_hidden_layers))
        self.final_layernorm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.post_init()

    def final_norm_module(self) -> nn.Module:
        return self.final_layernorm


class HybridPhiForCausalLM(HybridCausalLMBase):
    """Hybrid Phi + lm_head (with bias, as Phi-2); `generate` returns only the new tokens."""

    config_class = HybridPhiConfig
    decoder_class = HybridPhiModel
    lm_head_bias = True
    _no_split_modules = ["PhiHybridDecoderLayer"]
