"""Decode speed and memory: the teacher shape against hybrids of the same shape (MaTVLM Fig. 1b / 1c).

For every model, engine, batch and generated length one row:
    engine "same"         the project's one decode loop (llava_hybrid.hybrid.generate_tokens, pre-allocated
                          KV for attention layers, fixed Mamba states), for the teacher and every hybrid
    engine "hf_generate"  the teacher's weights in stock transformers `PhiForCausalLM.generate` (the paper's
                          baseline: a KV cache grown every step)
Protocol: a short random prompt, eos disabled, greedy. decode tokens/s = (T - 1) / (t(T) - t(1)), where
t(n) is the wall time of a generate call producing n tokens: the prefill and the cache allocation cancel.
Memory: CUDA `max_memory_allocated` over the T-token call; on CPU the tensor accounting of weights + cache
(HybridCache.nbytes() on the meta device, or the DynamicCache that generate returned) and the process peak
RSS. A CUDA out-of-memory is caught and recorded (`oom: true`); longer lengths of that model, engine and
batch are then recorded as OOM without running.
"""

from __future__ import annotations

import gc
import resource
import time
from dataclasses import dataclass

import torch

from llava_hybrid.hybrid import HybridCache, generate_tokens

from .bound import decode_bytes, run_bound_speed_ratio
from .models import DTYPES, build_model, model_name, shape_config, to_transformers_phi, weight_bytes


@dataclass
class DecodeBenchSpec:
    """What to run: one entry per CLI flag of scripts/bench_decode.py."""

    device: str = "cpu"
    shape: str = "small"  # models.SHAPES key
    dtype: str = "fp32"  # fp32 | fp16 | bf16
    ratios: tuple[float, ...] = (0.125, 0.25, 0.5)  # hybrids; the teacher (0) is always run
    gen_lens: tuple[int, ...] = (128, 256, 512, 1024, 2048)
    batches: tuple[int, ...] = (1,)
    prompt_len: int = 16
    engines: tuple[str, ...] = ("same", "hf_generate")
    seed: int = 0


def _sync(device) -> None:
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()


def _timed(fn, device) -> tuple[float, object]:
    """(wall seconds, result) of fn() with the device synchronised on both sides."""
    _sync(device)
    start = time.perf_counter()
    result = fn()
    _sync(device)
    return time.perf_counter() - start, result


def _tensor_bytes(cache) -> int:
    """Bytes of every tensor held by a transformers Cache's layers (keys, values, ...)."""
    total = 0
    for layer in getattr(cache, "layers", []):
        for value in vars(layer).values():
            if isinstance(value, torch.Tensor):
                total += value.numel() * value.element_size()
    return total


def _generate(model, engine: str, ids: torch.Tensor, n: int) -> int:
    """Generate exactly n new tokens with `engine`; returns the bytes of the cache it used."""
    if engine == "same":
        out = generate_tokens(model, ids, max_new_tokens=n).sequences  # eos_token_id=None: never stops early
        assert out.shape[1] == n, out.shape
        meta = HybridCache(model.config, ids.shape[0], ids.shape[1] + n, device="meta",
                           dtype=model.get_input_embeddings().weight.dtype)
        return sum(meta.nbytes().values())
    out = model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=n, do_sample=False,
                         eos_token_id=None, pad_token_id=0, return_dict_in_generate=True)
    assert out.sequences.shape[1] == ids.shape[1] + n, out.sequences.shape
    return _tensor_bytes(out.past_key_values)


