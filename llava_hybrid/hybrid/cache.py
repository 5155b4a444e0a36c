"""HybridCache: the decode state of a hybrid decoder, allocated once for the whole generation.

Layout:
    attention layer i: K, V   (B, kv_heads, max_length, head_dim) in the model dtype, written in place at
                              positions length .. length+L-1; attention reads [:length+L].
    Mamba layer i:     Mamba2State(conv (B, conv_dim, d_conv) model dtype, ssm (B, heads, head_dim, d_state)
                              fp32): constant size, independent of the sequence length.
    length:            tokens consumed so far (the same for every layer; advanced by the model after all
                       layers have run on a chunk).

Static decode (`start_decode` .. `finish_decode`, the decode loop's one-token step): no Python number
changes per token, so a compiled step or a CUDA graph serves every token and every context length.
    slot:      (1,) long, the cache position the next token's K/V are written to (index_copy_, in place)
    key_mask:  (B, max_length) bool, the positions a new token may attend to: the prompt's tokens (not
               its padding) and every decoded token; positions not yet written are False
Attention over the whole buffer under key_mask equals attention over [:length] (masked keys weigh 0).
"""

from __future__ import annotations

import torch

from llava_hybrid.mamba2.mixer import Mamba2State

from .configuration import head_dim_of, mamba_dims


class HybridCache:
    """Pre-allocated KV for attention layers and Mamba2State for Mamba layers (see module docstring)."""

    def __init__(self, config, batch_size: int, max_length: int, device=None, dtype=torch.float32):
        if max_length < 1 or batch_size < 1:
            raise ValueError(
                f"HybridCache needs batch_size >= 1 and max_length >= 1, got {batch_size}, {max_length}"
            )
        self.batch_size, self.max_length = batch_size, max_length
        self.length = 0
        self.stepping = False  # True between start_decode and finish_decode
        self.slot: torch.Tensor | None = None  # (1,) long
        self.key_mask: torch.Tensor | None = None  # (B, max_length) bool
        kv_heads = config.num_key_value_heads or config.num_attention_heads
        kv_shape = (batch_size, kv_heads, max_length, head_dim_of(config))
        mamba, dims = set(config.mamba_layers), mamba_dims(config)  # the mixers' own sizes
        self.kv: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}
        self.ssm: dict[int, Mamba2State] = {}
        for i in range(config.num_hidden_layers):
            if i in mamba:
                self.ssm[i] = Mamba2State.zeros(dims, batch_size, device=device, dtype=dtype)
            else:
                self.kv[i] = (
                    torch.zeros(kv_shape, device=device, dtype=dtype),
                    torch.zeros(kv_shape, device=device, dtype=dtype),
                )

    def write_kv(self, layer_idx: int, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Write k, v (B, kv_heads, L, hd) at positions length..length+L-1.

        Returns views of the cache up to the new end: (B, kv_heads, length+L, hd) each."""
        end = self.length + k.shape[2]
        if end > self.max_length:
            raise ValueError(
                f"HybridCache is full: {self.length} cached + {k.shape[2]} new tokens > "
                f"max_length {self.max_length}"
            )
        key_cache, value_cache = self.kv[layer_idx]
        key_cache[:, :, self.length : end] = k
        value_cache[:, :, self.length : end] = v
        return key_cache[:, :, :end], value_cache[:, :, :end]

    # ------------------------------------------------------------------ static decode
    def start_decode(self, padding_mask: torch.Tensor | None = None) -> None:
        """Switch to the static one-token step after a prefill of `length` tokens.

        padding_mask: (B, length) 1 = token, 0 = (left) padding, or None (no padding)."""
        if self.length >= self.max_length:
            raise ValueError(f"HybridCache is full: {self.length} cached tokens = max_length {self.max_length}")
        device = next(iter(self.kv.values()))[0].device if self.kv else next(iter(self.ssm.values())).ssm.device
        self.key_mask = torch.zeros(self.batch_size, self.max_length, dtype=torch.bool, device=device)
        self.key_mask[:, : self.length] = True if padding_mask is None else padding_mask.bool()
        self.slot = torch.full((1,), self.length, dtype=torch.long, device=device)
        self.stepping = True

    def open_slot(self) -> None:
        """Start one decode token: its own position becomes visible (it attends to itself)."""
        self.key_mask.index_fill_(1, self.slot, True)

    def write_step_kv(self, layer_idx: int, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Write one token's k, v (B, kv_heads, 1, hd) at `slot`; returns the whole buffers (B, kv_heads,
        max_length, hd): attend to them under `step_key_mask()`."""
        key_cache, value_cache = self.kv[layer_idx]
        key_cache.index_copy_(2, self.slot, k.to(key_cache.dtype))
        value_cache.index_copy_(2, self.slot, v.to(value_cache.dtype))
        return key_cache, value_cache

    def step_key_mask(self) -> torch.Tensor:
        """SDPA mask of the decode token: (B, 1, 1, max_length) bool, True = may attend."""
        return self.key_mask[:, None, None, :]

    def close_slot(self) -> None:
        """End one decode token: the next one is written one position further."""
        self.slot.add_(1)

    def finish_decode(self) -> None:
        """Back to the dynamic path: `length` and the Mamba states' token counts take in the decoded tokens
        (one host read of `slot`)."""
        if not self.stepping:
            return
        decoded = int(self.slot.item()) - self.length
        self.length += decoded
        for state in self.ssm.values():
            state.seen_tokens += decoded
        self.stepping, self.slot, self.key_mask = False, None, None

    def mamba_state(self, layer_idx: int) -> Mamba2State:
        """The Mamba2State of Mamba layer `layer_idx` (updated in place by the mixer)."""
        return self.ssm[layer_idx]

    def advance(self, n: int) -> None:
        """Mark n more tokens as consumed by every layer."""
        self.length += n

    def reorder(self, beam_idx: torch.Tensor) -> None:
        """Row i <- row beam_idx[i] for every tensor, in place (beam search)."""
        for key_cache, value_cache in self.kv.values():
            key_cache.copy_(key_cache.index_select(0, beam_idx))
            value_cache.copy_(value_cache.index_select(0, beam_idx))
        for state in self.ssm.values():
            state.reorder(beam_idx)
        if self.key_mask is not None:
            self.key_mask.copy_(self.key_mask.index_select(0, beam_idx))

    def nbytes(self) -> dict[str, int]:
        """Allocated bytes: {"kv": all K/V buffers, "ssm": SSM states, "conv": conv states}."""
        kv = sum(t.numel() * t.element_size() for pair in self.kv.values() for t in pair)
        ssm = sum(s.ssm.numel() * s.ssm.element_size() for s in self.ssm.values())
        conv = sum(s.conv.numel() * s.conv.element_size() for s in self.ssm.values())
        return {"kv": kv, "ssm": ssm, "conv": conv}
