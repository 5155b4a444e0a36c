"""Decode speed and memory of the teacher shape vs 12.5 / 25 / 50 % hybrids (MaTVLM Fig. 1b / 1c), plus one
layer's decode step against the context length. Writes docs/benchmarks/decode_<device>.json, its PNGs,
and layer_step_<device>.json/.png. See docs/benchmarks.md.

    # CPU (the committed numbers: scaled shape, fp32, one thread, speed at each context length, 5 rounds, ~5 min)
    .venv/bin/python scripts/bench_decode.py --device cpu
    # GPU (Phi-2's full shape, with the backend check and the distillation step): scripts/gpu_check.sh
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

from llava_hybrid.bench.decode import DecodeBenchSpec
from llava_hybrid.bench.run import markdown_tables, replot, run_all

ROOT = Path(__file__).resolve().parent.parent
DEFAULTS = {  # per device: shape, dtype, lengths, batches, layer-step context lengths, protocol, rounds
    "cpu": ("small", "fp32", "128,256,512,1024,2048,4096", "1", "256,512,1024,2048,4096,8192,16384", "context", 5),
    "cuda": ("phi2", "fp16", "1024,2048,4096,8192,16384,32768", "1,64", "256,1024,4096,16384,32768", "prefix", 1),
}


def ints(text: str) -> tuple[int, ...]:
    """ "1024,2048" -> (1024, 2048); "" -> ()."""
    return tuple(int(x) for x in text.split(",") if x)


def floats(text: str) -> tuple[float, ...]:
    """ "0.125,0.25" -> (0.125, 0.25)."""
    return tuple(float(x) for x in text.split(",") if x)


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cpu", help="cpu or cuda[:i]")
    ap.add_argument("--shape", help="phi2 | small | tiny (default: small on cpu, phi2 on cuda)")
    ap.add_argument("--dtype", help="fp32 | fp16 | bf16 (default: fp32 on cpu, fp16 on cuda)")
    ap.add_argument("--ratios", type=floats, default=(0.125, 0.25, 0.5), help="hybrid ratios, comma separated")
    ap.add_argument("--gen-lens", type=ints, help="generated lengths, comma separated")
    ap.add_argument("--batches", type=ints, help="batch sizes, comma separated")
    ap.add_argument("--prompt-len", type=int, default=16)
    ap.add_argument("--engines", default="same,same_compiled,hf_generate",
                    help="comma separated: same (eager step), same_compiled (torch.compile), same_cuda_graph (CUDA), "
                         "hf_generate (stock transformers)")
    ap.add_argument("--protocol", choices=["prefix", "per_length", "context"],
                    help="prefix (one run timed at every length; default on cuda), per_length, or context "
                         "(prompt of each length + --context-steps timed steps; default on cpu)")
    ap.add_argument("--context-steps", type=int, default=32)
    ap.add_argument("--skip-steps", type=int, default=3,
                    help="protocol context: decode steps before the timed ones (a CUDA graph's warm-up + capture)")
    ap.add_argument("--timer", choices=["wall", "cpu"],
                    help="wall clock, or this process's CPU time (default: cpu on cpu, a shared machine)")
    ap.add_argument("--rounds", type=int, help="interleaved rounds, fastest kept (default: 5 on cpu, 1 on cuda)")
    ap.add_argument("--layer-step-lens", type=ints, help="context lengths of the one-layer step ('' to skip)")
    ap.add_argument("--layer-shape", default="phi2", help="shape of the one layer timed (default phi2)")
    ap.add_argument("--threads", type=int, default=1, help="CPU threads (1: a shared machine makes more slower)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out-dir", type=Path, default=ROOT / "docs" / "benchmarks")
    ap.add_argument("--tag", default="", help="file name suffix: decode_<device>_<tag>.json")
    ap.add_argument("--plot-only", type=Path, help="only redraw the PNGs of this decode_<device>.json")
    ap.add_argument("--table", type=Path, help="only print markdown tables of this decode_<device>.json")
    args = ap.parse_args(argv)
    if args.table:
        print(markdown_tables(args.table))
        return
    if args.plot_only:
        for path in replot(args.plot_only):
            print(f"wrote {path}")
        return

    kind = torch.device(args.device).type
    if kind not in DEFAULTS:
        raise ValueError(f"--device {args.device!r}: expected cpu or cuda")
    if kind == "cuda" and not torch.cuda.is_available():
        raise ValueError("--device cuda but torch.cuda.is_available() is False")
    shape, dtype, gen_lens, batches, layer_lens, protocol, rounds = DEFAULTS[kind]
    torch.set_num_threads(args.threads)
    # one compiled step per model and batch size (plus one per dynamic-batch recompile): keep them all compiled
    torch._dynamo.config.recompile_limit = max(torch._dynamo.config.recompile_limit, 64)
    torch._dynamo.config.fail_on_recompile_limit_hit = True  # never time an eager fallback as "compiled"
    spec = DecodeBenchSpec(
        device=args.device, shape=args.shape or shape, dtype=args.dtype or dtype, ratios=args.ratios,
        gen_lens=args.gen_lens or ints(gen_lens), batches=args.batches or ints(batches),
        prompt_len=args.prompt_len, engines=tuple(args.engines.split(",")), protocol=args.protocol or protocol,
        context_steps=args.context_steps, skip_steps=args.skip_steps, rounds=args.rounds or rounds, seed=args.seed,
        timer=args.timer or ("cpu" if kind == "cpu" else "wall"))
    layer = ints(layer_lens) if args.layer_step_lens is None else args.layer_step_lens
    for path in run_all(spec, args.out_dir, layer, args.layer_shape, tag=args.tag):
        print(f"wrote {path}")


if __name__ == "__main__":
    main()
