"""The VLM part: SmolLM2-135M-Instruct as the language model of a LLaVA VLM on easy-VQA, and its 25 % hybrid.

    python -m llava_hybrid.smollm2 vlm            # the whole part (sized for <= 60 min on 2 shared cores)
    python -m llava_hybrid.smollm2 vlm --smoke    # CI: SmolLM2 cut to its first 4 layers, a few steps

Every stage is a project entry point or LLaVA's own script, run as a user would run it (a subprocess,
its log beside its output, its progress bar echoed):
  1. the checkpoint: the package's GGUF -> a standard HF checkpoint, once (`checkpoint.convert_smollm2`);
  2. the data: easy-VQA in LLaVA's layout (`easyvqa.data.prepare`; the toy's splits and fixed test subset);
  3. the teacher: `scripts/train_sft.py` (the plugin's SFT entry) on SmolLM2 (model_type llama -> LLaVA's own
     `LlavaLlamaForCausalLM`), the easy-VQA stage-0 SigLIP tower of the shipped toy teacher (frozen,
     `mm_vision_select_layer -1`: the layer stage 0 trained) and a new mlp2x_gelu projector, `--version
     chatml`; the LM and the projector train (the projector at a 10x learning rate: it starts random);
  4. the teacher's answers by `llava.eval.model_vqa` (unchanged) -> exact match, per question type, beside
     the image-blind text prior (`easyvqa.score.text_prior`);
  5. the 25 % hybrid: `scripts/distill_hybrid.py` (30 layers x 0.25 = 7.5 -> 8 Mamba layers, the plan
     printed), Mamba layers + projector trained, Eq. 11 with the paper's best loss (prob + layer);
  6. the student's answers by `llava.eval.model_vqa`;
  7. the `vlm` section of docs/real_backbone/results.json and docs/real_backbone.md (the text section kept).

A stage whose output is complete (config.json written last by the atomic save) and was made by the same
command is not run again, so a killed run resumes at the stage it was in.
"""
from __future__ import annotations

import json
import os
import sys
import time
from dataclasses import asdict, dataclass, replace
from typing import Dict, List, Optional

from tqdm import tqdm

from llava_hybrid.easyvqa import score
from llava_hybrid.easyvqa.data import prepare
from llava_hybrid.easyvqa.pipeline import (LOSSES, SHIPPED_TEACHER, StudentSpec, _run, distill_argv, evaluate,
                                           loss_curve)

from .checkpoint import run_checkpoint

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
TOWER = os.path.join(SHIPPED_TEACHER, "vision_tower")  # the easy-VQA stage-0 tower (easyvqa/tower.py)
TEMPLATE = "chatml"
STAGE_CARD = "vlm_stage.json"  # beside each stage's output: the command that made it


@dataclass
class VLMConfig:
    """What the VLM part does; `smoke_config` shrinks it for CI."""

    out: str = os.path.join(REPO, "runs", "smollm2", "vlm")
    report_dir: str = os.path.join(REPO, "docs")
    checkpoint: Optional[str] = None        # default: checkpoint.default_checkpoint_dir() (converted once)
    shrink_layers: Optional[int] = None     # CI: cut the checkpoint to its first layers
    tower: str = TOWER
    test_subset: int = 300                  # the fixed easy-VQA test subset (easyvqa.data.fixed_subset)
    max_train_images: Optional[int] = None
    turns: int = 0                          # questions per training conversation (0 = all of an image's, ~10)
    max_test_images: Optional[int] = None
    sft_steps: int = 240                    # 100 steps already beat the text prior (recipe.md)
    sft_batch: int = 4                      # conversations (images) per step, ~10 answers each
    sft_lr: float = 1e-4                    # the LM's
    projector_lr: float = 1e-3              # the new projector's (--mm_projector_lr)
    ratio: str = "0.25"
    init: str = "attention_calibrated"
    loss: str = "prob+layer"
    distill_steps: int = 80                 # 40 steps already kept 100 % of a 100-step teacher (recipe.md)
    distill_batch: int = 4
    distill_lr: float = 1e-3
    threads: int = 2
    echo: bool = True                       # show each stage's progress bar
    in_process: bool = False                # run each stage's command inside this process (CI: no start-ups)
    note: str = ""                          # why a run was sized down (printed in the report beside what was cut)


