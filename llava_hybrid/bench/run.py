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

from .decode import DecodeBenchSpec, add_measured_ratios, run_decode_benchmark
from .layer_step import run_layer_step_benchmark
from .models import DTYPES
from .plots import plot_decode, plot_layer_step


def machine_header(device: str) -> dict:
    """Where and when: device name, platform, CPU count, threads, torch/transformers versions, UTC date."""
    import transformers

    if torch.device(device).type == "cuda":
        name = torch.cuda.get_device_name(device)
    else:
        name = platform.processor() or platform.machine()
    return {
        "device": device, "device_name": name, "platform": platform.platform(), "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(), "python": platform.python_version(), "torch": torch.__version__,
        "transformers": transformers.__version__,
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "command": " ".join(shlex.quote(a) for a in [Path(sys.argv[0]).name, *sys.argv[1:]]),
    }


def _write(path: Path, header: dict, rows: list[dict]) -> None:
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps({"header": header, "rows": rows}, indent=1) + "\n")
    tmp.replace(path)


def run_all(spec: DecodeBenchSpec, out_dir: Path, layer_lens=(), layer_shape: str = "phi2", layer_repeats: int = 10,
            log=print) -> list[Path]:
    """Run the decode sweep (and, when layer_lens is non-empty, the layer-step sweep); write JSON + PNGs
    into out_dir; returns the written paths."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    device_kind = torch.device(spec.device).type
    header = {**machine_header(spec.device), "what": "decode speed and memory, teacher vs hybrids",
              "spec": asdict(spec)}
    decode_json = out_dir / f"decode_{device_kind}.json"
    rows: list[dict] = []

    def on_row(row):
        rows.append(row)
        _write(decode_json, header, rows)
        speed = "OOM" if row["oom"] else f"{row['tokens_per_s']:9.1f} tok/s"
        log(f"{row['model']:>13} {row['engine']:>11} batch {row['batch']:>3} T {row['gen_len']:>6}: {speed}  "
            f"bound x{row['bound_speed_ratio']:.3f}")

    run_decode_benchmark(spec, on_row)
    add_measured_ratios(rows)
    _write(decode_json, header, rows)
    label = f"{header['device_name']} ({spec.shape}, {spec.dtype})"
    paths = [decode_json, *plot_decode(rows, out_dir / f"decode_{device_kind}", label)]
    if layer_lens:
        layer_rows = run_layer_step_benchmark(layer_shape, tuple(layer_lens), dtype=DTYPES[spec.dtype],
                                              device=spec.device, repeats=layer_repeats, seed=spec.seed)
        for r in layer_rows:
            log(f"{r['layer']:>9} step at L {r['context_len']:>6}: {r['median_s'] * 1e3:8.2f} ms")
        layer_json = out_dir / f"layer_step_{device_kind}.json"
        layer_header = {**machine_header(spec.device), "what": "one decode step of one layer vs context length",
                        "shape": layer_shape, "dtype": spec.dtype, "repeats": layer_repeats}
        _write(layer_json, layer_header, layer_rows)
        paths += [layer_json, plot_layer_step(layer_rows, out_dir / f"layer_step_{device_kind}.png",
                                              f"one layer's decode step, {layer_shape} layer, {spec.dtype}, "
                                              f"{header['device_name']}")]
    return paths
