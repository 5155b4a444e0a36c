"""Pieces shared by the Phi and Llama hybrid decoders: rotary embedding, masks, RMSNorm, attention.

Attention is torch SDPA with one boolean mask that is causal over the cache plus the key padding mask.
For fp16/bf16 inputs SDPA's fused kernels accumulate the softmax in fp32 (and fp32 is fp32), which
matches transformers' "softmax in fp32" eager path.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from llava_hybrid.compat import rope_settings

from .configuration import head_dim_of


class RMSNorm(nn.Module):
    """y = w * x / sqrt(mean(x^2) + eps), computed in fp32 and cast back (Llama's norm)."""

    def __init__(self, hidden_size: int, eps: float = 1e-6):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(hidden_size))
        self.variance_epsilon = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        dtype = x.dtype
        x = x.float()
        x = x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.variance_epsilon)
        return self.weight * x.to(dtype)


def default_positions(batch: int, length: int, past: int, device) -> torch.Tensor:
    """Positions past .. past+length-1 for every row: (B, L) long."""
    return torch.arange(past, past + length, device=device).unsqueeze(0).expand(batch, length)


def positions_from_mask(attention_mask: torch.Tensor) -> torch.Tensor:
    """Positions that skip left padding: cumsum(mask) - 1, 0 on padding. (B, T) -> (B, T) long."""
    return (attention_mask.long().cumsum(-1) - 1).clamp(min=0)


