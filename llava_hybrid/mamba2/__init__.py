"""Mamba-2 mixer (MaTVLM's replacement for attention): its sizes (dims.py), pure-PyTorch SSD kernels, and
one op table that runs them or the optional mamba_ssm / causal_conv1d CUDA kernels (backend.py)."""
from .backend import BACKENDS, ENV_VAR, TORCH_OPS, Mamba2Ops, resolve_backend, resolve_ops
from .dims import Mamba2Dims
from .mixer import Mamba2Mixer, Mamba2State, RMSNormGated
from .ops import causal_conv1d, causal_conv1d_step, rms_norm_gated
from .ssd import segsum, ssd_chunked, ssd_sequential, ssd_step

__all__ = [
    "BACKENDS", "ENV_VAR", "TORCH_OPS", "Mamba2Ops", "resolve_backend", "resolve_ops",
    "Mamba2Dims",
    "Mamba2Mixer", "Mamba2State", "RMSNormGated",
    "causal_conv1d", "causal_conv1d_step", "rms_norm_gated",
    "segsum", "ssd_chunked", "ssd_sequential", "ssd_step",
]
