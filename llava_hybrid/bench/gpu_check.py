"""The one prepared GPU check (scripts/gpu_check.sh): every GPU measurement of the decode and distillation
claims in one run that fits a short device window, every output under one folder.

    (a) the mixer's cuda path against its PyTorch path (scripts/check_cuda_backend.py)  -> cuda_backend.json
    (b) decode at Phi-2's full shape, random weights, fp16: teacher and 12.5 / 25 / 50 % hybrids in the same
        engine, eager and CUDA-graph replay, plus the teacher in stock transformers generate (SDPA); context
        1K..32K at batch 1 and 1K..8K at batch 64, each row a prefill to that context then `context_steps`
        timed decode steps; achieved bytes/s against the bandwidth bound, peak memory per row, OOMs recorded
        -> decode_cuda.json + decode_cuda_{speed,memory,ratio}.png
    (c) one distillation step at the paper's shape (Phi-2 teacher + 25 % student, bf16, 1 x 1428 tokens)
        -> distill_step_cuda.json
    and gpu_check_summary.json: the issue's headline numbers computed from (a)-(c).
Rows past the time budget are recorded as skipped, never guessed; the decode JSON is rewritten after every
row. `--device cpu --smoke` runs the same code at tiny shapes in seconds (CI), writing the same files.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import torch

from .decode import DecodeBenchSpec
from .distill_step import LMDistillStepSpec, run_lm_distill_step
from .run import machine_header, run_all

# HBM peak of the cards the check is sized for (vendor figures, bytes/s), by a substring of the device name
HBM_PEAK = {"H200": 4.8e12, "H100 NVL": 3.9e12, "H100 PCIe": 2.0e12, "H100": 3.35e12}
ROOT = Path(__file__).resolve().parents[2]


def hbm_peak(device_name: str) -> float | None:
    """The card's peak memory bandwidth (bytes/s) from its name, or None for a card not in HBM_PEAK."""
    return next((bw for key, bw in HBM_PEAK.items() if key in device_name), None)


def decode_specs(device: str, smoke: bool) -> list[DecodeBenchSpec]:
    """The decode rows of part (b): batch 1 over 1K..32K, then batch 64 over 1K..8K (the larger contexts
    cannot hold 64 rows of KV on one card)."""
    if smoke:
        base = DecodeBenchSpec(device=device, shape="tiny", dtype="fp32", ratios=(0.25,), gen_lens=(16, 32), batches=(1,),
                               engines=("same", "hf_generate"), protocol="context", context_steps=4, skip_steps=1)
        return [base, replace(base, batches=(2,))]
    engines = ("same", "same_cuda_graph", "hf_generate")
    base = DecodeBenchSpec(device=device, shape="phi2", dtype="fp16", gen_lens=(1024, 2048, 4096, 8192, 16384, 32768),
                           batches=(1,), engines=engines, protocol="context", context_steps=32, skip_steps=3)
    return [base, replace(base, gen_lens=(1024, 2048, 4096, 8192), batches=(64,))]


def _headlines(decode_rows: list[dict], distill: dict | None, device_name: str) -> dict:
    """The issue's report numbers, each from the measured rows (None where a row is missing or OOM)."""
    def row(model, engine, batch, t):
        return next((r for r in decode_rows if (r["model"], r["engine"], r["batch"], r["gen_len"]) == (model, engine, batch, t)
                     and r.get("tokens_per_s")), None)

    out: dict = {"device_name": device_name, "hbm_peak_bytes_per_s": hbm_peak(device_name)}
    lens = sorted({r["gen_len"] for r in decode_rows})
    longest = max(lens) if lens else None
    mid = 16384 if 16384 in lens else longest
    graph = "same_cuda_graph" if any(r["engine"] == "same_cuda_graph" for r in decode_rows) else "same"
    h25 = row("hybrid-25%", graph, 1, mid)
    if h25 and h25.get("speed_ratio_vs_teacher"):
        out["hybrid25_same_engine_speedup_at_16k"] = h25["speed_ratio_vs_teacher"]
        out["hybrid25_bound_at_16k"] = h25["bound_speed_ratio"]
        out["hybrid25_fraction_of_bound_at_16k"] = h25["speed_ratio_vs_teacher"] / h25["bound_speed_ratio"]
    common = [t for t in lens if row("teacher", "hf_generate", 1, t) and row("hybrid-25%", graph, 1, t)]
    if common:
        t = max(common)
        out["hybrid25_vs_stock_generate"] = {"context": t, "speedup": row("hybrid-25%", graph, 1, t)["tokens_per_s"]
                                             / row("teacher", "hf_generate", 1, t)["tokens_per_s"]}
    achieved = [r["achieved_bytes_per_s"] for r in decode_rows
                if r["engine"] == graph and r["batch"] == 1 and r.get("achieved_bytes_per_s")]
    if achieved:
        out["best_batch1_bytes_per_s"] = max(achieved)
        if out["hbm_peak_bytes_per_s"]:
            out["best_batch1_fraction_of_hbm_peak"] = max(achieved) / out["hbm_peak_bytes_per_s"]
    teacher, hybrid = row("teacher", "same", 1, mid), row("hybrid-25%", "same", 1, mid)
    if teacher and hybrid:
        out["memory_at_16k"] = {
            "context": mid, "teacher_peak_bytes": teacher["peak_mem_bytes"], "hybrid25_peak_bytes": hybrid["peak_mem_bytes"],
            "measured_saving": 1 - hybrid["peak_mem_bytes"] / teacher["peak_mem_bytes"],
            "cache_saving_exact": 1 - hybrid["cache_bytes"] / teacher["cache_bytes"],
            "weights_plus_cache_saving_exact": 1 - (hybrid["weight_bytes"] + hybrid["cache_bytes"])
            / (teacher["weight_bytes"] + teacher["cache_bytes"])}
    ooms = sorted({(r["batch"], r["gen_len"]) for r in decode_rows if r["model"] == "teacher" and r["oom"]})
    out["teacher_oom_points"] = [{"batch": b, "first_oom_context": min(t for bb, t in ooms if bb == b)}
                                 for b in sorted({b for b, _ in ooms})]
    if distill:
        out["distill_step"] = {k: distill.get(k) for k in ("step_s", "samples_per_s", "peak_mem_bytes", "finite")}
    return out


