"""Figures of the decode benchmark in the style of MaTVLM Fig. 1b / 1c: tokens/s and memory against the
generated length (one line per model, one panel per batch), the measured speed ratio against the bound,
and the one-layer decode step against the context length."""

from __future__ import annotations

from pathlib import Path

from matplotlib.figure import Figure  # no pyplot: no global backend or figure state

_COLORS = {"teacher": "tab:gray", "hybrid-12.5%": "tab:blue", "hybrid-25%": "tab:orange", "hybrid-50%": "tab:green"}


def _color(model: str, index: int) -> str:
    return _COLORS.get(model, f"C{index % 10}")


def _series(rows, batch, key, engine="same"):
    """{model: (gen_lens, values)} of rows with this batch and engine, skipping OOM rows."""
    out: dict[str, tuple[list, list]] = {}
    for r in rows:
        if r["batch"] == batch and r["engine"] == engine and not r["oom"] and r.get(key) is not None:
            xs, ys = out.setdefault(r["model"], ([], []))
            xs.append(r["gen_len"])
            ys.append(r[key])
    return out


def _panels(rows, title: str):
    batches = sorted({r["batch"] for r in rows})
    fig = Figure(figsize=(max(7.5, 6 * len(batches)), 4.4))
    axes = fig.subplots(1, len(batches), squeeze=False)
    fig.suptitle(title, fontsize=9)
    return fig, list(zip(batches, axes[0]))


def _finish(fig, ax, xlabel, ylabel, gen_lens):
    ax.set_xscale("log", base=2)
    ax.set_xticks(gen_lens, [f"{t // 1024}k" if t >= 1024 else str(t) for t in gen_lens])
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)


# the project's engines: marker + line style, label
_ENGINE_STYLES = {"same": ("o:", "eager"), "same_compiled": ("^-", "compiled"),
                  "same_cuda_graph": ("D-", "CUDA graph")}


def _engines(rows) -> list[str]:
    """The project engines present in rows, in _ENGINE_STYLES order."""
    present = {r["engine"] for r in rows}
    return [e for e in _ENGINE_STYLES if e in present]


def plot_decode(rows: list[dict], out_prefix: Path, label: str, xlabel: str = "generated tokens") -> list[Path]:
    """Write <prefix>_speed.png, <prefix>_memory.png and <prefix>_ratio.png; returns the paths."""
    gen_lens = sorted({r["gen_len"] for r in rows})
    engines = _engines(rows)
    paths = []
    for kind, key, ylabel, scale in (("speed", "tokens_per_s", "decode tokens / s", 1.0),
                                     ("memory", "peak_mem_bytes", "peak memory (MiB)", 2.0**-20)):
        fig, panels = _panels(rows, f"{label}\n{'decode throughput' if kind == 'speed' else 'memory: weights + cache'}")
        for batch, ax in panels:
            for engine in engines if kind == "speed" else engines[:1]:  # memory does not depend on the engine
                style, name = _ENGINE_STYLES[engine]
                for i, (model, (xs, ys)) in enumerate(_series(rows, batch, key, engine).items()):
                    ax.plot(xs, [y * scale for y in ys], style, color=_color(model, i),
                            label=f"{model} ({name if kind == 'speed' else 'same engine'})")
            for model, (xs, ys) in _series(rows, batch, key, "hf_generate").items():
                ax.plot(xs, [y * scale for y in ys], "s--", color="black", label=f"{model} (stock HF generate)")
            for r in rows:  # OOM markers on the x axis
                if r["batch"] == batch and r["oom"]:
                    ax.annotate("OOM", (r["gen_len"], 0), xycoords=("data", "axes fraction"), fontsize=7,
                                color=_color(r["model"], 0), ha="center", va="bottom")
            ax.set_title(f"batch {batch}")
            _finish(fig, ax, xlabel, ylabel, gen_lens)
        fig.tight_layout()
        path = Path(f"{out_prefix}_{kind}.png")
        fig.savefig(path, dpi=110)
        paths.append(path)

    fig, panels = _panels(rows, f"{label}\nhybrid / teacher decode speed (same engine) vs the bandwidth bound")
    for batch, ax in panels:
        bound = _series(rows, batch, "bound_speed_ratio", engines[0]) if engines else {}
        for engine in engines:
            style, name = _ENGINE_STYLES[engine]
            measured = _series(rows, batch, "speed_ratio_vs_teacher", engine)
            for i, model in enumerate(m for m in measured if m != "teacher"):
                ax.plot(*measured[model], style, color=_color(model, i), label=f"{model} measured, {name}")
        for i, model in enumerate(m for m in bound if m != "teacher"):
            ax.plot(*bound[model], "--", lw=0.9, color=_color(model, i), label=f"{model} bound")
        ax.axhline(1.0, color="gray", lw=0.8)
        ax.set_title(f"batch {batch}")
        _finish(fig, ax, xlabel, "speed ratio vs teacher", gen_lens)
    fig.tight_layout()
    path = Path(f"{out_prefix}_ratio.png")
    fig.savefig(path, dpi=110)
    paths.append(path)
    return paths


def plot_layer_step(rows: list[dict], path: Path, label: str) -> Path:
    """One decode step of one Mamba layer vs one attention layer against the context length."""
    fig = Figure(figsize=(6.5, 4.2))
    ax = fig.subplots()
    lengths = sorted({r["context_len"] for r in rows})
    for layer, color in (("attention", "tab:red"), ("mamba", "tab:green")):
        pts = sorted((r["context_len"], r["median_s"] * 1e3) for r in rows if r["layer"] == layer)
        ax.plot([p[0] for p in pts], [p[1] for p in pts], "o-", color=color, label=f"{layer} layer step")
    ax.set_title(label)
    _finish(fig, ax, "context length (cached tokens)", "median time of one step (ms)", lengths)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    return Path(path)


def decode_xlabel(spec: dict) -> str:
    """x-axis label for a decode spec (as saved in the JSON header)."""
    if spec.get("protocol") == "context":
        return f"context length T (prompt of T tokens, then {spec.get('context_steps')} timed steps)"
    return "generated tokens"
