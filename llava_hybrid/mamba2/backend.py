"""The Mamba-2 kernels, as one op table: the project's PyTorch ops (`torch`, everywhere) or the fused
CUDA kernels of mamba_ssm + causal_conv1d (`cuda`, only where both import and the tensors are on CUDA).

One signature per op, whatever runs it (b batch, l length, d = conv_dim channels, k = d_conv, h heads,
p head_dim, g B/C groups, n d_state):

    conv(x (b, d, l), weight (d, k), bias (d,) | None, initial_state (b, d, k) | None) -> (b, d, l)
    conv_step(x (b, d), conv_state (b, d, k) rolled in place, weight, bias) -> (b, d)
    scan(x (b, l, h, p), dt (b, l, h), A (h,), B (b, l, g, n), C (b, l, g, n), chunk_size, D (h,) | None,
         initial_state (b, h, p, n) | None) -> y (b, l, h, p), final state (b, h, p, n) fp32
    scan_step(state (b, h, p, n) fp32 in place, x (b, h, p), dt (b, h), A, B (b, g, n), C (b, g, n), D) -> (b, h, p)
    gated_norm(x (..., e), z (..., e) | None, weight (e,), eps, group_size, norm_before_gate) -> (..., e)

The conv outputs are pre-activation (the mixer applies SiLU). The torch twins live in ops.py and ssd.py;
the optional packages are imported here and nowhere else, lazily, once per process, and a failed import
is remembered with its message so a request for `cuda` can say exactly why it cannot run.

Selection: the mixer argument / config field `mamba_backend` in {auto, torch, cuda}, overridden by the
environment variable LLAVA_HYBRID_MAMBA_BACKEND; `auto` picks `cuda` when it can run, else `torch`.
Resolved once per (request, device type). A `Mamba2Ops` table passed as the backend is used as it is
(e.g. a torch table with one op replaced: `dataclasses.replace(TORCH_OPS, scan=my_scan)`).
"""
from __future__ import annotations

import functools
import logging
import os
from dataclasses import dataclass
from typing import Callable, Union

import torch

from .ops import causal_conv1d, causal_conv1d_step, rms_norm_gated
from .ssd import ssd_chunked, ssd_step

__all__ = ["BACKENDS", "ENV_VAR", "Mamba2Ops", "TORCH_OPS", "cuda_import_error", "cuda_ops", "resolve_backend",
           "resolve_ops"]

logger = logging.getLogger(__name__)

BACKENDS = ("auto", "torch", "cuda")
ENV_VAR = "LLAVA_HYBRID_MAMBA_BACKEND"
INSTALL_HINT = "install the GPU extra with `pip install -e .[gpu]` (mamba-ssm and causal-conv1d, built for your CUDA)"


@dataclass(frozen=True)
class Mamba2Ops:
    """The five ops the mixer calls (signatures in the module docstring)."""

    name: str
    conv: Callable
    conv_step: Callable
    scan: Callable
    scan_step: Callable
    gated_norm: Callable


TORCH_OPS = Mamba2Ops("torch", conv=causal_conv1d, conv_step=causal_conv1d_step, scan=ssd_chunked,
                      scan_step=ssd_step, gated_norm=rms_norm_gated)

Backend = Union[str, Mamba2Ops]
_import_error: str | None = None


@functools.lru_cache(maxsize=1)
def _load_cuda_ops() -> Mamba2Ops | None:
    """Import the optional kernels once and wrap them in the table's signatures; None (reason kept) if absent."""
    global _import_error
    try:
        from causal_conv1d import causal_conv1d_fn, causal_conv1d_update
        from mamba_ssm.ops.triton.layernorm_gated import rmsnorm_fn
        from mamba_ssm.ops.triton.selective_state_update import selective_state_update
        from mamba_ssm.ops.triton.ssd_combined import mamba_chunk_scan_combined
    except Exception as e:  # ImportError, or an OSError / RuntimeError from a broken CUDA build
        _import_error = f"{type(e).__name__}: {e}"
        return None

    def conv(x, weight, bias=None, initial_state=None):
        if initial_state is not None:  # a prefill continuing a cached state: the PyTorch conv reads it
            return causal_conv1d(x, weight, bias, initial_state)
        return causal_conv1d_fn(x.contiguous(), weight, bias, activation=None)

    def conv_step(x, conv_state, weight, bias=None):
        return causal_conv1d_update(x.contiguous(), conv_state, weight, bias, activation=None)

    def scan(x, dt, A, B, C, chunk_size, D=None, initial_state=None):
        if chunk_size & (chunk_size - 1):
            raise ValueError(f"mamba_chunk_size={chunk_size} must be a power of two for the cuda backend (Triton)")
        return mamba_chunk_scan_combined(x, dt, A, B, C, chunk_size, D=D, initial_states=initial_state,
                                         return_final_states=True)

    def scan_step(state, x, dt, A, B, C, D=None):
        _, h, p, n = state.shape
        return selective_state_update(state, x, dt[..., None].expand(-1, h, p), A[:, None, None].expand(h, p, n),
                                      B, C, D=None if D is None else D[:, None].expand(h, p))

    def gated_norm(x, z, weight, eps, group_size, norm_before_gate):
        return rmsnorm_fn(x, weight, None, z=z, eps=eps, group_size=group_size, norm_before_gate=norm_before_gate)

    return Mamba2Ops("cuda", conv=conv, conv_step=conv_step, scan=scan, scan_step=scan_step, gated_norm=gated_norm)


