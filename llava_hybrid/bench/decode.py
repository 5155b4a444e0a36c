"""Decode speed and memory: the teacher shape against hybrids of the same shape (MaTVLM Fig. 1b / 1c).

For every model, engine, batch and generated length one row:
    engine "same"                  the project's one decode loop (llava_hybrid.hybrid.generate_tokens: pre-allocated
                                   KV for attention layers, fixed Mamba states, the static decode step run eagerly),
                                   for the teacher and every hybrid
    engine "same_compiled"         the same loop with the step under torch.compile(fullgraph=True) (`compile=True`)
    engine "same_cuda_graph"       the same loop with the step replayed from a CUDA graph (`cuda_graph=True`, CUDA)
    engine "hf_generate"           the teacher's weights in stock transformers `PhiForCausalLM.generate` (the
                                   paper's baseline: a KV cache grown every step), SDPA attention
Timing: a random prompt, eos disabled, greedy; tokens_per_s = batch * (T - 1) / (seconds from the first new
token, i.e. the end of the prefill, to the T-th), read from a clock that syncs the device only at the lengths
asked for. Protocol "prefix" (default) times ONE run of max(T) tokens at every T (greedy: its first T tokens
are the T-token run); "per_length" runs each T separately (exact CUDA peak memory per T); "context" prefills a
random prompt of T tokens, lets `skip_steps` decode steps pass (a CUDA graph's warm-up and capture) and times
the next `context_steps`: the speed AT context T (what the bound at T describes), short enough to interleave
models and repeat (noisy CPUs). `achieved_bytes_per_s`: the bytes the timed steps must read (bound.py) per second.
Memory: per_length on CUDA: `max_memory_allocated` of the T-token call (prefix on CUDA records it for the
longest T as `measured_peak_bytes`; a prefix run that does not fit falls back to per_length for that
batch, so shorter lengths still get measured); otherwise the tensor accounting
weights + cache (HybridCache.nbytes() built on the meta device for P + T tokens, or the DynamicCache that
generate returned, which is linear in its tokens), plus the process peak RSS (a high-water mark) on CPU.
A CUDA out-of-memory is caught and recorded (`oom: true`); longer lengths of that model, engine and batch
are then recorded as OOM without running.
"""

from __future__ import annotations

import gc
import resource
import time
from dataclasses import dataclass, replace

import torch
from transformers.generation.streamers import BaseStreamer

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
    engines: tuple[str, ...] = ("same", "hf_generate")  # ENGINES keys
    protocol: str = "prefix"  # "prefix" | "per_length" | "context" (see the module docstring)
    context_steps: int = 32  # protocol "context": decode steps timed after each prompt of length T
    skip_steps: int = 3  # protocol "context": decode steps before the timed ones (CUDA-graph warm-up + capture)
    timer: str = "wall"  # "wall" | "cpu" (process CPU time; CPU device only)
    rounds: int = 1  # > 1: all models resident, run in turn `rounds` times, fastest round kept (noisy CPUs)
    seed: int = 0
    deadline: float | None = None  # time.monotonic() after which no row starts (recorded as skipped)


# engine -> generate_tokens options ("hf_generate" is stock transformers)
ENGINES = {"same": {}, "same_compiled": {"compile": True}, "same_cuda_graph": {"cuda_graph": True},
           "hf_generate": None}


def _sync(device) -> None:
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()


def _tensor_bytes(cache) -> int:
    """Bytes of every tensor a transformers cache holds: a Cache object's layers (5.x: keys, values, ...)
    or the legacy tuple of (key, value) pairs per layer (4.x)."""
    if isinstance(cache, torch.Tensor):
        return cache.numel() * cache.element_size()
    if isinstance(cache, (tuple, list)):
        return sum(_tensor_bytes(item) for item in cache)
    return sum(_tensor_bytes(v) for layer in getattr(cache, "layers", []) for v in vars(layer).values()
               if isinstance(v, (torch.Tensor, tuple, list)))


