"""`python -m llava_hybrid.smollm2 text|vlm [--smoke] ...`: the SmolLM2 text part (text.py) or VLM part (vlm.py).

Each part rewrites its own section of docs/real_backbone.md + docs/real_backbone/results.json and keeps
the other's."""
import argparse
from dataclasses import replace

from .text import TextConfig, run_text, smoke_config as text_smoke
from .text import write_results as write_text
from .vlm import VLMConfig, run_vlm, smoke_config as vlm_smoke
from .vlm import write_results as write_vlm


def main(argv=None):
    p = argparse.ArgumentParser(prog="python -m llava_hybrid.smollm2", description=__doc__)
    p.add_argument("part", choices=["text", "vlm"], help="which part to run")
    d, v = TextConfig(), VLMConfig()
    p.add_argument("--out", default=None, help=f"work directory (default: {d.out} | {v.out})")
    p.add_argument("--report-dir", default=d.report_dir, help="where real_backbone.md and real_backbone/ go")
    p.add_argument("--checkpoint", default=None, help="an already converted SmolLM2 checkpoint directory")
    p.add_argument("--threads", type=int, default=None, help=f"torch threads (default: {d.threads} | {v.threads})")
    p.add_argument("--smoke", action="store_true", help="CI size: SmolLM2 cut to 4 layers, a few steps")
    text = p.add_argument_group("text part")
    text.add_argument("--steps", type=int, default=d.steps, help="layer-only distillation steps per student")
    text.add_argument("--lr", type=float, default=d.lr)
    text.add_argument("--e2e-steps", type=int, default=d.e2e_steps)
    text.add_argument("--inits", default=",".join(d.inits), help="init variants of the 25 %% study")
    vlm = p.add_argument_group("vlm part")
    vlm.add_argument("--sft-steps", type=int, default=v.sft_steps, help="teacher SFT steps")
    vlm.add_argument("--sft-batch", type=int, default=v.sft_batch)
    vlm.add_argument("--sft-lr", type=float, default=v.sft_lr, help="the LM's SFT learning rate")
    vlm.add_argument("--projector-lr", type=float, default=v.projector_lr, help="the new projector's (--mm_projector_lr)")
    vlm.add_argument("--distill-steps", type=int, default=v.distill_steps, help="25 %% student distillation steps")
    vlm.add_argument("--distill-batch", type=int, default=v.distill_batch)
    vlm.add_argument("--distill-lr", type=float, default=v.distill_lr)
    vlm.add_argument("--init", default=v.init, help="the student's Mamba init (distill_hybrid.py --mamba_init)")
    vlm.add_argument("--loss", default=v.loss, help="prob+layer (the paper's best) | prob | layer | ce | prob+layer+ce")
    vlm.add_argument("--test-subset", type=int, default=v.test_subset, help="fixed easy-VQA test questions")
    vlm.add_argument("--note", default="", help="why this run is sized down from the defaults (goes into the report)")
    a = p.parse_args(argv)
    if a.part == "text":
        cfg = text_smoke(a.out or d.out, a.report_dir) if a.smoke else replace(
            d, out=a.out or d.out, report_dir=a.report_dir, steps=a.steps, lr=a.lr, e2e_steps=a.e2e_steps,
            inits=tuple(a.inits.split(",")), threads=a.threads or d.threads)
        cfg = replace(cfg, checkpoint=a.checkpoint or cfg.checkpoint)
        return write_text(run_text(cfg), cfg)
    cfg = vlm_smoke(a.out or v.out, a.report_dir) if a.smoke else replace(
        v, out=a.out or v.out, report_dir=a.report_dir, sft_steps=a.sft_steps, sft_batch=a.sft_batch,
        sft_lr=a.sft_lr, projector_lr=a.projector_lr,
        distill_steps=a.distill_steps, distill_batch=a.distill_batch, distill_lr=a.distill_lr, init=a.init,
        loss=a.loss, test_subset=a.test_subset, threads=a.threads or v.threads, note=a.note)
    cfg = replace(cfg, checkpoint=a.checkpoint or cfg.checkpoint)
    return write_vlm(run_vlm(cfg), cfg)


if __name__ == "__main__":
    main()