def smoke_config(out: str, report_dir: str) -> VLMConfig:
    """The same code on SmolLM2 cut to 4 layers (0.25 -> 1 Mamba layer), 8 train / 2 test images, a few steps,
    every stage inside this process. The SFT is just long enough (12 steps of 2-question conversations at lr
    3e-3) for the cut model to end its answers with <|im_end|>: model_vqa generates up to 1,024 tokens else."""
    return VLMConfig(out=out, report_dir=report_dir, shrink_layers=4, test_subset=4, max_train_images=8,
                     max_test_images=2, turns=2, sft_steps=12, sft_batch=2, sft_lr=3e-3, projector_lr=3e-3,
                     distill_steps=2, distill_batch=2, threads=1, echo=False, in_process=True)


def sft_argv(lm_dir: str, data: Dict, out_dir: str, cfg: VLMConfig) -> List[str]:
    """scripts/train_sft.py flags: LLaVA's fine-tuning flags on a plain LM + a tower + a new projector (chatml).
    The tower is named by its absolute path, as LLaVA's configs name a hub tower."""
    return [
        "--model_name_or_path", lm_dir, "--version", TEMPLATE,
        "--vision_tower", os.path.abspath(cfg.tower), "--mm_projector_type", "mlp2x_gelu", "--mm_vision_select_layer", "-1",
        "--mm_vision_select_feature", "patch", "--image_aspect_ratio", "square",
        "--data_path", data["train"], "--image_folder", data["image_folder"], "--lazy_preprocess", "True",
        "--output_dir", out_dir, "--max_steps", str(cfg.sft_steps),
        "--per_device_train_batch_size", str(cfg.sft_batch), "--gradient_accumulation_steps", "1",
        "--learning_rate", str(cfg.sft_lr), "--mm_projector_lr", str(cfg.projector_lr), "--weight_decay", "0.0",
        "--lr_scheduler_type", "cosine", "--warmup_ratio", "0.05", "--max_grad_norm", "1.0",
        "--model_max_length", "512", "--bf16", "False", "--use_cpu", "True", "--dataloader_num_workers", "0",
        "--logging_steps", "1", "--save_strategy", "no", "--report_to", "none", "--seed", "0",
        "--group_by_modality_length", "False", "--disable_tqdm", "False",
    ]


def _stage_done(out_dir: str, argv: List[str]) -> bool:
    card = os.path.join(out_dir, STAGE_CARD)
    if not (os.path.isfile(os.path.join(out_dir, "config.json")) and os.path.isfile(card)):
        return False
    with open(card) as f:
        return json.load(f).get("argv") == argv


def _run_stage(script: str, argv: List[str], out_dir: str, cfg: VLMConfig, log_name: str) -> Dict:
    """Run scripts/<script> with argv unless `out_dir` already holds its finished output; returns the card."""
    card_path = os.path.join(out_dir, STAGE_CARD)
    if _stage_done(out_dir, argv):
        with open(card_path) as f:
            return {**json.load(f), "reused": True}
    t = time.time()
    _run([sys.executable, os.path.join(REPO, "scripts", script), *argv],
         os.path.join(cfg.out, log_name), cfg.threads, echo=cfg.echo, in_process=cfg.in_process)
    card = {"argv": argv, "train_s": time.time() - t}
    with open(card_path, "w") as f:
        json.dump(card, f, indent=1)
    return card


def _per_type(result: Dict) -> Dict:
    """Scores with each question type's accuracy also at the top level (`yes/no`, `shape`, `color`)."""
    return {**result, **{t: v["accuracy"] for t, v in result["per_type"].items()}}


