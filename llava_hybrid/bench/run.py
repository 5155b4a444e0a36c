"""The benchmark run behind scripts/bench_decode.py: the decode sweep and the one-layer step sweep, written to
docs/benchmarks/decode_<device>.json (+ _speed/_memory/_ratio PNGs) and layer_step_<device>.json (+ PNG).

JSON layout: {"header": {device, machine, date, command, spec, ...}, "rows": [...]}. The decode JSON is
rewritten after every row, so an interrupted run (a time limit on a lent GPU) keeps what it measured.
"""

from __future__ import annotations

import datetime
import json
import os
import platform
import shlex
import sys
from dataclasses import asdict
from pathlib import Path

import torch

from llava_hybrid.compat import version_text

from .decode import DecodeBenchSpec, add_measured_ratios, run_decode_benchmark
from .layer_step import run_layer_step_benchmark
from .models import DTYPES
from .plots import decode_xlabel, plot_decode, plot_layer_step


def machine_header(device: str) -> dict:
    """Where and when: device name, platform, CPU count, threads, torch/transformers versions, UTC date."""
    if torch.device(device).type == "cuda":
        name = torch.cuda.get_device_name(device)
    else:
        name = platform.processor() or platform.machine()
    return {
        "device": device, "device_name": name, "platform": platform.platform(), "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(), "python": platform.python_version(), "torch": torch.__version__,
        "transformers": version_text("transformers"), "load_average_1_5_15_min_at_start": list(os.getloadavg()),
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "command": " ".join(shlex.quote(a) for a in [Path(sys.argv[0]).name, *sys.argv[1:]]),
    }


def _write(path: Path, header: dict, rows: list[dict]) -> None:
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps({"header": header, "rows": rows}, indent=1) + "\n")
    tmp.replace(path)


