"""Regenerate the shipped easy-VQA teacher (playground/easyvqa/teacher) with the recipe.

    python playground/easyvqa/train_teacher.py [--steps 1500] [--out playground/easyvqa/teacher]

Data and tokenizer come from playground/data/prepare_easyvqa.py's library code (written to --work).
"""
import argparse
import json
import os
import shutil
import time
from dataclasses import replace

import torch

from llava_hybrid.easyvqa import teacher
from llava_hybrid.easyvqa.data import prepare
from llava_hybrid.easyvqa.tokenizer import build_easyvqa_tokenizer


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default="playground/easyvqa/teacher")
    p.add_argument("--work", default="runs/easyvqa-teacher")
    p.add_argument("--steps", type=int, default=teacher.TeacherConfig.max_steps)
    p.add_argument("--batch", type=int, default=teacher.TeacherConfig.batch_size)
    p.add_argument("--lr", type=float, default=teacher.TeacherConfig.learning_rate)
    p.add_argument("--threads", type=int, default=2)
    a = p.parse_args(argv)
    torch.set_num_threads(a.threads)
    cfg = replace(teacher.TeacherConfig(), max_steps=a.steps, batch_size=a.batch, learning_rate=a.lr)
    data = prepare(os.path.join(a.work, "data"), turns=cfg.turns, test_subset=500)
    tok_dir = os.path.join(a.work, "tokenizer")
    build_easyvqa_tokenizer(tok_dir)
    init_dir = teacher.build_initial_checkpoint(os.path.join(a.work, "init"), tok_dir, cfg)
    run_dir = os.path.join(a.work, "sft")
    argv = teacher.sft_argv(init_dir, data["train"], data["image_folder"], run_dir, cfg)
    t0 = time.time()
    trainer = teacher.train_teacher(argv)
    extra = {"train_s": time.time() - t0, "steps": trainer.state.global_step, "threads": a.threads}
    teacher.write_recipe_card(run_dir, cfg, argv, extra)
    if os.path.exists(a.out):
        shutil.rmtree(a.out)
    shutil.copytree(run_dir, a.out, ignore=shutil.ignore_patterns("training_args.bin", "checkpoint-*"))
    print(json.dumps(extra))


if __name__ == "__main__":
    main()
