"""Decode speed and memory benchmarks of the hybrid decoders: the bandwidth bound computed from a
config (`bound`), the models compared (`models`), the decode sweep (`decode`), the one-layer decode step
against context length (`layer_step`) and the figures (`plots`). Entry point: scripts/bench_decode.py."""

from .bound import bound_speed_ratio, decode_bytes, param_count, run_bound_speed_ratio
from .decode import DecodeBenchSpec, run_decode_benchmark

__all__ = ["DecodeBenchSpec", "bound_speed_ratio", "decode_bytes", "param_count", "run_bound_speed_ratio",
           "run_decode_benchmark"]