# "wall": elapsed time; "cpu": this process's CPU time (single-threaded CPU runs on a shared machine: the
# time other processes hold the cores is not counted)
TIMERS = {"wall": time.perf_counter, "cpu": time.process_time}


class StepClock:
    """Wall time at which chosen token counts are reached in one generate call (the device is synchronised
    only at those counts, so the decode loop keeps its normal host/device overlap in between)."""

    def __init__(self, checkpoints, device, timer: str = "wall"):
        self.checkpoints, self.device = set(checkpoints) | {1}, device
        self.now = TIMERS[timer]
        self.count, self.times = 0, {}

    def tick(self, *_) -> None:
        """One more token produced (also generate_tokens' on_token callback)."""
        self.count += 1
        if self.count in self.checkpoints:
            _sync(self.device)
            self.times[self.count] = self.now()

    def decode_seconds(self, n: int, start: int = 1) -> float:
        """Seconds from token `start` (1: the end of the prefill) to token n: the decode of n - start tokens."""
        return self.times[n] - self.times[start]


class _ClockStreamer(BaseStreamer):
    """transformers streamer ticking the clock per new token (generate first `put`s the prompt)."""

    def __init__(self, clock: StepClock):
        self.clock, self.prompt_seen = clock, False

    def put(self, value):
        if self.prompt_seen:
            self.clock.tick()
        self.prompt_seen = True

    def end(self):
        pass


def _generate(model, engine: str, ids: torch.Tensor, n: int, clock: StepClock | None = None) -> int:
    """Generate exactly n new tokens with `engine`; returns the bytes of the cache it used."""
    if ENGINES[engine] is not None:  # eos_token_id=None: never stops early
        out = generate_tokens(model, ids, max_new_tokens=n, on_token=None if clock is None else clock.tick,
                              **ENGINES[engine]).sequences
        assert out.shape[1] == n, out.shape
        return _same_cache_bytes(model, ids.shape[0], ids.shape[1] + n)
    streamer = None if clock is None else _ClockStreamer(clock)
    model.generation_config.cache_implementation = None  # the default DynamicCache, grown every step
    out = model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=n, do_sample=False,
                         eos_token_id=None, pad_token_id=0, return_dict_in_generate=True, streamer=streamer)
    assert out.sequences.shape[1] == ids.shape[1] + n, out.sequences.shape
    return _tensor_bytes(out.past_key_values)


def _same_cache_bytes(model, batch: int, max_length: int) -> int:
    """HybridCache.nbytes() of a cache for `max_length` tokens, built on the meta device (no memory)."""
    meta = HybridCache(model.config, batch, max_length, device="meta", dtype=model.get_input_embeddings().weight.dtype)
    return sum(meta.nbytes().values())


def _prompt(model, batch: int, prompt_len: int, device, seed: int) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    return torch.randint(0, model.config.vocab_size, (batch, prompt_len), generator=gen).to(device)


_OOM_ROW = {"oom": True, "tokens_per_s": None, "decode_s": None, "peak_mem_bytes": None, "cache_bytes": None}
_SKIPPED_ROW = {**_OOM_ROW, "oom": False, "skipped": "time budget"}