def cuda_import_error() -> str | None:
    """Why the CUDA kernels could not be imported (None if they were, or were never tried)."""
    _load_cuda_ops()
    return _import_error


def cuda_ops() -> Mamba2Ops:
    """The CUDA table; raises ValueError with the install hint when the kernels cannot be imported."""
    ops = _load_cuda_ops()
    if ops is None:
        raise ValueError(f"mamba_backend='cuda' needs mamba_ssm and causal_conv1d ({_import_error}); {INSTALL_HINT}")
    return ops


def check_backend(backend: Backend) -> None:
    """ValueError for a backend that is neither a table nor one of BACKENDS (checked at construction)."""
    if not isinstance(backend, Mamba2Ops) and backend not in BACKENDS:
        raise ValueError(f"mamba_backend={backend!r} is not one of {BACKENDS}")


def _requested(backend: str) -> str:
    """The effective request: the environment variable wins over the argument."""
    env = os.environ.get(ENV_VAR, "").strip().lower()
    if env:
        if env not in BACKENDS:
            raise ValueError(f"{ENV_VAR}={env!r} is not one of {BACKENDS}")
        return env
    check_backend(backend)
    return backend


def resolve_backend(backend: str = "auto", device: torch.device | str | None = None) -> str:
    """Resolve a backend request for tensors on `device` to "torch" or "cuda".

    Args:
        backend: "auto" | "torch" | "cuda" (the mixer arg / config field `mamba_backend`);
            LLAVA_HYBRID_MAMBA_BACKEND, when set, overrides it.
        device: where the tensors live (None means CPU).
    Raises:
        ValueError: an unknown name, or "cuda" where it cannot run (says why and what to install).
    """
    device_type = torch.device(device).type if device is not None else "cpu"
    return _resolve(_requested(backend), device_type)


def resolve_ops(backend: Backend = "auto", device: torch.device | str | None = None) -> Mamba2Ops:
    """The op table for tensors on `device`: a given table as it is, else TORCH_OPS or the CUDA table."""
    if isinstance(backend, Mamba2Ops):
        return backend
    return cuda_ops() if resolve_backend(backend, device) == "cuda" else TORCH_OPS


@functools.lru_cache(maxsize=None)
def _resolve(requested: str, device_type: str) -> str:
    """Cached per (request, device type) so the INFO line is logged once per choice per process."""
    if requested == "torch":
        chosen, why = "torch", "requested"
    elif requested == "cuda":
        if device_type != "cuda":
            raise ValueError(
                f"mamba_backend='cuda' needs CUDA tensors, but the mixer runs on {device_type!r}; "
                f"use mamba_backend='torch' or 'auto' there (on a GPU machine, {INSTALL_HINT})"
            )
        cuda_ops()  # raises with the import error and the install hint
        chosen, why = "cuda", "requested"
    elif device_type != "cuda":
        chosen, why = "torch", f"auto: tensors on {device_type}"
    elif _load_cuda_ops() is None:
        chosen, why = "torch", f"auto: CUDA kernels unavailable ({_import_error}); {INSTALL_HINT} for speed"
    else:
        chosen, why = "cuda", "auto: mamba_ssm and causal_conv1d available"
    logger.info("llava_hybrid Mamba-2 backend: %s (%s)", chosen, why)
    return chosen
