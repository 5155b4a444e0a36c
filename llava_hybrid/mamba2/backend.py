"""The Mamba-2 kernels, as one op table: the project's PyTorch ops (`torch`, everywhere) or the fused
CUDA kernels (`cuda`, only where mamba_ssm imports and the tensors are on CUDA): mamba_ssm's Triton SSD
scan, state update and gated norm, with causal_conv1d's conv when it imports (the PyTorch conv otherwise).

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
INSTALL_HINT = ("install the GPU extra with `pip install -e .[gpu]` (mamba-ssm, and causal-conv1d for the fused "
                "conv; both built for your CUDA)")


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
_cuda_table: Mamba2Ops | None = None
_cuda_tried = False
cuda_conv_source: str | None = None  # "causal_conv1d" or "torch" once the CUDA table is loaded


def _import_mamba_triton():
    """mamba_ssm's Mamba-2 Triton modules (ssd_combined, selective_state_update, layernorm_gated).

    `mamba_ssm/__init__.py` imports the Mamba-1 CUDA extension `selective_scan_cuda` and the model classes
    unconditionally; an install made with MAMBA_SKIP_CUDA_BUILD=TRUE has no such extension although the
    Mamba-2 kernels (pure Triton) work. When the package import fails and the package is installed, its
    submodules are imported with the package's `__init__` skipped (a bare package module over the same
    directory), which is logged; nothing of Mamba-1 is imported or replaced."""
    import importlib
    import importlib.util
    import sys
    import types

    names = ("ssd_combined", "selective_state_update", "layernorm_gated")
    try:
        import mamba_ssm  # noqa: F401
    except Exception as e:  # ImportError of selective_scan_cuda, or a model class that fails to import
        spec = importlib.util.find_spec("mamba_ssm") if "mamba_ssm" not in sys.modules else None
        if spec is None or not spec.submodule_search_locations:
            raise
        package = types.ModuleType("mamba_ssm")
        package.__path__ = list(spec.submodule_search_locations)
        package.__spec__ = spec
        sys.modules["mamba_ssm"] = package
        logger.info("llava_hybrid: `import mamba_ssm` failed (%s); its Mamba-2 Triton kernels are imported "
                    "from %s without the package __init__", e, package.__path__[0])
    return [importlib.import_module(f"mamba_ssm.ops.triton.{name}") for name in names]


def _load_cuda_ops() -> Mamba2Ops | None:
    """Import the optional kernels once and wrap them in the table's signatures; None (reason kept) if absent.

    mamba_ssm's Triton kernels are required (SSD scan, state update, gated norm); causal_conv1d's CUDA conv
    is used when it imports, else the project's PyTorch conv (the same op signatures, on CUDA tensors)."""
    global _import_error, _cuda_table, _cuda_tried, cuda_conv_source
    if _cuda_tried:
        return _cuda_table
    _cuda_tried = True
    try:
        ssd_combined, state_update, layernorm_gated = _import_mamba_triton()
    except Exception as e:  # ImportError, or an OSError / RuntimeError from a broken CUDA build
        _import_error = f"{type(e).__name__}: {e}"
        return None
    mamba_chunk_scan_combined = ssd_combined.mamba_chunk_scan_combined
    selective_state_update = state_update.selective_state_update
    rmsnorm_fn = layernorm_gated.rmsnorm_fn
    try:
        from causal_conv1d import causal_conv1d_fn, causal_conv1d_update
    except Exception as e:
        logger.info("llava_hybrid: causal_conv1d unavailable (%s: %s); the cuda backend uses the PyTorch conv",
                    type(e).__name__, e)
        conv, conv_step, cuda_conv_source = causal_conv1d, causal_conv1d_step, "torch"
    else:
        cuda_conv_source = "causal_conv1d"

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

    _cuda_table = Mamba2Ops("cuda", conv=conv, conv_step=conv_step, scan=scan, scan_step=scan_step,
                            gated_norm=gated_norm)
    return _cuda_table


def cuda_import_error() -> str | None:
    """Why the CUDA kernels could not be imported (None if they were, or were never tried)."""
    _load_cuda_ops()
    return _import_error


def cuda_ops() -> Mamba2Ops:
    """The CUDA table; raises ValueError with the install hint when the kernels cannot be imported."""
    ops = _cuda_table if _cuda_tried else _load_cuda_ops()
    if ops is None:
        raise ValueError(f"mamba_backend='cuda' needs mamba_ssm ({_import_error}); {INSTALL_HINT}")
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
    """The op table for tensors on `device`: a given table as it is, else TORCH_OPS or the CUDA table.

    Inside torch.compile the choice is made once, while tracing, and is a constant of the graph (a later
    change of LLAVA_HYBRID_MAMBA_BACKEND applies to eager calls and to new compilations)."""
    if isinstance(backend, Mamba2Ops):
        return backend
    return cuda_ops() if _resolved_name(backend, device) == "cuda" else TORCH_OPS


@torch.compiler.assume_constant_result
def _resolved_name(backend: str, device) -> str:
    """resolve_backend, run eagerly even while torch.compile traces (it reads the environment and logs)."""
    return resolve_backend(backend, device)


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
        chosen, why = "cuda", f"auto: mamba_ssm available (conv: {cuda_conv_source})"
    logger.info("llava_hybrid Mamba-2 backend: %s (%s)", chosen, why)
    return chosen