def measure(model, engine: str, batch: int, gen_len: int, prompt_len: int, device, seed: int = 0,
            timer: str = "wall", skip: int = 0) -> dict:
    """Protocol "per_length" (and "context"): one generate call of gen_len tokens, timed from token 1 + skip;
    tokens_per_s, decode_s, peak_mem_bytes (CUDA max_memory_allocated, or CPU weights + cache accounting),
    cache_bytes, oom."""
    ids = _prompt(model, batch, prompt_len, device, seed)
    cuda = torch.device(device).type == "cuda"
    try:
        if cuda:
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats()
        clock = StepClock([1 + skip, gen_len], device, timer)
        cache_bytes = _generate(model, engine, ids, gen_len, clock)
    except torch.OutOfMemoryError:
        gc.collect()
        torch.cuda.empty_cache()
        return dict(_OOM_ROW)
    decode_s = clock.decode_seconds(gen_len, 1 + skip)
    weights = weight_bytes(model)
    row = {"oom": False, "tokens_per_s": batch * (gen_len - 1 - skip) / decode_s, "decode_s": decode_s,
           "weight_bytes": weights, "cache_bytes": cache_bytes}
    if cuda:
        row["peak_mem_bytes"], row["peak_mem_source"] = torch.cuda.max_memory_allocated(), "max_memory_allocated"
    else:
        row["peak_mem_bytes"], row["peak_mem_source"] = weights + cache_bytes, "weights+cache accounting"
        row["process_peak_rss_bytes"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # high-water
    return row


def measure_prefixes(model, engine: str, batch: int, gen_lens, prompt_len: int, device, seed: int = 0,
                     timer: str = "wall") -> dict:
    """Protocol "prefix": ONE generate call of max(gen_lens) tokens, timed at each length in gen_lens
    (greedy decoding makes the first T tokens of a long run the T-token run). Memory by accounting:
    weights + the cache a T-token run holds (HybridCache for P + T; stock DynamicCache is linear in the
    tokens it holds, P + T - 1). Returns {gen_len: row fields}."""
    ids = _prompt(model, batch, prompt_len, device, seed)
    longest = max(gen_lens)
    clock = StepClock(gen_lens, device, timer)
    cuda = torch.device(device).type == "cuda"
    try:
        if cuda:
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats()
        final_cache = _generate(model, engine, ids, longest, clock)
    except torch.OutOfMemoryError:
        gc.collect()
        torch.cuda.empty_cache()
        return {t: dict(_OOM_ROW) for t in gen_lens}
    weights, rows = weight_bytes(model), {}
    for t in gen_lens:
        if engine == "same":
            cache = _same_cache_bytes(model, batch, prompt_len + t)
        else:
            cache = final_cache * (prompt_len + t - 1) // (prompt_len + longest - 1)
        decode_s = clock.decode_seconds(t)
        rows[t] = {"oom": False, "tokens_per_s": batch * (t - 1) / decode_s, "decode_s": decode_s,
                   "weight_bytes": weights, "cache_bytes": cache, "peak_mem_bytes": weights + cache,
                   "peak_mem_source": "weights+cache accounting"}
    if cuda:  # the measured peak of the whole run belongs to its longest length
        rows[longest]["measured_peak_bytes"] = torch.cuda.max_memory_allocated()
    return rows


def _measure_lengths(model, engine: str, batch: int, spec: DecodeBenchSpec) -> dict[int, dict]:
    """{gen_len: measurements} of one model, engine and batch (a short warm-up first; after an OOM the
    longer lengths are recorded as OOM without running; past spec.deadline rows are recorded as skipped)."""
    def late():
        return spec.deadline is not None and time.monotonic() > spec.deadline

    if late():
        return {t: dict(_SKIPPED_ROW) for t in spec.gen_lens}
    try:
        measure(model, engine, batch, 8, spec.prompt_len, spec.device, spec.seed)  # warm-up
    except torch.OutOfMemoryError:
        return {t: dict(_OOM_ROW) for t in spec.gen_lens}
    if spec.protocol == "context":  # a prompt of T tokens, then skip_steps + context_steps + 1 new tokens
        results, oom = {}, False
        for t in spec.gen_lens:
            if oom or late():
                results[t] = dict(_OOM_ROW if oom else _SKIPPED_ROW)
                continue
            results[t] = measure(model, engine, batch, spec.skip_steps + spec.context_steps + 1, t, spec.device,
                                 spec.seed, spec.timer, spec.skip_steps)
            oom = results[t]["oom"]
        return results
    if spec.protocol == "prefix":
        results = measure_prefixes(model, engine, batch, spec.gen_lens, spec.prompt_len, spec.device, spec.seed,
                                   spec.timer)
        if not results[max(spec.gen_lens)]["oom"]:
            return results
        # the longest run does not fit: one run per length, up to the first OOM
    results, oom = {}, False
    for gen_len in spec.gen_lens:
        results[gen_len] = dict(_OOM_ROW) if oom else measure(model, engine, batch, gen_len, spec.prompt_len,
                                                              spec.device, spec.seed, spec.timer)
        oom = results[gen_len]["oom"]
    return results


def _best_of_rounds(rounds: list[dict]) -> dict:
    """The fastest of a length's rounds (the least disturbed by other load), with every round's tokens/s."""
    done = [r for r in rounds if not r["oom"]]
    if not done:
        return rounds[0]
    best = dict(max(done, key=lambda r: r["tokens_per_s"]))
    best["tokens_per_s_rounds"] = [r["tokens_per_s"] for r in rounds]
    return best


def _row(config, teacher_config, ratio, engine, batch, gen_len, result, spec: DecodeBenchSpec) -> dict:
    """One output row: identity, measurements and the bandwidth bound of the run."""
    dtype = DTYPES[spec.dtype]
    if spec.protocol == "context":  # timed: the steps at contexts gen_len + skip .. gen_len + skip + steps - 1
        prompt, steps = gen_len + spec.skip_steps, spec.context_steps + 1
    else:
        prompt, steps = spec.prompt_len, gen_len
    end = prompt + steps - 1  # tokens cached at the last timed step
    read = config if ENGINES[engine] is not None else teacher_config  # what the timed steps read
    mean_bytes = (decode_bytes(read, prompt, batch, dtype)["total"] + decode_bytes(read, end, batch, dtype)["total"]) / 2
    speed = result.get("tokens_per_s")
    return {
        "model": model_name(ratio), "ratio": ratio, "mamba_layers": list(getattr(config, "mamba_layers", [])),
        "engine": engine, "batch": batch, "prompt_len": prompt, "gen_len": gen_len, "context_len_end": end,
        "protocol": spec.protocol, "rounds": spec.rounds, **result,
        "bound_speed_ratio": run_bound_speed_ratio(config, teacher_config, prompt, steps, batch, dtype),
        "bound_bytes_per_step_end": decode_bytes(read, end, batch, dtype)["total"],
        "achieved_bytes_per_s": None if not speed else mean_bytes * speed / batch,
    }


def _models(spec: DecodeBenchSpec, max_positions: int):
    """Yield (ratio, engine, model): the teacher in each project engine, its weights in stock transformers Phi
    ("hf_generate"; the teacher is dropped first), then each hybrid in each project engine. Built one at a
    time (the engines of one model share it)."""
    dtype = DTYPES[spec.dtype]
    ours = [e for e in spec.engines if ENGINES[e] is not None]
    for ratio in (0.0, *spec.ratios):
        model = build_model(shape_config(spec.shape, ratio, max_positions), spec.device, dtype, spec.seed)
        for engine in ours:
            yield ratio, engine, model
        if ratio == 0.0 and "hf_generate" in spec.engines:
            reference = to_transformers_phi(model)
            del model
            yield ratio, "hf_generate", reference
        else:
            del model


def add_measured_ratios(rows: list[dict]) -> None:
    """Add to each row `speed_ratio_vs_teacher` (the teacher in the row's engine, same batch and length; stock
    generate rows against the project's eager teacher), `speed_ratio_vs_hf_generate`, and
    `speed_ratio_vs_eager` (the same model in the eager engine "same")."""
    speeds = {(r["model"], r["engine"], r["batch"], r["gen_len"]): r["tokens_per_s"] for r in rows}

    for r in rows:
        key = r["batch"], r["gen_len"]
        teacher_engine = r["engine"] if ENGINES.get(r["engine"]) is not None else "same"
        for name, base in (("speed_ratio_vs_teacher", speeds.get(("teacher", teacher_engine, *key))),
                           ("speed_ratio_vs_hf_generate", speeds.get(("teacher", "hf_generate", *key))),
                           ("speed_ratio_vs_eager", speeds.get((r["model"], "same", *key)))):
            r[name] = r["tokens_per_s"] / base if r["tokens_per_s"] and base else None


def run_decode_benchmark(spec: DecodeBenchSpec, on_row=lambda row: None) -> list[dict]:
    """Run every model (teacher + hybrids) x engine x batch x length; returns the rows (module docstring).

    rounds == 1: one model resident at a time (see `_models`). rounds > 1 (for a shared, noisy CPU): all
    models resident, every round runs each model in turn, and each length keeps its fastest round.
    `on_row(row)` is called after each row is final (progress, partial saves).
    """
    if spec.dtype not in DTYPES:
        raise ValueError(f"--dtype {spec.dtype!r} is not one of {sorted(DTYPES)}")
    if spec.protocol not in ("prefix", "per_length", "context"):
        raise ValueError(f"--protocol {spec.protocol!r} is not one of prefix, per_length, context")
    unknown = set(spec.engines) - set(ENGINES)
    if unknown:
        raise ValueError(f"--engines {sorted(unknown)} unknown; choose from {', '.join(ENGINES)}")
    if "same_cuda_graph" in spec.engines and torch.device(spec.device).type != "cuda":
        raise ValueError("--engines same_cuda_graph needs --device cuda")
    if spec.skip_steps < 0 or spec.context_steps < 1:
        raise ValueError(f"--skip-steps must be >= 0 and --context-steps >= 1, got {spec.skip_steps}, "
                         f"{spec.context_steps}")
    if spec.timer not in TIMERS or (spec.timer == "cpu" and torch.device(spec.device).type != "cpu"):
        raise ValueError(f"--timer {spec.timer!r}: choose wall, or cpu on a CPU device")
    if spec.rounds < 1:
        raise ValueError(f"--rounds must be >= 1, got {spec.rounds}")
    max_positions = max(spec.prompt_len, spec.skip_steps + spec.context_steps + 1) + max(spec.gen_lens)
    teacher_config = shape_config(spec.shape, 0.0, max_positions)
    rows: list[dict] = []

    def emit(ratio, engine, config, batch, results):
        for gen_len in spec.gen_lens:
            rows.append(_row(config, teacher_config, ratio, engine, batch, gen_len, results[gen_len], spec))
            on_row(rows[-1])

    with torch.inference_mode():
        if spec.rounds == 1:
            for ratio, engine, model in _models(spec, max_positions):
                for batch in spec.batches:
                    emit(ratio, engine, model.config, batch, _measure_lengths(model, engine, batch, spec))
                del model
                gc.collect()
                if torch.device(spec.device).type == "cuda":
                    torch.cuda.empty_cache()
        else:
            resident = list(_models(spec, max_positions))
            for batch in spec.batches:
                if spec.protocol == "context":  # rounds interleaved per length: [round][model][length]
                    per_len = {t: [[_measure_lengths(m, e, batch, replace(spec, gen_lens=(t,)))[t] for _, e, m in resident]
                                   for _ in range(spec.rounds)] for t in spec.gen_lens}
                    runs = [[{t: per_len[t][r][i] for t in spec.gen_lens} for i in range(len(resident))]
                            for r in range(spec.rounds)]
                else:
                    runs = [[_measure_lengths(model, engine, batch, spec) for _, engine, model in resident]
                            for _ in range(spec.rounds)]  # runs[round][model]
                for i, (ratio, engine, model) in enumerate(resident):
                    emit(ratio, engine, model.config, batch,
                         {t: _best_of_rounds([runs[r][i][t] for r in range(spec.rounds)]) for t in spec.gen_lens})
    add_measured_ratios(rows)
    return rows
