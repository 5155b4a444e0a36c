"""Pure-PyTorch operators of the Mamba-2 mixer: causal depthwise conv (full and one-step) and gated
RMSNorm. Each is the `torch` entry of the op table (backend.py) and has its signature, so the CUDA
and PyTorch paths differ only in which function is called.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from .ssd import compute_dtype

__all__ = ["causal_conv1d", "causal_conv1d_step", "rms_norm_gated"]


def causal_conv1d(
    x: Tensor,
    weight: Tensor,
    bias: Tensor | None = None,
    initial_state: Tensor | None = None,
    return_final_state: bool = False,
) -> Tensor | tuple[Tensor, Tensor]:
    """Depthwise causal convolution over the length axis, no activation.

    Args:
        x: (b, d, l) channel-first inputs.
        weight: (d, k) one kernel per channel (conv1d.weight squeezed).
        bias: (d,) or None.
        initial_state: (b, d, k) the last k inputs seen before x (a conv state), or None for zeros.
        return_final_state: also return the last k inputs of [state, x] as the new conv state.
    Returns:
        y (b, d, l), and if asked the conv state (b, d, k) in x's dtype (l = 0: y is empty and the
        state is the initial one).
    """
    b, d, l = x.shape
    k = weight.shape[-1]
    if initial_state is None:
        history = x.new_zeros(b, d, k)  # (b, d, k)
    else:
        assert initial_state.shape == (b, d, k), f"conv state {tuple(initial_state.shape)} != {(b, d, k)}"
        history = initial_state.to(x.dtype)
    xp = torch.cat([history[..., 1:], x], dim=-1)  # (b, d, k - 1 + l)
    if l == 0:  # F.conv1d refuses an input shorter than its kernel
        y = x.new_zeros(b, d, 0)
    else:
        y = F.conv1d(xp, weight.unsqueeze(1).to(x.dtype), None if bias is None else bias.to(x.dtype),
                     groups=d)  # (b, d, l)
    if not return_final_state:
        return y
    final = torch.cat([history, x], dim=-1)[..., -k:]  # (b, d, k)
    return y, final.contiguous()


def causal_conv1d_step(x: Tensor, conv_state: Tensor, weight: Tensor, bias: Tensor | None = None) -> Tensor:
    """One decode step of the causal conv; rolls `conv_state` in place.

    Args:
        x: (b, d) the new input; conv_state: (b, d, k) the last k inputs, updated in place;
        weight: (d, k); bias: (d,) or None.
    Returns:
        y: (b, d) pre-activation output, in x's dtype.

    Accumulated in fp32 (fp64 stays fp64) with the bias, then rounded once to x's dtype, as the full
    conv does: in bf16, rounding the dot product and the bias sum separately is 1 ulp off the prefill
    on about a quarter of the elements.
    """
    f32 = compute_dtype(x)
    conv_state.copy_(torch.roll(conv_state, shifts=-1, dims=-1))  # drop the oldest input
    conv_state[:, :, -1] = x.to(conv_state.dtype)
    y = torch.einsum("bdk,dk->bd", conv_state.to(f32), weight.to(f32))  # (b, d) fp32
    if bias is not None:
        y = y + bias.to(f32)
    return y.to(x.dtype)


def rms_norm_gated(x: Tensor, z: Tensor | None, weight: Tensor, eps: float = 1e-5, group_size: int | None = None,
                   norm_before_gate: bool = False) -> Tensor:
    """Gated RMSNorm of Mamba-2, normalised per group of `group_size` channels (None: all of them).

    norm_before_gate=False (Mamba-2's default): y = rmsnorm(x * silu(z)) * weight;
    norm_before_gate=True: y = rmsnorm(x) * weight * silu(z).
    x, z: (..., d); weight: (d,). Computed in fp32 (fp64 stays fp64), returned in x's dtype.
    """
    dtype, f32 = x.dtype, compute_dtype(x)
    d = x.shape[-1]
    group_size = d if group_size is None else group_size
    xf = x.to(f32)
    if z is not None and not norm_before_gate:
        xf = xf * F.silu(z.to(f32))
    xg = xf.reshape(*xf.shape[:-1], d // group_size, group_size)  # (..., groups, group_size)
    xg = xg * torch.rsqrt(xg.pow(2).mean(dim=-1, keepdim=True) + eps)
    y = xg.reshape(xf.shape) * weight.to(f32)  # (..., d)
    if z is not None and norm_before_gate:
        y = y * F.silu(z.to(f32))
    return y.to(dtype)