def run_vlm(cfg: VLMConfig) -> Dict:
    """The VLM part; returns its results dict (also merged into the report by `write_results`)."""
    from llava_hybrid.hybrid.plan import plan_mamba_layers

    t0 = time.time()
    stages = tqdm(total=6, desc="SmolLM2 VLM", unit="stage")
    # 1. checkpoint (and the CI cut)
    stages.set_postfix_str("checkpoint")
    lm = run_checkpoint(cfg.checkpoint, cfg.shrink_layers, cfg.out)
    with open(os.path.join(lm, "config.json")) as f:
        num_layers = json.load(f)["num_hidden_layers"]
    layers = plan_mamba_layers(num_layers, ratio=float(cfg.ratio))
    os.makedirs(cfg.out, exist_ok=True)
    # 2. data
    stages.set_postfix_str("data")
    data = prepare(os.path.join(cfg.out, "data"), turns=cfg.turns, test_subset=cfg.test_subset,
                   max_train_images=cfg.max_train_images, max_test_images=cfg.max_test_images)
    question_file = data.get("test_subset", data["test"])
    stages.update()
    # 3. teacher: SFT through the plugin's entry
    stages.set_postfix_str("teacher SFT")
    teacher_dir = os.path.join(cfg.out, "teacher")
    argv = sft_argv(lm, data, teacher_dir, cfg)
    sft = _run_stage("train_sft.py", argv, teacher_dir, cfg, "sft.log")
    stages.update()
    # 4. teacher eval + the image-blind prior
    stages.set_postfix_str("teacher eval")
    t = time.time()
    teacher = _per_type(evaluate(teacher_dir, data, os.path.join(cfg.out, "eval", "teacher"), cfg.threads,
                                 conv_mode=TEMPLATE, echo=cfg.echo, in_process=cfg.in_process))
    teacher.update(eval_s=time.time() - t, path=_rel(teacher_dir), loss_curve=loss_curve(teacher_dir),
                   sft={"steps": cfg.sft_steps, "batch": cfg.sft_batch, "lr": cfg.sft_lr, "projector_lr": cfg.projector_lr,
                        "trained": "LM + mlp2x_gelu projector (tower frozen)", "train_s": sft["train_s"],
                        "reused": sft.get("reused", False)})
    prior = _per_type(score.text_prior(question_file))
    stages.update()
    # 5. the 25 % student: scripts/distill_hybrid.py
    spec = StudentSpec(ratio=cfg.ratio, loss=cfg.loss, init=cfg.init)
    stages.set_postfix_str(f"distill {spec.name}")
    student_dir = os.path.join(cfg.out, "students", spec.name)
    argv = distill_argv(spec, teacher_dir, data, student_dir, cfg, version=TEMPLATE, logging_steps=1)
    distill = _run_stage("distill_hybrid.py", argv, student_dir, cfg, f"distill-{spec.name}.log")
    stages.update()
    # 6. student eval
    stages.set_postfix_str(f"eval {spec.name}")
    t = time.time()
    student = _per_type(evaluate(student_dir, data, os.path.join(cfg.out, "eval", spec.name), cfg.threads,
                                 conv_mode=TEMPLATE, echo=cfg.echo, in_process=cfg.in_process))
    with open(os.path.join(student_dir, "config.json")) as f:
        saved_layers = json.load(f).get("mamba_layers")
    student.update(eval_s=time.time() - t, of_teacher=student["accuracy"] / teacher["accuracy"] if teacher["accuracy"] else None,
                   layers=saved_layers, planned_layers=layers, num_layers=num_layers, spec=asdict(spec),
                   loss_weights=dict(zip(("alpha", "beta", "gamma"), LOSSES[spec.loss])),
                   distill={"steps": cfg.distill_steps, "batch": cfg.distill_batch, "lr": cfg.distill_lr,
                            "trained": "Mamba layers + mm_projector", "train_s": distill["train_s"],
                            "reused": distill.get("reused", False)},
                   loss_curve=loss_curve(student_dir), loss_terms=_loss_terms(student_dir))
    stages.update()
    stages.close()
    return {"teacher": teacher, "text_prior": prior, "students": {cfg.ratio: student},
            "config": {k: v for k, v in asdict(cfg).items() if k not in ("out", "report_dir", "echo", "in_process", "note")},
            "note": cfg.note, "runtime_s": time.time() - t0, "finished": time.strftime("%Y-%m-%d %H:%M:%S")}


def _loss_terms(run_dir: str) -> Dict[str, list]:
    """(step, value) per logged distillation term (loss_layer, loss_prob, loss_ce) from trainer_state.json."""
    path = os.path.join(run_dir, "trainer_state.json")
    if not os.path.isfile(path):
        return {}
    with open(path) as f:
        history = json.load(f).get("log_history", [])
    return {k: [(h["step"], h[k]) for h in history if k in h] for k in ("loss_layer", "loss_prob", "loss_ce")}


def _rel(path: str) -> str:
    return os.path.relpath(path, REPO) if os.path.abspath(path).startswith(REPO) else path


def write_results(vlm: Dict, cfg: VLMConfig) -> Dict:
    """Merge the vlm section into <report_dir>/real_backbone/results.json (the text section is kept) and
    regenerate the report."""
    from .report import merge_section

    return merge_section(cfg.report_dir, "vlm", vlm, threads=cfg.threads)
