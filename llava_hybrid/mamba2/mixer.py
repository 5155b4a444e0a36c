"""The Mamba-2 mixer that replaces a decoder layer's attention (MaTVLM), and its decode state.

Read as attention: x ~ V, B ~ K, C ~ Q, so the MaTVLM init copies W_V -> x rows, W_K -> B rows and
W_Q -> C rows of in_proj, and the layer's output projection -> out_proj. With grouped-query
attention, x and B come per kv head and are repeated to the heads (head i reads kv head
i // (n_heads // n_kv_heads)), exactly like K and V.

Parameter names and shapes follow mamba_ssm's Mamba2 (expand 1, ngroups = n_heads, no d_mlp
branch), so state dicts interchange with the official MaTVLM release.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .backend import BACKENDS, cuda_kernels, resolve_backend
from .ops import RMSNormGated, causal_conv1d, causal_conv1d_step
from .ssd import compute_dtype, ssd_chunked, ssd_step

__all__ = ["Mamba2Mixer", "Mamba2State"]


@dataclass
class Mamba2State:
    """Decode state of one Mamba-2 layer; its size does not depend on the sequence length.

    conv: (B, conv_dim, d_conv) the last d_conv pre-activation conv inputs, model dtype.
    ssm: (B, n_heads, head_dim, d_state) the SSM state, fp32 (fp16 drifts over long decodes).
    seen_tokens: positions consumed so far (0 = fresh; the mixer updates it).
    """

    conv: Tensor
    ssm: Tensor
    seen_tokens: int = 0

    def nbytes(self) -> int:
        """Bytes held by the two state tensors."""
        return self.conv.numel() * self.conv.element_size() + self.ssm.numel() * self.ssm.element_size()

    def reset(self) -> None:
        """Back to a fresh (all-zero) state, in place."""
        self.conv.zero_()
        self.ssm.zero_()
        self.seen_tokens = 0

    def reorder(self, batch_idx: Tensor) -> None:
        """Select / permute batch rows in place (beam search): row i <- row batch_idx[i]."""
        self.conv.copy_(self.conv.index_select(0, batch_idx))
        self.ssm.copy_(self.ssm.index_select(0, batch_idx))


class Mamba2Mixer(nn.Module):
    """Mamba-2 token mixer, (B, L, d_model) -> (B, L, d_model).

    d_inner = n_heads * head_dim; d_xb = n_kv_heads * head_dim; d_state defaults to head_dim.
    """

    def __init__(
        self,
        d_model: int,
        n_heads: int,
        head_dim: int,
        n_kv_heads: int | None = None,
        *,
        d_state: int | None = None,
        d_conv: int = 4,
        chunk_size: int = 64,
        conv_bias: bool = True,
        bias: bool = False,
        norm_eps: float = 1e-5,
        layer_idx: int | None = None,
        backend: str = "auto",
        device=None,
        dtype=None,
    ):
        super().__init__()
        n_kv_heads = n_heads if n_kv_heads is None else n_kv_heads
        d_state = head_dim if d_state is None else d_state
        for name, value in (("d_model", d_model), ("n_heads", n_heads), ("head_dim", head_dim),
                            ("n_kv_heads", n_kv_heads), ("d_state", d_state), ("d_conv", d_conv),
                            ("chunk_size", chunk_size)):
            if value < 1:
                raise ValueError(f"Mamba2Mixer {name}={value} must be >= 1")
        if n_heads % n_kv_heads != 0:
            raise ValueError(f"Mamba2Mixer n_heads={n_heads} must be a multiple of n_kv_heads={n_kv_heads}")
        if backend not in BACKENDS:
            raise ValueError(f"mamba_backend={backend!r} is not one of {BACKENDS}")
        kw = {"device": device, "dtype": dtype}
        self.d_model, self.n_heads, self.head_dim, self.n_kv_heads = d_model, n_heads, head_dim, n_kv_heads
        self.d_state, self.d_conv, self.chunk_size = d_state, d_conv, chunk_size
        self.layer_idx, self.backend = layer_idx, backend
        self.d_inner = n_heads * head_dim
        self.d_xb = n_kv_heads * head_dim
        self.d_B = n_kv_heads * d_state  # == d_xb when d_state == head_dim
        self.d_C = n_heads * d_state  # == d_inner when d_state == head_dim
        self.conv_dim = self.d_xb + self.d_B + self.d_C

        # in_proj rows: [z (d_inner) | x (d_xb) | B (d_B) | C (d_C) | dt (n_heads)]
        self.in_proj = nn.Linear(d_model, self.d_inner + self.conv_dim + n_heads, bias=bias, **kw)
        # depthwise causal conv over x|B|C; weight (conv_dim, 1, d_conv)
        self.conv1d = nn.Conv1d(self.conv_dim, self.conv_dim, d_conv, groups=self.conv_dim,
                                padding=d_conv - 1, bias=conv_bias, **kw)
        self.act = nn.SiLU()
        self.dt_bias = nn.Parameter(torch.empty(n_heads, **kw))  # (H,) softplus^-1 of the initial dt
        self.A_log = nn.Parameter(torch.empty(n_heads, **kw))  # (H,) A = -exp(A_log)
        self.D = nn.Parameter(torch.empty(n_heads, **kw))  # (H,) skip connection
        for p in (self.dt_bias, self.A_log, self.D):
            p._no_weight_decay = True
        self.norm = RMSNormGated(self.d_inner, eps=norm_eps, group_size=head_dim, norm_before_gate=False, **kw)
        self.out_proj = nn.Linear(self.d_inner, d_model, bias=bias, **kw)
        self.reset_parameters()

    @property
    def in_proj_layout(self) -> dict[str, slice]:
        """Row ranges of in_proj's packed output, in order: z, x, B, C, dt (x ~ V, B ~ K, C ~ Q)."""
        sizes = {"z": self.d_inner, "x": self.d_xb, "B": self.d_B, "C": self.d_C, "dt": self.n_heads}
        layout, start = {}, 0
        for name, size in sizes.items():
            layout[name] = slice(start, start + size)
            start += size
        assert start == self.in_proj.out_features
        return layout

    # ------------------------------------------------------------------ init
    @torch.no_grad()
    def reset_parameters(self, generator: torch.Generator | None = None) -> None:
        """Re-initialise every parameter as mamba_ssm's Mamba2 does, deterministic given `generator`.

        Linears and conv: PyTorch defaults (kaiming-uniform weights, a = sqrt(5) -> U(+-1/sqrt(fan_in)),
        bias U(+-1/sqrt(fan_in))). dt ~ log-uniform [1e-3, 1e-1] floored at 1e-4, dt_bias = softplus^-1(dt).
        A ~ U[1, 16], A_log = log A. D = 1. Norm weight = 1. Values are drawn on the CPU (so a CPU
        generator works for any device); meta tensors are left alone.
        """

        def fill(param: Tensor, values: Tensor) -> None:
            if not param.is_meta:
                param.copy_(values.to(param.dtype))

        def uniform(shape, low: float, high: float) -> Tensor:
            return torch.rand(shape, generator=generator, dtype=torch.float32) * (high - low) + low

        for module in (self.in_proj, self.conv1d, self.out_proj):
            fan_in = module.weight[0].numel()  # in_features, or in_channels / groups * kernel
            bound = 1.0 / math.sqrt(fan_in)  # kaiming_uniform(a=sqrt(5)) and the bias bound agree
            fill(module.weight, uniform(module.weight.shape, -bound, bound))
            if module.bias is not None:
                fill(module.bias, uniform(module.bias.shape, -bound, bound))
        dt_min, dt_max, dt_floor = 1e-3, 1e-1, 1e-4
        dt = torch.exp(uniform(self.n_heads, math.log(dt_min), math.log(dt_max))).clamp(min=dt_floor)
        fill(self.dt_bias, dt + torch.log(-torch.expm1(-dt)))  # inverse softplus
        fill(self.A_log, torch.log(uniform(self.n_heads, 1.0, 16.0)))
        fill(self.D, torch.ones(self.n_heads))
        fill(self.norm.weight, torch.ones(self.d_inner))

    # ------------------------------------------------------------------ state
    def allocate_state(self, batch_size: int, device=None, dtype=None) -> Mamba2State:
        """A fresh zero state: conv (B, conv_dim, d_conv) in `dtype` (default: the conv weight's), ssm fp32."""
        device = self.conv1d.weight.device if device is None else device
        dtype = self.conv1d.weight.dtype if dtype is None else dtype
        conv = torch.zeros(batch_size, self.conv_dim, self.d_conv, device=device, dtype=dtype)
        ssm = torch.zeros(batch_size, self.n_heads, self.head_dim, self.d_state, device=device, dtype=torch.float32)
        return Mamba2State(conv=conv, ssm=ssm)

    # ------------------------------------------------------------------ forward
    def _split_xbc(self, xBC: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """(..., conv_dim) -> x (..., H, P), B (..., H, N), C (..., H, N), x and B repeated kv -> heads."""
        x, B, C = torch.split(xBC, [self.d_xb, self.d_B, self.d_C], dim=-1)
        rep = self.n_heads // self.n_kv_heads
        x = x.unflatten(-1, (self.n_kv_heads, self.head_dim)).repeat_interleave(rep, dim=-2)  # (..., H, P)
        B = B.unflatten(-1, (self.n_kv_heads, self.d_state)).repeat_interleave(rep, dim=-2)  # (..., H, N)
        C = C.unflatten(-1, (self.n_heads, self.d_state))  # (..., H, N)
        return x, B, C

    def forward(self, hidden_states: Tensor, attention_mask: Tensor | None = None,
                state: Mamba2State | None = None) -> Tensor:
        """Mix a sequence.

        Args:
            hidden_states: (B, L, d_model).
            attention_mask: (B, L) or (B, >= L) (last L columns used); 1 = token, 0 = padding.
                Padded positions are zeroed before in_proj, before and after the conv, and get dt = 0,
                so (left) padding leaves the state untouched.
            state: None (training / no cache); with L > 1 a prefill that continues from the state's
                contents (zeros when fresh) and writes the new conv and ssm states; with L == 1 one
                recurrent decode step, updating the state in place.
        Returns:
            (B, L, d_model).
        """
        b, l, _ = hidden_states.shape
        backend = resolve_backend(self.backend, hidden_states.device)
        if backend == "cuda" and self.chunk_size & (self.chunk_size - 1):
            raise ValueError(f"mamba_chunk_size={self.chunk_size} must be a power of two for the cuda backend (Triton)")
        if hasattr(self.norm, "backend"):
            self.norm.backend = backend
        mask = None
        if attention_mask is not None:
            mask = attention_mask[:, -l:].to(hidden_states.dtype)[..., None]  # (B, L, 1)
            hidden_states = hidden_states * mask
        if state is not None and l == 1:
            return self._step(hidden_states, state, mask, backend)

        # 1. project: z gate, conv input xBC, dt
        zxbcdt = self.in_proj(hidden_states)  # (B, L, d_in_proj)
        z, xBC, dt = torch.split(zxbcdt, [self.d_inner, self.conv_dim, self.n_heads], dim=-1)
        if mask is not None:
            xBC = xBC * mask  # an in_proj bias must not leak from padding into the conv window

        # 2. causal depthwise conv over x|B|C, then the activation
        history = state.conv if state is not None and state.seen_tokens > 0 else None
        weight = self.conv1d.weight.squeeze(1)  # (conv_dim, d_conv)
        xBC_t = xBC.transpose(1, 2)  # (B, conv_dim, L)
        if backend == "cuda" and history is None:
            conv = cuda_kernels().causal_conv1d_fn(xBC_t.contiguous(), weight, self.conv1d.bias, activation=None)
        else:
            conv = causal_conv1d(xBC_t, weight, self.conv1d.bias, initial_state=history)
        if state is not None:  # the last d_conv inputs (zero history when fresh)
            old = history if history is not None else xBC_t.new_zeros(b, self.conv_dim, self.d_conv)
            state.conv.copy_(torch.cat([old.to(xBC_t.dtype), xBC_t], dim=-1)[..., -self.d_conv:])
        xBC = self.act(conv.transpose(1, 2))  # (B, L, conv_dim)
        if mask is not None:
            xBC = xBC * mask

        # 3. SSM inputs: x ~ V, B ~ K, C ~ Q per head; dt > 0; A < 0
        x, B, C = self._split_xbc(xBC)  # (B, L, H, P), (B, L, H, N), (B, L, H, N)
        f32 = compute_dtype(hidden_states)  # fp32 (fp64 stays fp64)
        dt = F.softplus(dt.to(f32) + self.dt_bias.to(f32))  # (B, L, H)
        if mask is not None:
            dt = dt * mask.to(f32)  # padding neither decays nor feeds the state
        A = -torch.exp(self.A_log.to(f32))  # (H,); in fp32, since a bf16 A_log loses precision

        # 4. scan (+ D x inside)
        init = state.ssm if state is not None and state.seen_tokens > 0 else None
        if backend == "cuda":
            y, final = cuda_kernels().mamba_chunk_scan_combined(
                x, dt, A, B, C, self.chunk_size, D=self.D, initial_states=init, return_final_states=True)
        else:
            y, final = ssd_chunked(x, dt, A, B, C, self.chunk_size, D=self.D, initial_state=init)
        if state is not None:
            state.ssm.copy_(final)
            state.seen_tokens += l
        y = y.reshape(b, l, self.d_inner)  # (B, L, d_inner)

        # 5. gated norm and output projection
        y = self.norm(y, z)  # (B, L, d_inner)
        return self.out_proj(y)  # (B, L, d_model)

    def _step(self, hidden_states: Tensor, state: Mamba2State, mask: Tensor | None, backend: str) -> Tensor:
        """One decode token: (B, 1, d_model) -> (B, 1, d_model); conv and ssm states updated in place."""
        b = hidden_states.shape[0]
        zxbcdt = self.in_proj(hidden_states[:, 0])  # (B, d_in_proj)
        z, xBC, dt = torch.split(zxbcdt, [self.d_inner, self.conv_dim, self.n_heads], dim=-1)
        if mask is not None:
            xBC = xBC * mask[:, 0]
        weight = self.conv1d.weight.squeeze(1)  # (conv_dim, d_conv)
        if backend == "cuda":
            xBC = cuda_kernels().causal_conv1d_update(xBC.contiguous(), state.conv, weight, self.conv1d.bias,
                                                      activation=None)
        else:
            xBC = causal_conv1d_step(xBC, state.conv, weight, self.conv1d.bias)  # (B, conv_dim)
        xBC = self.act(xBC)
        if mask is not None:
            xBC = xBC * mask[:, 0]
        x, B, C = self._split_xbc(xBC)  # (B, H, P), (B, H, N), (B, H, N)
        f32 = compute_dtype(hidden_states)
        dt = F.softplus(dt.to(f32) + self.dt_bias.to(f32))  # (B, H)
        if mask is not None:
            dt = dt * mask[:, 0].to(f32)
        A = -torch.exp(self.A_log.to(f32))  # (H,)
        if backend == "cuda":
            h, p, n = self.n_heads, self.head_dim, self.d_state
            y = cuda_kernels().selective_state_update(
                state.ssm, x, dt[..., None].expand(b, h, p), A[:, None, None].expand(h, p, n), B, C,
                D=self.D[:, None].expand(h, p))
        else:
            y = ssd_step(state.ssm, x, dt, A, B, C, self.D)  # (B, H, P)
        state.seen_tokens += 1
        y = self.norm(y.reshape(b, 1, self.d_inner), z[:, None])  # (B, 1, d_inner)
        return self.out_proj(y)  # (B, 1, d_model)

    def extra_repr(self) -> str:
        return (f"d_model={self.d_model}, n_heads={self.n_heads}, head_dim={self.head_dim}, "
                f"n_kv_heads={self.n_kv_heads}, d_state={self.d_state}, d_conv={self.d_conv}, "
                f"chunk_size={self.chunk_size}, layer_idx={self.layer_idx}, backend={self.backend!r}")
