"""`python -m llava_hybrid.smollm2 text [--steps N] [--smoke] ...`: the SmolLM2 text part (see text.py)."""
import argparse
import os
from dataclasses import replace

from .text import REPO, TextConfig, run_text, smoke_config, write_results


def main(argv=None):
    p = argparse.ArgumentParser(prog="python -m llava_hybrid.smollm2", description=__doc__)
    p.add_argument("part", choices=["text"], help="which part to run")
    d = TextConfig()
    p.add_argument("--out", default=d.out, help="work directory (checkpoint, data, runs)")
    p.add_argument("--report-dir", default=d.report_dir, help="where real_backbone.md and real_backbone/ go")
    p.add_argument("--checkpoint", default=None, help="an already converted SmolLM2 checkpoint directory")
    p.add_argument("--steps", type=int, default=d.steps, help="layer-only distillation steps per student")
    p.add_argument("--lr", type=float, default=d.lr)
    p.add_argument("--e2e-steps", type=int, default=d.e2e_steps)
    p.add_argument("--inits", default=",".join(d.inits), help="init variants of the 25 %% study")
    p.add_argument("--threads", type=int, default=d.threads)
    p.add_argument("--smoke", action="store_true", help="CI size: SmolLM2 cut to 4 layers, a few steps")
    a = p.parse_args(argv)
    if a.smoke:
        cfg = smoke_config(a.out, a.report_dir)
    else:
        cfg = replace(d, out=a.out, report_dir=a.report_dir, steps=a.steps, lr=a.lr, e2e_steps=a.e2e_steps,
                      inits=tuple(a.inits.split(",")), threads=a.threads)
    cfg = replace(cfg, checkpoint=a.checkpoint or cfg.checkpoint)
    return write_results(run_text(cfg), cfg)


if __name__ == "__main__":
    main()
