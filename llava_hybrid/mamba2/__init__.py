"""Mamba-2 mixer (MaTVLM's replacement for attention) with pure-PyTorch SSD kernels and optional
mamba_ssm / causal_conv1d CUDA kernels (see backend.py)."""
from .backend import BACKENDS, ENV_VAR, resolve_backend
from .mixer import Mamba2Mixer, Mamba2State
from .ops import RMSNormGated, causal_conv1d, causal_conv1d_step
from .ssd import segsum, ssd_chunked, ssd_sequential, ssd_step

__all__ = [
    "BACKENDS", "ENV_VAR", "resolve_backend",
    "Mamba2Mixer", "Mamba2State",
    "RMSNormGated", "causal_conv1d", "causal_conv1d_step",
    "segsum", "ssd_chunked", "ssd_sequential", "ssd_step",
]
