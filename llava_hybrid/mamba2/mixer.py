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

from .backend import Backend, check_backend, resolve_ops
from .dims import Mamba2Dims
from .ssd import compute_dtype

__all__ = ["Mamba2Mixer", "Mamba2State", "RMSNormGated"]


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

    @classmethod
    def zeros(cls, dims: Mamba2Dims, batch_size: int, device=None, dtype=torch.float32) -> "Mamba2State":
        """A fresh state for a mixer of `dims`: conv in `dtype` (the model's), ssm in fp32."""
        return cls(conv=torch.zeros(dims.conv_state_shape(batch_size), device=device, dtype=dtype),
                   ssm=torch.zeros(dims.ssm_state_shape(batch_size), device=device, dtype=torch.float32))

    def nbytes(self) -> int:
        """Bytes held by the two state tensors."""
        return self.conv.numel() * self.conv.element_size() + self.ssm.numel() * self.ssm.element_size()

    def reorder(self, batch_idx: Tensor) -> None:
        """Select / permute batch rows in place (beam search): row i <- row batch_idx[i]."""
        self.conv.copy_(self.conv.index_select(0, batch_idx))
        self.ssm.copy_(self.ssm.index_select(0, batch_idx))


class RMSNormGated(nn.Module):
    """Gated RMSNorm of Mamba-2, normalised per group of `group_size` channels (the op table's gated_norm).

    norm_before_gate=False (Mamba-2's default): y = rmsnorm(x * silu(z)) * weight.
    norm_before_gate=True: y = rmsnorm(x) * weight * silu(z). Computed in fp32, returned in x's dtype.
    `backend` (set at construction, like the mixer's) picks the kernel for the input's device.
    """

    def __init__(self, d: int, eps: float = 1e-5, group_size: int | None = None, norm_before_gate: bool = False,
                 backend: Backend = "auto", device=None, dtype=None):
        super().__init__()
        group_size = d if group_size is None else group_size
        if group_size < 1 or d % group_size != 0:
            raise ValueError(f"group_size={group_size} must divide the normalised size d={d}")
        check_backend(backend)
        self.d, self.eps, self.group_size, self.norm_before_gate = d, eps, group_size, norm_before_gate
        self.backend = backend
        self.weight = nn.Parameter(torch.ones(d, device=device, dtype=dtype))

    def reset_parameters(self) -> None:
        """Weight to ones."""
        nn.init.ones_(self.weight)

    def forward(self, x: Tensor, z: Tensor | None = None) -> Tensor:
        """x, z: (..., d) -> (..., d)."""
        ops = resolve_ops(self.backend, x.device)
        return ops.gated_norm(x, z, self.weight, self.eps, self.group_size, self.norm_before_gate)

    def extra_repr(self) -> str:
        return f"{self.d}, eps={self.eps}, group_size={self.group_size}, norm_before_gate={self.norm_before_gate}"


