"""Mamba-2 state-space duality (SSD) in plain PyTorch.

The selective SSM with scalar-times-identity A, per head h:

    h_t = exp(dt_t * A) * h_{t-1} + dt_t * x_t B_t^T        # state (P, N)
    y_t = h_t C_t + D * x_t                                 # (P,)

Three ways of computing it live here, all with the same shapes:
  * `ssd_chunked`: the SSD block decomposition (quadratic inside chunks, linear across them),
    the fast path on CPU and the reference for the CUDA kernel;
  * `ssd_sequential`: the recurrence above, one time step at a time (the test oracle);
  * `ssd_step`: one token of decoding, updating the state in place.

Shapes: b batch, l length, h heads, p head dim, g groups of B/C (h % g == 0, head i reads group
i // (h // g)), n state dim, c chunks, s chunk length. States are (b, h, p, n) fp32.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["compute_dtype", "segsum", "ssd_chunked", "ssd_sequential", "ssd_step"]


def _check_shapes(x: Tensor, dt: Tensor, A: Tensor, B: Tensor, C: Tensor, D: Tensor | None,
                  state: Tensor | None = None) -> int:
    """Validate the shared SSD input shapes (ValueError naming the argument); returns heads per group."""
    if x.dim() != 4 or B.dim() != 4:
        raise ValueError(f"x must be (b, l, h, p) and B, C (b, l, g, n); got x {tuple(x.shape)}, B {tuple(B.shape)}")
    b, l, h, p = x.shape
    g, n = B.shape[-2:]
    expected = {"dt": (dt, (b, l, h)), "A": (A, (h,)), "B": (B, (b, l, g, n)), "C": (C, (b, l, g, n))}
    if D is not None:
        expected["D"] = (D, (h,))
    if state is not None:
        expected["initial_state"] = (state, (b, h, p, n))
    for name, (t, shape) in expected.items():
        if tuple(t.shape) != shape:
            raise ValueError(f"{name} has shape {tuple(t.shape)}, expected {shape}")
    if h % g != 0:
        raise ValueError(f"heads ({h}) must be a multiple of the B/C groups ({g})")
    return h // g


def compute_dtype(t: Tensor) -> torch.dtype:
    """fp32 for half / bf16 / fp32 inputs; fp64 stays fp64 (gradcheck)."""
    return torch.float64 if t.dtype == torch.float64 else torch.float32


def segsum(a: Tensor) -> Tensor:
    """Stable segment sums: out[..., i, j] = a[..., j+1] + ... + a[..., i] for i >= j, else -inf.

    a: (..., s) -> (..., s, s). Built as a masked cumsum of a repeated row, never as a difference
    of two long cumsums, so no precision is lost and exp() of it is exp of a sum of non-positive
    terms (dt * A <= 0), never of a large positive number.
    """
    s = a.shape[-1]
    a = a[..., None, :].expand(*a.shape, s).transpose(-1, -2)  # (..., s, s): a[..., i, j] = a_i
    strict_lower = torch.tril(torch.ones(s, s, dtype=torch.bool, device=a.device), diagonal=-1)
    a = a.masked_fill(~strict_lower, 0.0)  # keep a_i only for i > j
    out = torch.cumsum(a, dim=-2)  # (..., s, s): sum_{k=j+1..i} a_k
    lower = torch.tril(torch.ones(s, s, dtype=torch.bool, device=a.device), diagonal=0)
    return out.masked_fill(~lower, float("-inf"))


def ssd_chunked(
    x: Tensor,
    dt: Tensor,
    A: Tensor,
    B: Tensor,
    C: Tensor,
    chunk_size: int = 64,
    D: Tensor | None = None,
    initial_state: Tensor | None = None,
) -> tuple[Tensor, Tensor]:
    """Chunked SSD scan of any length.

    Args:
        x: (b, l, h, p) inputs.
        dt: (b, l, h) step sizes, already positive (softplus(dt + dt_bias)).
        A: (h,) negative decay rates.
        B, C: (b, l, g, n) input / output projections, g dividing h.
        chunk_size: chunk length s; the sequence is zero-padded to a multiple of it (padding has
            dt = 0, so it neither decays nor feeds the state).
        D: (h,) skip connection, or None.
        initial_state: (b, h, p, n) state before the first token, or None for zeros.
    Returns:
        y (b, l, h, p) in x's dtype, final_state (b, h, p, n) fp32 (l = 0: y is empty and the final
        state is the initial one).
    """
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")
    r = _check_shapes(x, dt, A, B, C, D, initial_state)
    b, l, h, p = x.shape
    g, n = B.shape[-2:]
    out_dtype, f32 = x.dtype, compute_dtype(x)
    s = chunk_size
    pad = (-l) % s
    c = (l + pad) // s

    # 0. fp32 (fp64 stays fp64), pad to whole chunks, cut into chunks, and lay every tensor out head-major
    #    (b, c, g, r, s, .) once, so that each step below is a plain batched matmul with no hidden copies
    def chunks(t: Tensor) -> Tensor:
        t = t.to(f32)
        if pad:
            t = F.pad(t, (0, 0) * (t.dim() - 2) + (0, pad))  # pad the length axis (dim 1)
        return t.reshape(b, c, s, *t.shape[2:])

    dtc = chunks(dt).reshape(b, c, s, g, r).permute(0, 1, 3, 4, 2)  # (b, c, g, r, s)
    xdt = (chunks(x).reshape(b, c, s, g, r, p).permute(0, 1, 3, 4, 2, 5)
           * dtc[..., None]).contiguous()  # (b, c, g, r, s, p): dt_s x_s
    Bc = chunks(B).permute(0, 1, 3, 2, 4)  # (b, c, g, s, n)
    Cc = chunks(C).permute(0, 1, 3, 2, 4)  # (b, c, g, s, n)
    dA = dtc * A.to(f32).reshape(g, r, 1)  # (b, c, g, r, s), <= 0
    dA_cum = torch.cumsum(dA, dim=-1)  # (b, c, g, r, s)

    # 1. intra-chunk (diagonal blocks): y_l = sum_{s<=l} C_l.B_s exp(dA_{s+1..l}) dt_s x_s
    CB = Cc @ Bc.transpose(-1, -2)  # (b, c, g, l, s)
    scores = CB[:, :, :, None] * torch.exp(segsum(dA))  # (b, c, g, r, l, s)
    y = scores @ xdt  # (b, c, g, r, l, p)
    del scores, CB  # free as we go: the peak stays a few (b, l, h, p)-sized tensors

    # 2. chunk states: the state each chunk leaves behind when it starts from zero (kept as (n, p))
    decay_to_end = torch.exp(dA_cum[..., -1:] - dA_cum)  # (b, c, g, r, s), exponents <= 0
    B_decayed = Bc[:, :, :, None] * decay_to_end[..., None]  # (b, c, g, r, s, n)
    states = B_decayed.transpose(-1, -2) @ xdt  # (b, c, g, r, n, p)
    del B_decayed, decay_to_end, xdt, Bc

    # 3. inter-chunk state passing: a linear recurrence over chunks, state before chunk k
    if initial_state is None:
        running = x.new_zeros(b, g, r, n, p, dtype=f32)
    else:
        running = initial_state.to(f32).reshape(b, g, r, p, n).transpose(-1, -2)  # (b, g, r, n, p)
    chunk_decay = torch.exp(dA_cum[..., -1])  # (b, c, g, r)
    prev_states = []
    for k in range(c):
        prev_states.append(running)
        running = chunk_decay[:, k, :, :, None, None] * running + states[:, k]  # (b, g, r, n, p)
    prev = torch.stack(prev_states, dim=1) if c else running[:, None][:, :0]  # (b, c, g, r, n, p); c = 0: l = 0
    del prev_states, states
    final_state = running.transpose(-1, -2).reshape(b, h, p, n)

    # 4. state -> output: y_l += exp(dA_{1..l}) C_l . state_before_chunk
    C_decayed = Cc[:, :, :, None] * torch.exp(dA_cum)[..., None]  # (b, c, g, r, l, n)
    y = y + C_decayed @ prev  # (b, c, g, r, l, p)
    y = y.permute(0, 1, 4, 2, 3, 5)  # (b, c, l, g, r, p)

    y = y.reshape(b, c * s, h, p)[:, :l]  # (b, l, h, p)
    if D is not None:
        y = y + D.to(f32)[:, None] * x.to(f32)
    return y.to(out_dtype), final_state


def ssd_sequential(
    x: Tensor,
    dt: Tensor,
    A: Tensor,
    B: Tensor,
    C: Tensor,
    chunk_size: int = 64,
    D: Tensor | None = None,
    initial_state: Tensor | None = None,
) -> tuple[Tensor, Tensor]:
    """The SSM recurrence one time step at a time (test oracle); same signature as `ssd_chunked`.

    `chunk_size` is accepted and ignored so both functions are interchangeable.
    Returns y (b, l, h, p) in x's dtype and the final state (b, h, p, n) fp32.
    """
    _check_shapes(x, dt, A, B, C, D, initial_state)
    b, l, h, p = x.shape
    n = B.shape[-1]
    if initial_state is None:
        state = x.new_zeros(b, h, p, n, dtype=compute_dtype(x))
    else:
        state = initial_state.to(compute_dtype(x)).clone()
    ys = []
    for t in range(l):
        ys.append(ssd_step(state, x[:, t], dt[:, t], A, B[:, t], C[:, t], D))
    y = torch.stack(ys, dim=1) if ys else x.new_zeros(b, 0, h, p)  # (b, l, h, p)
    return y, state


def ssd_step(
    state: Tensor, x: Tensor, dt: Tensor, A: Tensor, B: Tensor, C: Tensor, D: Tensor | None = None
) -> Tensor:
    """One recurrent step; updates `state` in place.

    Args:
        state: (b, h, p, n) fp32 (fp64 allowed), modified in place.
        x: (b, h, p); dt: (b, h) positive; A: (h,) negative; B, C: (b, g, n); D: (h,) or None.
    Returns:
        y: (b, h, p) in x's dtype.
    """
    f32 = state.dtype
    assert f32 in (torch.float32, torch.float64), f"SSM state must be fp32, got {f32}"
    h = x.shape[1]
    r = h // B.shape[1]
    Bh = B.to(f32).repeat_interleave(r, dim=1)  # (b, h, n)
    Ch = C.to(f32).repeat_interleave(r, dim=1)  # (b, h, n)
    xf, dtf = x.to(f32), dt.to(f32)
    dA = torch.exp(dtf * A.to(f32))  # (b, h)
    state.mul_(dA[..., None, None]).add_((dtf[..., None] * xf)[..., None] * Bh[:, :, None, :])  # (b, h, p, n)
    y = torch.einsum("bhpn,bhn->bhp", state, Ch)  # (b, h, p)
    if D is not None:
        y = y + D.to(f32)[:, None] * xf
    return y.to(x.dtype)