def measure(model, engine: str, batch: int, gen_len: int, prompt_len: int, device, seed: int = 0) -> dict:
    """One row's measurements: tokens_per_s, decode_s, peak_mem_bytes, cache_bytes, oom (see module doc)."""
    gen = torch.Generator().manual_seed(seed)
    ids = torch.randint(0, model.config.vocab_size, (batch, prompt_len), generator=gen).to(device)
    cuda = torch.device(device).type == "cuda"
    try:
        t_one = min(_timed(lambda: _generate(model, engine, ids, 1), device)[0] for _ in range(3))
        if cuda:
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats()
        t_full, cache_bytes = _timed(lambda: _generate(model, engine, ids, gen_len), device)
    except torch.OutOfMemoryError:
        gc.collect()
        torch.cuda.empty_cache()
        return {"oom": True, "tokens_per_s": None, "decode_s": None, "peak_mem_bytes": None, "cache_bytes": None}
    decode_s = max(t_full - t_one, 1e-9)
    weights = weight_bytes(model)
    row = {"oom": False, "tokens_per_s": batch * (gen_len - 1) / decode_s, "decode_s": decode_s,
           "weight_bytes": weights, "cache_bytes": cache_bytes}
    if cuda:
        row["peak_mem_bytes"] = torch.cuda.max_memory_allocated()
    else:
        row["peak_mem_bytes"] = weights + cache_bytes  # tensor accounting
        row["process_peak_rss_bytes"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # high-water mark
    return row


def _rows_for_model(model, teacher_config, engine, spec: DecodeBenchSpec, ratio: float, on_row) -> list[dict]:
    """Every batch x length of one model through one engine (warm-up first; OOM skips longer lengths)."""
    rows = []
    dtype = DTYPES[spec.dtype]
    for batch in spec.batches:
        oom = False
        try:
            measure(model, engine, batch, 8, spec.prompt_len, spec.device, spec.seed)  # warm-up
        except torch.OutOfMemoryError:
            oom = True
        for gen_len in spec.gen_lens:
            result = {"oom": True, "tokens_per_s": None, "decode_s": None, "peak_mem_bytes": None,
                      "cache_bytes": None} if oom else measure(model, engine, batch, gen_len, spec.prompt_len,
                                                               spec.device, spec.seed)
            oom = oom or result["oom"]
            row = {
                "model": model_name(ratio), "ratio": ratio, "mamba_layers": list(getattr(model.config, "mamba_layers", [])),
                "engine": engine, "batch": batch, "prompt_len": spec.prompt_len, "gen_len": gen_len, **result,
                "bound_speed_ratio": run_bound_speed_ratio(model.config, teacher_config, spec.prompt_len, gen_len,
                                                           batch, dtype),
                "bound_bytes_per_step_end": decode_bytes(model.config, spec.prompt_len + gen_len - 1, batch,
                                                         dtype)["total"],
            }
            rows.append(row)
            on_row(row)
    return rows


def add_measured_ratios(rows: list[dict]) -> None:
    """Add `speed_ratio_vs_teacher` (same engine, batch, length) and `speed_ratio_vs_hf_generate` to each row."""
    def speed(model, engine, batch, gen_len):
        for r in rows:
            if (r["model"], r["engine"], r["batch"], r["gen_len"]) == (model, engine, batch, gen_len):
                return r["tokens_per_s"]
        return None

    for r in rows:
        for key, engine in (("speed_ratio_vs_teacher", "same"), ("speed_ratio_vs_hf_generate", "hf_generate")):
            base = speed("teacher", engine, r["batch"], r["gen_len"])
            r[key] = r["tokens_per_s"] / base if r["tokens_per_s"] and base else None


def run_decode_benchmark(spec: DecodeBenchSpec, on_row=lambda row: None) -> list[dict]:
    """Run every model (teacher + hybrids) x engine x batch x length; returns the rows (module docstring).

    One model is resident at a time: the teacher ("same"), then its weights in stock transformers Phi
    ("hf_generate"), then each hybrid. `on_row(row)` is called after each row (progress, partial saves).
    """
    if spec.dtype not in DTYPES:
        raise ValueError(f"--dtype {spec.dtype!r} is not one of {sorted(DTYPES)}")
    unknown = set(spec.engines) - {"same", "hf_generate"}
    if unknown:
        raise ValueError(f"--engines {sorted(unknown)} unknown; choose from same, hf_generate")
    dtype, max_positions = DTYPES[spec.dtype], spec.prompt_len + max(spec.gen_lens)
    teacher_config = shape_config(spec.shape, 0.0, max_positions)
    rows: list[dict] = []
    with torch.inference_mode():
        for ratio in (0.0, *spec.ratios):
            model = build_model(shape_config(spec.shape, ratio, max_positions), spec.device, dtype, spec.seed)
            if "same" in spec.engines:
                rows += _rows_for_model(model, teacher_config, "same", spec, ratio, on_row)
            if ratio == 0.0 and "hf_generate" in spec.engines:
                reference = to_transformers_phi(model)
                del model
                rows += _rows_for_model(reference, teacher_config, "hf_generate", spec, ratio, on_row)
                model = reference
            del model
            gc.collect()
            if torch.device(spec.device).type == "cuda":
                torch.cuda.empty_cache()
    add_measured_ratios(rows)
    return rows
