"""One decode step of ONE layer's token mixer against the context length L: a Mamba-2 mixer step (reads its
fixed-size state) vs an attention layer (q/k/v/dense projections + reading a KV cache of L tokens).

The attention layer is timed with a HybridCache of one attention layer whose `length` is set to L: the
step writes its K/V at position L and attends over L + 1 keys; the length is not advanced, so every
repeat sees the same L. The Mamba step runs on a state already filled by a short prefill.
"""

from __future__ import annotations

import statistics
import time

import torch

from llava_hybrid.hybrid import HybridCache
from llava_hybrid.hybrid.modeling_base import build_mamba_mixer
from llava_hybrid.hybrid.modeling_phi import PhiHybridAttention

from .decode import TIMERS
from .models import shape_config


def _median_seconds(fn, warmup: int, repeats: int, device, now=time.perf_counter) -> tuple[float, list[float]]:
    """(median, all) seconds (by the clock `now`) of fn() after `warmup` calls, the device synchronised around each."""
    cuda = torch.device(device).type == "cuda"
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        if cuda:
            torch.cuda.synchronize()
        start = now()
        fn()
        if cuda:
            torch.cuda.synchronize()
        times.append(now() - start)
    return statistics.median(times), times


@torch.inference_mode()
def run_layer_step_benchmark(shape: str = "phi2", lengths=(256, 1024, 4096, 16384), batch: int = 1,
                             dtype: torch.dtype = torch.float32, device="cpu", warmup: int = 2,
                             repeats: int = 10, seed: int = 0, timer: str = "wall") -> list[dict]:
    """Rows {"layer": "mamba"|"attention", "context_len", "median_s", "times_s"} of one decode step of one
    layer of `shape` (models.SHAPES) at each context length (the Mamba row is measured once per length
    too, interleaved with the attention one, so machine load hits both alike). timer: "wall" or "cpu"
    (process CPU time, see decode.TIMERS)."""
    torch.manual_seed(seed)
    config = shape_config(shape, 0.0, max(lengths) + 1)
    config.mamba_layers = [0]  # layer 0 as Mamba for the mixer's shape; the attention below is layer 1
    with torch.device(device):
        mamba = build_mamba_mixer(config, 0).to(dtype).eval()
        attention = PhiHybridAttention(config, 1).to(dtype).eval()
    attention_config = shape_config(shape, 0.0, max(lengths) + 1)
    attention_config.num_hidden_layers = 2  # cache for layers 0, 1; only layer 1's KV is used
    x = torch.randn(batch, 1, config.hidden_size, device=device, dtype=dtype)  # (B, 1, D)

    state = mamba.allocate_state(batch)
    mamba(torch.randn(batch, 8, config.hidden_size, device=device, dtype=dtype), state=state)  # prefill 8 tokens
    rows = []
    for length in lengths:
        cache = HybridCache(attention_config, batch, length + 1, device=device, dtype=dtype)
        for key, value in cache.kv.values():
            key.normal_()
            value.normal_()
        cache.length = length  # L cached tokens; the step writes position L and reads L + 1 keys
        positions = torch.full((batch, 1), length, device=device)
        steps = {"attention": lambda: attention(x, None, positions, cache), "mamba": lambda: mamba(x, state=state)}
        for layer, fn in steps.items():
            median, times = _median_seconds(fn, warmup, repeats, device, TIMERS[timer])
            rows.append({"layer": layer, "context_len": length, "batch": batch, "median_s": median, "times_s": times})
        del cache
    return rows