def left_align(rows: torch.Tensor, attention_mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Move each row's padding to the left, keeping token order (the decode loop's layout).

    rows: (B, L) ids or (B, L, D) embeddings; attention_mask (B, L), 1 = token. Left-padded rows are
    returned as they are; right-padded ones (LLaVA pads on the right) are rotated.
    """
    order = torch.argsort(attention_mask.long(), dim=1, stable=True)  # (B, L): padding (0) first, then tokens
    index = order if rows.dim() == 2 else order[..., None].expand_as(rows)
    return torch.gather(rows, 1, index), torch.gather(attention_mask, 1, order)


class Rotary(nn.Module):
    """Rotary position embedding on the first `rotary_dim` channels of each head (partial for Phi).

    The inverse frequencies are recomputed per call (rotary_dim/2 numbers): no buffer, so nothing can be
    left uninitialised by meta-device loading.
    """

    def __init__(self, config):
        super().__init__()
        theta, factor, rope_type = rope_settings(config)
        if rope_type != "default":
            raise ValueError(
                f"config rope_type {rope_type!r} is not supported by the hybrid decoders (only 'default')"
            )
        self.theta = theta
        self.rotary_dim = int(head_dim_of(config) * factor)
        if self.rotary_dim % 2:
            raise ValueError(
                f"head_dim {head_dim_of(config)} x partial_rotary_factor {factor} = {self.rotary_dim} rotary "
                "channels; it must be even"
            )

    def cos_sin(self, position_ids: torch.Tensor, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
        """position_ids (B, L) -> cos, sin (B, 1, L, rotary_dim) in `dtype` (angles in fp32)."""
        exponent = torch.arange(0, self.rotary_dim, 2, device=position_ids.device, dtype=torch.float)
        inv_freq = 1.0 / (self.theta ** (exponent / self.rotary_dim))  # (R/2,)
        freqs = position_ids[..., None].float() * inv_freq  # (B, L, R/2)
        angles = torch.cat((freqs, freqs), dim=-1)  # (B, L, R)
        return angles.cos().to(dtype)[:, None], angles.sin().to(dtype)[:, None]

    def rotate(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
        """Rotate the first rotary_dim channels of x (B, H, L, hd); the rest pass through."""
        rot, rest = x[..., : self.rotary_dim], x[..., self.rotary_dim :]
        half = self.rotary_dim // 2
        rotated_half = torch.cat((-rot[..., half:], rot[..., :half]), dim=-1)  # rotate_half
        return torch.cat((rot * cos + rotated_half * sin, rest), dim=-1)


def attention_bool_mask(
    padding_mask: torch.Tensor | None, q_len: int, past: int, batch: int, device
) -> torch.Tensor | None:
    """Boolean SDPA mask (B, 1, L, past+L): True where query i may attend key j.

    Allowed = causal (j <= past + i) and key j not padding. A query that is itself padding (left padding)
    would see no key at all and SDPA would return NaN, so each query may always see its own key; such
    rows are padding and their outputs are never used.
    padding_mask: (B, past+L) with 1 = token, 0 = padding, or None. Returns None when no mask is needed
    (no padding and a single new token: every cached key is visible).
    """
    kv_len = past + q_len
    if padding_mask is None and q_len == 1:
        return None
    if padding_mask is not None and padding_mask.shape[-1] != kv_len:
        raise ValueError(
            f"attention_mask covers {padding_mask.shape[-1]} positions but past ({past}) + new ({q_len}) tokens "
            f"= {kv_len}; pass the mask of the whole sequence so far"
        )
    query_pos = torch.arange(past, kv_len, device=device)[:, None]  # (L, 1)
    key_pos = torch.arange(kv_len, device=device)[None, :]  # (1, T)
    allowed = (key_pos <= query_pos)[None, None]  # (1, 1, L, T)
    if padding_mask is not None:
        allowed = allowed & padding_mask.bool()[:, None, None, :]  # (B, 1, L, T)
        allowed = allowed | (key_pos == query_pos)[None, None]
    return allowed.expand(batch, 1, q_len, kv_len)


class Attention(nn.Module):
    """Multi-head attention with GQA, (partial) rotary, and an optional HybridCache.

    Subclasses name the output projection as transformers does (Phi `dense`, Llama `o_proj`) and return
    it from `out_proj_module`.
    """

    def __init__(self, config, layer_idx: int, qkv_bias: bool):
        super().__init__()
        self.layer_idx = layer_idx
        self.num_heads = config.num_attention_heads
        self.num_kv_heads = config.num_key_value_heads or config.num_attention_heads
        self.head_dim = head_dim_of(config)
        self.attention_dropout = float(config.attention_dropout or 0.0)
        if self.num_heads % self.num_kv_heads:
            raise ValueError(
                f"num_attention_heads ({self.num_heads}) must be a multiple of num_key_value_heads "
                f"({self.num_kv_heads})"
            )
        hidden, hd = config.hidden_size, self.head_dim
        self.q_proj = nn.Linear(hidden, self.num_heads * hd, bias=qkv_bias)
        self.k_proj = nn.Linear(hidden, self.num_kv_heads * hd, bias=qkv_bias)
        self.v_proj = nn.Linear(hidden, self.num_kv_heads * hd, bias=qkv_bias)
        self.rotary = Rotary(config)

    def out_proj_module(self) -> nn.Linear:
        """The output projection (Phi `dense`, Llama `o_proj`)."""
        raise NotImplementedError

    def forward(
        self,
        hidden_states: torch.Tensor,
        padding_mask: torch.Tensor | None = None,
        position_ids: torch.Tensor | None = None,
        cache=None,
    ) -> torch.Tensor:
        """hidden_states (B, L, D) -> (B, L, D).

        padding_mask: (B, past+L), 1 = token; position_ids: (B, L) (default past..past+L-1);
        cache: HybridCache or None; with a cache, K/V are written at positions past..past+L-1 where
        past = cache.length (the model advances cache.length after all layers). A cache in its static
        decode (`cache.stepping`: one token, position_ids given) takes K/V at its slot tensor and the
        token attends to the whole buffer under the cache's key mask: no Python number is read.
        """
        b, l, _ = hidden_states.shape
        stepping = cache is not None and cache.stepping
        past = 0 if cache is None or stepping else cache.length
        if position_ids is None:
            position_ids = default_positions(b, l, past, hidden_states.device)

        # 1. project: (B, L, D) -> (B, heads, L, hd)
        q = self.q_proj(hidden_states).view(b, l, self.num_heads, self.head_dim).transpose(1, 2)
        k = self.k_proj(hidden_states).view(b, l, self.num_kv_heads, self.head_dim).transpose(1, 2)
        v = self.v_proj(hidden_states).view(b, l, self.num_kv_heads, self.head_dim).transpose(1, 2)

        # 2. rotary on the first rotary_dim channels of q and k
        cos, sin = self.rotary.cos_sin(position_ids, q.dtype)  # (B, 1, L, R)
        q, k = self.rotary.rotate(q, cos, sin), self.rotary.rotate(k, cos, sin)

        # 3. append to the cache: k, v become (B, kv_heads, past+L, hd), or the whole buffers when stepping
        if stepping:
            k, v = cache.write_step_kv(self.layer_idx, k, v)  # (B, kv_heads, max_length, hd)
        elif cache is not None:
            k, v = cache.write_kv(self.layer_idx, k, v)

        # 4. GQA: repeat each kv head for its group of query heads -> (B, heads, T, hd)
        groups = self.num_heads // self.num_kv_heads
        if groups > 1:
            k = k.repeat_interleave(groups, dim=1)
            v = v.repeat_interleave(groups, dim=1)

        # 5. softmax(q k^T / sqrt(hd) + mask) v
        dropout = self.attention_dropout if self.training else 0.0
        if stepping:
            out = F.scaled_dot_product_attention(q, k, v, attn_mask=cache.step_key_mask(), dropout_p=dropout)
        elif padding_mask is None and past == 0 and l > 1:
            out = F.scaled_dot_product_attention(q, k, v, is_causal=True, dropout_p=dropout)
        else:
            mask = attention_bool_mask(padding_mask, l, past, b, hidden_states.device)
            out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=dropout)  # (B, H, L, hd)
        out = out.transpose(1, 2).reshape(b, l, self.num_heads * self.head_dim)  # (B, L, H*hd)
        return self.out_proj_module()(out)