def run_gpu_check(out_dir: Path, device: str = "cuda", smoke: bool = False, budget_s: float = 330.0,
                  log=print) -> dict:
    """Parts (a)-(c) into out_dir; returns the summary. budget_s: decode rows that would start after this many
    seconds from the start are recorded as skipped (the device window is short)."""
    start = time.monotonic()
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    torch._dynamo.config.recompile_limit = max(torch._dynamo.config.recompile_limit, 64)
    summary: dict = {"header": machine_header(device), "smoke": smoke, "budget_s": budget_s, "parts": {}}

    # (a) the cuda path vs the PyTorch path (a subprocess: its own CUDA context and exit code)
    check = [sys.executable, str(ROOT / "scripts" / "check_cuda_backend.py"), "--device", device,
             "--out", str(out_dir / "cuda_backend.json")] + (["--smoke"] if smoke else ["--length", "2048"])
    t0 = time.monotonic()
    proc = subprocess.run(check, capture_output=True, text=True)
    log(proc.stdout + proc.stderr)
    summary["parts"]["cuda_backend"] = {"exit_code": proc.returncode, "seconds": time.monotonic() - t0,
                                        "passed": proc.returncode == 0}

    # (c) one distillation step at the paper's shape (short, so before the long decode sweep)
    spec = (LMDistillStepSpec(shape="tiny", ratio=0.5, seq_len=40, dtype="fp32", device=device, steps=2) if smoke
            else LMDistillStepSpec(device=device))
    t0 = time.monotonic()
    try:
        distill = run_lm_distill_step(spec)
    except torch.OutOfMemoryError as e:
        distill = {"spec": spec.__dict__, "oom": True, "error": str(e)[:500]}
    distill.update(machine_header(device))
    (out_dir / f"distill_step_{torch.device(device).type}.json").write_text(json.dumps(distill, indent=1) + "\n")
    summary["parts"]["distill_step"] = {"seconds": time.monotonic() - t0}
    log(f"distill step: {distill.get('step_s')} s, peak {distill.get('peak_mem_bytes')} B")
    if torch.device(device).type == "cuda":
        torch.cuda.empty_cache()

    # (b) decode, batch 1 then batch 64, into one JSON
    rows: list[dict] = []
    t0 = time.monotonic()
    for spec in decode_specs(device, smoke):
        spec = replace(spec, deadline=start + budget_s)
        run_all(spec, out_dir, log=log, rows=rows)
    summary["parts"]["decode"] = {"seconds": time.monotonic() - t0,
                                  "rows": len(rows), "skipped_rows": sum(bool(r.get("skipped")) for r in rows)}
    summary["headlines"] = _headlines(rows, distill, summary["header"]["device_name"])
    summary["seconds"] = time.monotonic() - start
    (out_dir / "gpu_check_summary.json").write_text(json.dumps(summary, indent=1) + "\n")
    log(json.dumps(summary["headlines"], indent=1))
    return summary


def environment() -> dict:
    """What the check ran with (for the log): the kernel packages found and the variables that matter."""
    keys = ("MAMBA_DETERMINISTIC", "LLAVA_HYBRID_MAMBA_BACKEND", "PYTHONPATH")
    return {k: os.environ.get(k) for k in keys}