def run_all(spec: DecodeBenchSpec, out_dir: Path, layer_lens=(), layer_shape: str = "phi2", layer_repeats: int = 10,
            log=print, tag: str = "", rows: list | None = None) -> list[Path]:
    """Run the decode sweep (and, when layer_lens is non-empty, the layer-step sweep); write JSON + PNGs
    into out_dir (file names decode_<device>[_<tag>]...); returns the written paths. rows: earlier rows to
    keep in the same JSON and plots (a sweep run in parts); the new rows are appended to it."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    device_kind = torch.device(spec.device).type + (f"_{tag}" if tag else "")
    header = {**machine_header(spec.device), "what": "decode speed and memory, teacher vs hybrids",
              "spec": asdict(spec)}
    decode_json = out_dir / f"decode_{device_kind}.json"
    rows = [] if rows is None else rows

    def on_row(row):
        rows.append(row)
        _write(decode_json, header, rows)
        speed = ("OOM" if row["oom"] else "skipped (time budget)" if row.get("skipped")
                 else f"{row['tokens_per_s']:9.1f} tok/s")
        log(f"{row['model']:>13} {row['engine']:>11} batch {row['batch']:>3} T {row['gen_len']:>6}: {speed}  "
            f"bound x{row['bound_speed_ratio']:.3f}")

    run_decode_benchmark(spec, on_row)
    add_measured_ratios(rows)
    header["load_average_1_5_15_min_at_end"] = list(os.getloadavg())  # a shared machine: the load it ran under
    _write(decode_json, header, rows)
    label = f"{header['device_name']} ({spec.shape}, {spec.dtype}, {spec.protocol}, timer {spec.timer})"
    paths = [decode_json, *plot_decode(rows, out_dir / f"decode_{device_kind}", label, decode_xlabel(asdict(spec)))]
    if layer_lens:
        layer_rows = run_layer_step_benchmark(layer_shape, tuple(layer_lens), dtype=DTYPES[spec.dtype],
                                              device=spec.device, repeats=layer_repeats, seed=spec.seed,
                                              timer=spec.timer)
        for r in layer_rows:
            log(f"{r['layer']:>9} step at L {r['context_len']:>6}: {r['median_s'] * 1e3:8.2f} ms")
        layer_json = out_dir / f"layer_step_{device_kind}.json"
        layer_header = {**machine_header(spec.device), "what": "one decode step of one layer vs context length",
                        "shape": layer_shape, "dtype": spec.dtype, "repeats": layer_repeats, "timer": spec.timer}
        _write(layer_json, layer_header, layer_rows)
        paths += [layer_json, plot_layer_step(layer_rows, out_dir / f"layer_step_{device_kind}.png",
                                              f"one layer's decode step, {layer_shape} layer, {spec.dtype}, "
                                              f"{header['device_name']}")]
    return paths


def replot(decode_json: Path) -> list[Path]:
    """Redraw the decode PNGs from a (possibly partial) decode_<device>.json, next to it."""
    decode_json = Path(decode_json)
    if not decode_json.is_file():
        raise ValueError(f"--plot-only: {decode_json} is not a file")
    data = json.loads(decode_json.read_text())
    rows, header = data["rows"], data["header"]
    add_measured_ratios(rows)
    spec = header.get("spec", {})
    label = (f"{header.get('device_name', header.get('device'))} ({spec.get('shape')}, {spec.get('dtype')}, "
             f"{spec.get('protocol')}, timer {spec.get('timer', 'wall')})")
    return plot_decode(rows, decode_json.with_suffix(""), label, decode_xlabel(spec))


def _mib(value) -> str:
    return "-" if value is None else f"{value / 2**20:,.1f}"


def markdown_tables(decode_json: Path) -> str:
    """Markdown tables of a decode_<device>.json: one per batch, a row per model/engine, a column per length
    with tokens/s, then the speed ratios (measured / bound) and the memory (weights + cache, MiB)."""
    rows = json.loads(Path(decode_json).read_text())["rows"]
    add_measured_ratios(rows)
    lens = sorted({r["gen_len"] for r in rows})
    head = "| model | engine | " + " | ".join(f"T={t}" for t in lens) + " |\n|---|---|" + "---|" * len(lens) + "\n"
    out = []
    for batch in sorted({r["batch"] for r in rows}):
        cells = {(r["model"], r["engine"], r["gen_len"]): r for r in rows if r["batch"] == batch}
        keys = list(dict.fromkeys((r["model"], r["engine"]) for r in rows if r["batch"] == batch))
        for title, fmt in (
            ("decode tokens/s", lambda r: "OOM" if r["oom"] else "-" if r["tokens_per_s"] is None
             else f"{r['tokens_per_s']:.1f}"),
            ("speed vs teacher (same engine): measured / bound",
             lambda r: "OOM" if r["oom"] else "-" if r["speed_ratio_vs_teacher"] is None
             else f"{r['speed_ratio_vs_teacher']:.2f} / {r['bound_speed_ratio']:.2f}"),
            ("speed vs the same model in the eager engine",
             lambda r: "-" if r["oom"] or r.get("speed_ratio_vs_eager") is None
             else f"{r['speed_ratio_vs_eager']:.2f}"),
            ("speed vs stock HF generate teacher",
             lambda r: "-" if r["oom"] or r["speed_ratio_vs_hf_generate"] is None
             else f"{r['speed_ratio_vs_hf_generate']:.2f}"),
            ("memory MiB (peak_mem_bytes) / of which cache",
             lambda r: "OOM" if r["oom"] else f"{_mib(r['peak_mem_bytes'])} / {_mib(r['cache_bytes'])}"),
            ("achieved GB/s (bytes the timed steps must read / time)",
             lambda r: "OOM" if r["oom"] else "-" if not r.get("achieved_bytes_per_s")
             else f"{r['achieved_bytes_per_s'] / 1e9:.1f}"),
        ):
            lines = [f"| {m} | {e} | " + " | ".join(fmt(cells[m, e, t]) if (m, e, t) in cells else "" for t in lens)
                     + " |" for m, e in keys]
            out.append(f"**batch {batch}, {title}**\n\n" + head + "\n".join(lines) + "\n")
    return "\n".join(out)