class Mamba2Mixer(nn.Module):
    """Mamba-2 token mixer, (B, L, d_model) -> (B, L, d_model); sizes in `self.dims` (mamba2/dims.py).

    d_inner = n_heads * head_dim; d_xb = n_kv_heads * head_dim; d_state defaults to head_dim.
    Shapes below: H heads, P head_dim, N d_state, K d_conv.
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
        backend: Backend = "auto",
        device=None,
        dtype=None,
    ):
        super().__init__()
        dims = Mamba2Dims.of(d_model, n_heads, head_dim, n_kv_heads, d_state, d_conv)
        if chunk_size < 1:
            raise ValueError(f"Mamba2Mixer chunk_size={chunk_size} must be >= 1")
        check_backend(backend)
        kw = {"device": device, "dtype": dtype}
        self.dims, self.chunk_size, self.layer_idx, self.backend = dims, chunk_size, layer_idx, backend

        # in_proj rows: [z (d_inner) | x (d_xb) | B (d_B) | C (d_C) | dt (n_heads)]
        self.in_proj = nn.Linear(d_model, dims.d_in_proj, bias=bias, **kw)
        # depthwise causal conv over x|B|C; weight (conv_dim, 1, d_conv)
        self.conv1d = nn.Conv1d(dims.conv_dim, dims.conv_dim, d_conv, groups=dims.conv_dim, padding=d_conv - 1,
                                bias=conv_bias, **kw)
        self.act = nn.SiLU()
        self.dt_bias = nn.Parameter(torch.empty(dims.n_heads, **kw))  # (H,) softplus^-1 of the initial dt
        self.A_log = nn.Parameter(torch.empty(dims.n_heads, **kw))  # (H,) A = -exp(A_log)
        self.D = nn.Parameter(torch.empty(dims.n_heads, **kw))  # (H,) skip connection
        for p in (self.dt_bias, self.A_log, self.D):
            p._no_weight_decay = True
        self.norm = RMSNormGated(dims.d_inner, eps=norm_eps, group_size=dims.head_dim, norm_before_gate=False,
                                 backend=backend, **kw)
        self.out_proj = nn.Linear(dims.d_inner, d_model, bias=bias, **kw)
        self.reset_parameters()

    @classmethod
    def from_dims(cls, dims: Mamba2Dims, **kwargs) -> "Mamba2Mixer":
        """A mixer of the given sizes; kwargs: chunk_size, conv_bias, bias, norm_eps, layer_idx, backend, ..."""
        return cls(dims.d_model, dims.n_heads, dims.head_dim, dims.n_kv_heads, d_state=dims.d_state,
                   d_conv=dims.d_conv, **kwargs)

    @property
    def in_proj_layout(self) -> dict[str, slice]:
        """Row ranges of in_proj's packed output, in order: z, x, B, C, dt (x ~ V, B ~ K, C ~ Q)."""
        return self.dims.in_proj_layout

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

        h = self.dims.n_heads
        for module in (self.in_proj, self.conv1d, self.out_proj):
            fan_in = module.weight[0].numel()  # in_features, or in_channels / groups * kernel
            bound = 1.0 / math.sqrt(fan_in)  # kaiming_uniform(a=sqrt(5)) and the bias bound agree
            fill(module.weight, uniform(module.weight.shape, -bound, bound))
            if module.bias is not None:
                fill(module.bias, uniform(module.bias.shape, -bound, bound))
        dt_min, dt_max, dt_floor = 1e-3, 1e-1, 1e-4
        dt = torch.exp(uniform(h, math.log(dt_min), math.log(dt_max))).clamp(min=dt_floor)
        fill(self.dt_bias, dt + torch.log(-torch.expm1(-dt)))  # inverse softplus
        fill(self.A_log, torch.log(uniform(h, 1.0, 16.0)))
        fill(self.D, torch.ones(h))
        fill(self.norm.weight, torch.ones(self.dims.d_inner))

    # ------------------------------------------------------------------ state
    def allocate_state(self, batch_size: int, device=None, dtype=None) -> Mamba2State:
        """A fresh zero state: conv (B, conv_dim, d_conv) in `dtype` (default: the conv weight's), ssm fp32."""
        device = self.conv1d.weight.device if device is None else device
        dtype = self.conv1d.weight.dtype if dtype is None else dtype
        return Mamba2State.zeros(self.dims, batch_size, device=device, dtype=dtype)

    # ------------------------------------------------------------------ forward
    def _split_xbc(self, xBC: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """(..., conv_dim) -> x (..., H, P), B (..., H, N), C (..., H, N), x and B repeated kv -> heads."""
        d = self.dims
        x, B, C = torch.split(xBC, [d.d_xb, d.d_B, d.d_C], dim=-1)
        x = x.unflatten(-1, (d.n_kv_heads, d.head_dim)).repeat_interleave(d.heads_per_kv, dim=-2)  # (..., H, P)
        B = B.unflatten(-1, (d.n_kv_heads, d.d_state)).repeat_interleave(d.heads_per_kv, dim=-2)  # (..., H, N)
        C = C.unflatten(-1, (d.n_heads, d.d_state))  # (..., H, N)
        return x, B, C

    def _ssm_params(self, dt: Tensor, mask: Tensor | None, like: Tensor) -> tuple[Tensor, Tensor]:
        """dt (..., H) -> softplus(dt + dt_bias) > 0, zero on padding; A = -exp(A_log) (H,) < 0; both fp32."""
        f32 = compute_dtype(like)  # fp32 (fp64 stays fp64)
        dt = F.softplus(dt.to(f32) + self.dt_bias.to(f32))  # (..., H)
        if mask is not None:
            dt = dt * mask.to(f32)  # padding neither decays nor feeds the state
        return dt, -torch.exp(self.A_log.to(f32))  # A in fp32, since a bf16 A_log loses precision

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
            (B, L, d_model); L = 0 gives (B, 0, d_model) and leaves the state as it was.
        """
        b, l, _ = hidden_states.shape
        if l == 0:  # nothing to mix; the fused kernels are not asked about empty sequences
            return hidden_states.new_zeros(b, 0, self.dims.d_model)  # (B, 0, d_model)
        d, ops = self.dims, resolve_ops(self.backend, hidden_states.device)
        mask = None
        if attention_mask is not None:
            mask = attention_mask[:, -l:].to(hidden_states.dtype)[..., None]  # (B, L, 1)
            hidden_states = hidden_states * mask
        if state is not None and l == 1:
            out = self._step(hidden_states, state, mask, ops)
            state.seen_tokens += 1
            return out

        # 1. project: z gate, conv input xBC, dt
        zxbcdt = self.in_proj(hidden_states)  # (B, L, d_in_proj)
        z, xBC, dt = torch.split(zxbcdt, [d.d_inner, d.conv_dim, d.n_heads], dim=-1)
        if mask is not None:
            xBC = xBC * mask  # an in_proj bias must not leak from padding into the conv window

        # 2. causal depthwise conv over x|B|C, then the activation
        history = state.conv if state is not None and state.seen_tokens > 0 else None  # (B, conv_dim, K)
        xBC_t = xBC.transpose(1, 2)  # (B, conv_dim, L)
        conv = ops.conv(xBC_t, self.conv1d.weight.squeeze(1), self.conv1d.bias, history)  # (B, conv_dim, L)
        if state is not None:  # the last d_conv inputs (zero history when fresh)
            old = history if history is not None else xBC_t.new_zeros(d.conv_state_shape(b))
            state.conv.copy_(torch.cat([old.to(xBC_t.dtype), xBC_t], dim=-1)[..., -d.d_conv:])
        xBC = self.act(conv.transpose(1, 2))  # (B, L, conv_dim)
        if mask is not None:
            xBC = xBC * mask

        # 3. SSM inputs: x ~ V, B ~ K, C ~ Q per head; dt > 0; A < 0
        x, B, C = self._split_xbc(xBC)  # (B, L, H, P), (B, L, H, N), (B, L, H, N)
        dt, A = self._ssm_params(dt, mask, hidden_states)  # (B, L, H), (H,)

        # 4. scan (+ D x inside)
        init = state.ssm if state is not None and state.seen_tokens > 0 else None  # (B, H, P, N)
        y, final = ops.scan(x, dt, A, B, C, self.chunk_size, self.D, init)  # (B, L, H, P), (B, H, P, N)
        if state is not None:
            state.ssm.copy_(final)
            state.seen_tokens += l
        y = y.reshape(b, l, d.d_inner)  # (B, L, d_inner)

        # 5. gated norm and output projection
        y = self.norm(y, z)  # (B, L, d_inner)
        return self.out_proj(y)  # (B, L, d_model)

    def step(self, hidden_states: Tensor, state: Mamba2State) -> Tensor:
        """One decode token, no padding: (B, 1, d_model) -> (B, 1, d_model), conv and ssm states updated in
        place; `state.seen_tokens` is left to the caller (the static decode step reads no Python number)."""
        return self._step(hidden_states, state, None, resolve_ops(self.backend, hidden_states.device))

    def _step(self, hidden_states: Tensor, state: Mamba2State, mask: Tensor | None, ops) -> Tensor:
        """One decode token: (B, 1, d_model) -> (B, 1, d_model); conv and ssm states updated in place."""
        b, d = hidden_states.shape[0], self.dims
        step_mask = None if mask is None else mask[:, 0]  # (B, 1)
        zxbcdt = self.in_proj(hidden_states[:, 0])  # (B, d_in_proj)
        z, xBC, dt = torch.split(zxbcdt, [d.d_inner, d.conv_dim, d.n_heads], dim=-1)
        if step_mask is not None:
            xBC = xBC * step_mask
        xBC = ops.conv_step(xBC, state.conv, self.conv1d.weight.squeeze(1), self.conv1d.bias)  # (B, conv_dim)
        xBC = self.act(xBC)
        if step_mask is not None:
            xBC = xBC * step_mask
        x, B, C = self._split_xbc(xBC)  # (B, H, P), (B, H, N), (B, H, N)
        dt, A = self._ssm_params(dt, step_mask, hidden_states)  # (B, H), (H,)
        y = ops.scan_step(state.ssm, x, dt, A, B, C, self.D)  # (B, H, P)
        y = self.norm(y.reshape(b, 1, d.d_inner), z[:, None])  # (B, 1, d_inner)
        return self.out_proj(y)  # (B, 1, d_model)

    def extra_repr(self) -> str:
        d = self.dims
        return (f"d_model={d.d_model}, n_heads={d.n_heads}, head_dim={d.head_dim}, n_kv_heads={d.n_kv_heads}, "
                f"d_state={d.d_state}, d_conv={d.d_conv}, chunk_size={self.chunk_size}, layer_idx={self.layer_idx}, "
                f"backend={self.backend!r}")
