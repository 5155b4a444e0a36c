"""CPU micro-benchmark of the SSD scan at Phi-2's per-layer Mamba-2 shape (MaTVLM).

Times `ssd_chunked` at several chunk sizes against the sequential recurrence `ssd_sequential`,
side by side in one run (warm-up first, median of interleaved repeats), checks they agree, prints the speed
ratios and writes docs/benchmarks/scan_cpu.json and docs/benchmarks/scan_cpu.png.

    .venv/bin/python scripts/bench_scan.py            # h 32, p 80, n 80, g 32, L 2048, batch 1, fp32
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import statistics
import time
from pathlib import Path

import torch

from llava_hybrid.mamba2 import ssd_chunked, ssd_sequential

ROOT = Path(__file__).resolve().parent.parent


def time_interleaved(fns: dict, warmup: int, repeats: int) -> dict[str, list[float]]:
    """Wall times (s) of each fn, measured in interleaved rounds so that load from other processes
    on a shared machine hits every variant alike."""
    for fn in fns.values():
        for _ in range(warmup):
            fn()
    times = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            t0 = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - t0)
    return times


def run(args: argparse.Namespace) -> dict:
    """Run the benchmark; returns the JSON-able result."""
    torch.set_num_threads(args.threads)
    gen = torch.Generator().manual_seed(0)
    b, l, h, p, g, n = args.batch, args.length, args.heads, args.head_dim, args.groups, args.d_state
    x = torch.randn(b, l, h, p, generator=gen)
    dt = torch.nn.functional.softplus(torch.randn(b, l, h, generator=gen) - 3.0)  # ~ init dt range
    A = -(torch.rand(h, generator=gen) * 15 + 1)  # A ~ -U[1, 16]
    B = torch.randn(b, l, g, n, generator=gen) / n**0.5
    C = torch.randn(b, l, g, n, generator=gen) / n**0.5
    D = torch.ones(h)
    fns = {"sequential": lambda: ssd_sequential(x, dt, A, B, C, D=D)}
    for cs in args.chunks:
        fns[f"chunk {cs}"] = lambda cs=cs: ssd_chunked(x, dt, A, B, C, cs, D=D)
    with torch.inference_mode():
        y_ref, s_ref = ssd_sequential(x, dt, A, B, C, D=D)
        errors = {}
        for cs in args.chunks:
            y, s = ssd_chunked(x, dt, A, B, C, cs, D=D)
            errors[cs] = (((y - y_ref).norm() / y_ref.norm()).item(), ((s - s_ref).norm() / s_ref.norm()).item())
        times = time_interleaved(fns, args.warmup, args.repeats)
    seq_times = times["sequential"]
    t_seq = statistics.median(seq_times)
    print(f"sequential        {t_seq * 1e3:9.1f} ms")
    rows = []
    for cs in args.chunks:
        t = statistics.median(times[f"chunk {cs}"])
        err, err_state = errors[cs]
        rows.append({"chunk_size": cs, "median_s": t, "times_s": times[f"chunk {cs}"],
                     "speedup_vs_sequential": t_seq / t, "rel_err_y": err, "rel_err_state": err_state})
        print(f"chunked cs={cs:<4d}    {t * 1e3:9.1f} ms   {t_seq / t:5.2f}x sequential   "
              f"rel err y {err:.1e} state {err_state:.1e}")
    return {
        "what": "SSD scan, chunked (ssd_chunked) vs sequential recurrence (ssd_sequential), forward, inference_mode",
        "shape": {"batch": b, "length": l, "heads": h, "head_dim": p, "groups": g, "d_state": n, "dtype": "float32"},
        "warmup": args.warmup, "repeats": args.repeats, "threads": args.threads,
        "timing": "median of interleaved rounds (every variant once per round)",
        "sequential": {"median_s": t_seq, "times_s": seq_times},
        "chunked": rows,
        "machine": {"platform": platform.platform(), "processor": platform.processor(), "cpu_count": os.cpu_count(),
                    "python": platform.python_version(), "torch": torch.__version__,
                    "load_average_1_5_15_min_at_end": list(os.getloadavg())},
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    }


def plot(result: dict, path: Path) -> None:
    """Bar chart of median times, sequential vs each chunk size."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels = ["sequential"] + [f"chunk {r['chunk_size']}" for r in result["chunked"]]
    times = [result["sequential"]["median_s"]] + [r["median_s"] for r in result["chunked"]]
    fig, ax = plt.subplots(figsize=(7, 4))
    bars = ax.bar(labels, [t * 1e3 for t in times], color=["tab:gray"] + ["tab:blue"] * len(result["chunked"]))
    for bar, t in zip(bars, times):
        ax.annotate(f"{times[0] / t:.1f}x", (bar.get_x() + bar.get_width() / 2, bar.get_height()),
                    ha="center", va="bottom")
    s = result["shape"]
    ax.set_ylabel("median time (ms)")
    ax.set_title(f"SSD scan on CPU ({result['threads']} threads), h{s['heads']} p{s['head_dim']} "
                 f"n{s['d_state']} L{s['length']} fp32")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--length", type=int, default=2048)
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--heads", type=int, default=32)
    ap.add_argument("--head-dim", type=int, default=80)
    ap.add_argument("--groups", type=int, default=32)
    ap.add_argument("--d-state", type=int, default=80)
    ap.add_argument("--chunks", type=int, nargs="+", default=[32, 64, 128, 256])
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out-dir", type=Path, default=ROOT / "docs" / "benchmarks")
    args = ap.parse_args(argv)
    result = run(args)
    args.out_dir.mkdir(parents=True, exist_ok=True)
    (args.out_dir / "scan_cpu.json").write_text(json.dumps(result, indent=2) + "\n")
    plot(result, args.out_dir / "scan_cpu.png")
    print(f"wrote {args.out_dir / 'scan_cpu.json'} and {args.out_dir / 'scan_cpu.png'}")


if __name__ == "__main__":
    main()
