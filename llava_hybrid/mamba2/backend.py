"""Which Mamba-2 kernels run: the project's PyTorch ops (`torch`, everywhere) or the fused CUDA
kernels of mamba_ssm + causal_conv1d (`cuda`, only when both import and the tensors are on CUDA).

The optional packages are imported here and nowhere else, lazily, once per process; a failed
import is remembered with its message so a request for `cuda` can say exactly why it cannot run.

Selection: the mixer argument / config field `mamba_backend` in {auto, torch, cuda}, overridden by
the environment variable LLAVA_HYBRID_MAMBA_BACKEND. `auto` picks `cuda` when it can run, else `torch`.
"""
from __future__ import annotations

import functools
import logging
import os
from dataclasses import dataclass
from typing import Callable

import torch

__all__ = ["BACKENDS", "ENV_VAR", "CudaKernels", "cuda_kernels", "cuda_import_error", "resolve_backend"]

logger = logging.getLogger(__name__)

BACKENDS = ("auto", "torch", "cuda")
ENV_VAR = "LLAVA_HYBRID_MAMBA_BACKEND"
INSTALL_HINT = "install the GPU extra with `pip install -e .[gpu]` (mamba-ssm and causal-conv1d, built for your CUDA)"


@dataclass(frozen=True)
class CudaKernels:
    """The fused kernels the mixer uses on the `cuda` backend."""

    mamba_chunk_scan_combined: Callable  # (x, dt, A, B, C, chunk_size, D=, initial_states=, return_final_states=)
    selective_state_update: Callable  # (state, x, dt, A, B, C, D=) one decode step, state in place
    rmsnorm_fn: Callable  # (x, weight, bias, z=, eps=, group_size=, norm_before_gate=)
    causal_conv1d_fn: Callable  # (x (b, d, l), weight (d, k), bias, activation=None)
    causal_conv1d_update: Callable  # (x (b, d), conv_state (b, d, k), weight, bias, activation=None)


_import_error: str | None = None


@functools.lru_cache(maxsize=1)
def _load_cuda_kernels() -> CudaKernels | None:
    """Import the optional kernels once; None (with the reason remembered) when unavailable."""
    global _import_error
    try:
        from causal_conv1d import causal_conv1d_fn, causal_conv1d_update
        from mamba_ssm.ops.triton.layernorm_gated import rmsnorm_fn
        from mamba_ssm.ops.triton.selective_state_update import selective_state_update
        from mamba_ssm.ops.triton.ssd_combined import mamba_chunk_scan_combined
    except Exception as e:  # ImportError, or an OSError / RuntimeError from a broken CUDA build
        _import_error = f"{type(e).__name__}: {e}"
        return None
    return CudaKernels(mamba_chunk_scan_combined, selective_state_update, rmsnorm_fn,
                       causal_conv1d_fn, causal_conv1d_update)


def cuda_import_error() -> str | None:
    """Why the CUDA kernels could not be imported (None if they were, or were never tried)."""
    _load_cuda_kernels()
    return _import_error


def cuda_kernels() -> CudaKernels:
    """The CUDA kernels; raises ValueError with the install hint when they cannot be imported."""
    kernels = _load_cuda_kernels()
    if kernels is None:
        raise ValueError(f"mamba_backend='cuda' needs mamba_ssm and causal_conv1d ({_import_error}); {INSTALL_HINT}")
    return kernels


def _requested(backend: str) -> str:
    """The effective request: the environment variable wins over the argument."""
    env = os.environ.get(ENV_VAR, "").strip().lower()
    if env:
        if env not in BACKENDS:
            raise ValueError(f"{ENV_VAR}={env!r} is not one of {BACKENDS}")
        return env
    if backend not in BACKENDS:
        raise ValueError(f"mamba_backend={backend!r} is not one of {BACKENDS}")
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
    requested = _requested(backend)
    device_type = torch.device(device).type if device is not None else "cpu"
    return _resolve(requested, device_type)


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
        cuda_kernels()  # raises with the import error and the install hint
        chosen, why = "cuda", "requested"
    elif device_type != "cuda":
        chosen, why = "torch", f"auto: tensors on {device_type}"
    elif _load_cuda_kernels() is None:
        chosen, why = "torch", f"auto: CUDA kernels unavailable ({_import_error}); {INSTALL_HINT} for speed"
    else:
        chosen, why = "cuda", "auto: mamba_ssm and causal_conv1d available"
    logger.info("llava_hybrid Mamba-2 backend: %s (%s)", chosen, why)
    return chosen
