"""Regenerate the shipped easy-VQA teacher (playground/easyvqa/teacher) with the recipe.

    python playground/easyvqa/train_teacher.py     # the shipped teacher (stage 0 + 1,500 SFT steps, ~20 min)

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
    p.add_argument("--turns", type=int, default=teacher.TeacherConfig.turns,
                   help="questions per training conversation (0 = all of an image's questions)")
    p.add_argument("--tower-steps", type=int, default=teacher.TeacherConfig.tower_steps,
                   help="stage 0: tower pretraining steps on the train labels (0 = start SFT from a random tower)")
    p.add_argument("--tower-augment", default=teacher.TeacherConfig.tower_augment, choices=("none", "flip", "flip_rot90"))
    p.add_argument("--tower-readout", default=teacher.TeacherConfig.tower_readout, choices=("token", "mean"),
                   help="stage 0 trains every image token (token) or their mean (mean) to tell shape and colour")
    p.add_argument("--balance", action="store_true", help="balance yes/no answers per question template")
    p.add_argument("--freeze-tower", choices=("True", "False"), default=str(teacher.TeacherConfig.freeze_tower),
                   help="True: SFT with the stage-0 tower frozen (the recipe); False: train it too")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--save-steps", type=int, default=0, help="also save checkpoint-N every N steps")
    p.add_argument("--ship-step", type=int, default=0, help="ship <work>/sft/checkpoint-N instead of the final model")
    a = p.parse_args(argv)
    torch.set_num_threads(a.threads)
    cfg = replace(teacher.TeacherConfig(), max_steps=a.steps, batch_size=a.batch, learning_rate=a.lr,
                  turns=a.turns, balance=a.balance, tower_steps=a.tower_steps, tower_augment=a.tower_augment,
                  tower_readout=a.tower_readout, freeze_tower=a.freeze_tower == "True")
    data = prepare(os.path.join(a.work, "data"), turns=cfg.turns, balance=cfg.balance, test_subset=500)
    tok_dir = os.path.join(a.work, "tokenizer")
    build_easyvqa_tokenizer(tok_dir)
    init_dir = teacher.build_initial_checkpoint(os.path.join(a.work, "init"), tok_dir, cfg)
    run_dir = os.path.join(a.work, "sft")
    argv = teacher.sft_argv(init_dir, data["train"], data["image_folder"], run_dir, cfg)
    if a.save_steps:
        argv += ["--save_strategy", "steps", "--save_steps", str(a.save_steps)]
    t0 = time.time()
    trainer = teacher.train_teacher(argv)
    extra = {"train_s": time.time() - t0, "steps": trainer.state.global_step, "threads": a.threads}
    shipped = os.path.join(run_dir, f"checkpoint-{a.ship_step}") if a.ship_step else run_dir
    if not os.path.isfile(os.path.join(shipped, "config.json")):
        raise ValueError(f"--ship-step {a.ship_step}: no checkpoint {shipped!r} (pass --save-steps dividing it)")
    if os.path.exists(a.out):
        shutil.rmtree(a.out)
    shutil.copytree(shipped, a.out, ignore=shutil.ignore_patterns(
        "training_args.bin", "checkpoint-*", "optimizer.pt", "scheduler.pt", "rng_state.pth"))
    teacher.write_recipe_card(a.out, cfg, argv, {**extra, "shipped_step": a.ship_step or extra["steps"]})
    print(json.dumps(extra))


if __name__ == "__main__":
    main()
