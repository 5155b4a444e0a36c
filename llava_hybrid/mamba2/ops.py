"""Pure-PyTorch operators of the Mamba-2 mixer: causal depthwise conv (full and one-step) and gated
RMSNorm. Each has the signature of its CUDA twin's use in the mixer (see backend.py), so the two
paths differ only in which function is called.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .backend import cuda_kernels
from .ssd import compute_dtype

__all__ = ["causal_conv1d", "causal_conv1d_step", "RMSNormGated"]


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
        y (b, d, l), and if asked the conv state (b, d, k) in x's dtype.
    """
    b, d, l = x.shape
    k = weight.shape[-1]
    if initial_state is None:
        history = x.new_zeros(b, d, k)  # (b, d, k)
    else:
        assert initial_state.shape == (b, d, k), f"conv state {tuple(initial_state.shape)} != {(b, d, k)}"
        history = initial_state.to(x.dtype)
    xp = torch.cat([history[..., 1:], x], dim=-1)  # (b, d, k - 1 + l)
    y = F.conv1d(xp, weight.unsqueeze(1).to(x.dtype), None if bias is None else bias.to(x.dtype), groups=d)  # (b, d, l)
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
    """
    conv_state.copy_(torch.roll(conv_state, shifts=-1, dims=-1))  # drop the oldest input
    conv_state[:, :, -1] = x.to(conv_state.dtype)
    y = torch.einsum("bdk,dk->bd", conv_state.to(weight.dtype), weight)  # (b, d)
    if bias is not None:
        y = y + bias
    return y.to(x.dtype)


class RMSNormGated(nn.Module):
    """Gated RMSNorm of Mamba-2, normalised per group of `group_size` channels.

    norm_before_gate=False (Mamba-2's default): y = rmsnorm(x * silu(z)) * weight.
    norm_before_gate=True: y = rmsnorm(x) * weight * silu(z). Computed in fp32, returned in x's dtype.
    """

    def __init__(
        self,
        d: int,
        eps: float = 1e-5,
        group_size: int | None = None,
        norm_before_gate: bool = False,
        device=None,
        dtype=None,
    ):
        super().__init__()
        group_size = d if group_size is None else group_size
        if group_size < 1 or d % group_size != 0:
            raise ValueError(f"group_size={group_size} must divide the normalised size d={d}")
        self.d, self.eps, self.group_size, self.norm_before_gate = d, eps, group_size, norm_before_gate
        self.weight = nn.Parameter(torch.ones(d, device=device, dtype=dtype))
        # Set by the mixer once the backend is resolved: "cuda" routes to mamba_ssm's rmsnorm_fn.
        self.backend = "torch"

    def reset_parameters(self) -> None:
        """Weight to ones."""
        nn.init.ones_(self.weight)

    def forward(self, x: Tensor, z: Tensor | None = None) -> Tensor:
        """x, z: (..., d) -> (..., d)."""
        if self.backend == "cuda" and x.is_cuda:
            return cuda_kernels().rmsnorm_fn(
                x, self.weight, None, z=z, eps=self.eps, group_size=self.group_size,
                norm_before_gate=self.norm_before_gate,
            )
        dtype, f32 = x.dtype, compute_dtype(x)
        xf = x.to(f32)
        if z is not None and not self.norm_before_gate:
            xf = xf * F.silu(z.to(f32))
        shape = xf.shape
        xg = xf.reshape(*shape[:-1], self.d // self.group_size, self.group_size)  # (..., groups, group_size)
        xg = xg * torch.rsqrt(xg.pow(2).mean(dim=-1, keepdim=True) + self.eps)
        y = xg.reshape(shape) * self.weight.to(f32)  # (..., d)
        if z is not None and self.norm_before_gate:
            y = y * F.silu(z.to(f32))
        return y.to(dtype)

    def extra_repr(self) -> str:
        return f"{self.d}, eps={self.eps}, group_size={self.group_size}, norm_before_gate={self.norm_before_gate}"
