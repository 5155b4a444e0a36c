"""Single-stage distillation of a hybrid Mamba-2 student from its all-attention VLM teacher.

    main(argv) = activate -> parse -> validate (before any model) -> teacher (frozen, eval, no grad)
               -> student = build_llava_student(teacher, plan) with only --trainable parts trained
               -> LLaVA's data module (phi template) -> DistillTrainer(LLaVATrainer).train()
               -> hybrid checkpoint (config + weights + tokenizer + vision tower reference)

One training step (`distill_losses`):
  1. the teacher splices the images into the sequence once (prepare_inputs_labels_for_multimodal),
     giving the multimodal labels / padding mask / positions shared by both models;
  2. the teacher runs (no grad) with forward hooks on its decoder layers that capture each Mamba
     layer's input x_l and output T_l(x_l);
  3. the student runs normally on the same inputs (its own splice): logits for L_prob and L_ce (skipped
     when beta = gamma = 0: the layer-only objective needs no full student forward);
  4. each student Mamba decoder layer runs a second time on the teacher's x_l: S_l(x_l) for L_layer; with
     the student forward of step 3 this twin pass is batched into it (`twin_pass`: the layer runs once on
     [its own input; x_l] stacked along the batch), else the layers run alone (`layer_only_loss`);
  5. L = alpha L_layer + beta L_prob + gamma L_ce (terms with weight 0 are not computed).
"""
from __future__ import annotations

import logging
import os
import sys
from contextlib import nullcontext
from typing import Dict, List, Optional, Sequence

import torch
from torch import nn

from llava_hybrid.distill.arguments import TRAINABLE_PARTS, DistillPlan, parse_args, validate
from llava_hybrid.distill.losses import (DistillLosses, ce_loss, coverage_mask, layer_distill_loss,
                                         prob_distill_loss, total_loss)
from llava_hybrid.distill.passes import capture_layers, layer_only_loss, twin_pass
from llava_hybrid.distill.schedule import wsd_scheduler
from llava_hybrid.checkpoint_files import last_complete_checkpoint
from llava_hybrid.guards import FiniteGuardMixin, check_resume, preflight_deepspeed_cpu, write_run_plan
from llava_hybrid.host.saving import AtomicCheckpointMixin, remove_unfinished_saves, save_final_model
from llava_hybrid.hybrid.configuration import layer_plan_line
from llava_hybrid.hybrid.init import CALIBRATED_INITS, decoder_layers

logger = logging.getLogger(__name__)


def distill_losses(student: nn.Module, teacher: nn.Module, batch: Dict, mamba_layers: Sequence[int], *,
                   alpha: float = 1.0, beta: float = 1.0, gamma: float = 0.0, temperature: float = 1.0,
                   layer_norm: str = "l2", tokens: str = "all", student_forward=None,
                   batch_twin: bool = True) -> DistillLosses:
    """Eq. 11 on one batch (input_ids, labels, attention_mask, images), every term returned.

    student_forward: how to call the student (the DeepSpeed engine during training); default `student`.
    batch_twin: run the layers' second pass inside the student forward (twin_pass); False runs it apart
    (the same numbers; the benchmark's reference).
    """
    student_forward = student_forward or student
    input_ids, labels = batch["input_ids"], batch.get("labels")
    attention_mask, images = batch.get("attention_mask"), batch.get("images")
    image_sizes = batch.get("image_sizes")
    # 1. the multimodal sequence, once for the teacher; its labels / mask / positions serve both
    with torch.no_grad():
        (_, position_ids, mm_mask, _, embeds, mm_labels) = teacher.prepare_inputs_labels_for_multimodal(
            input_ids, None, attention_mask, None, labels, images, image_sizes)
        # 2. teacher forward with taps on the Mamba layers' positions
        with capture_layers(teacher, mamba_layers if alpha > 0 else []) as taps:
            t_logits = teacher(inputs_embeds=embeds, attention_mask=mm_mask, position_ids=position_ids,
                               use_cache=False).logits                        # (B, L', V)
    # 3. student forward on the same raw inputs (its own splice, with grad through its projector); a
    #    layer-only objective (beta = gamma = 0) needs none: L_layer runs the student layers on the teacher's inputs
    if mm_labels is None:
        mm_labels = torch.full(t_logits.shape[:2], -100, dtype=torch.long, device=t_logits.device)
    mask = coverage_mask(mm_labels, mm_mask, tokens)                           # (B, L')
    zero = torch.zeros((), dtype=torch.float32, device=t_logits.device)
    prob = ce = zero
    twin: Dict[int, torch.Tensor] = {}
    if beta > 0 or gamma > 0:
        # step 4 inside step 3 (twin_pass); not under reentrant gradient checkpointing, whose forward runs
        # without grad inside the checkpointed layer, where the twin rows are split off
        checkpointing = getattr(student.get_model() if hasattr(student, "get_model") else student.model,
                                "gradient_checkpointing", False) and student.training
        batched = batch_twin and alpha > 0 and not checkpointing
        with twin_pass(student, {i: taps[i] for i in mamba_layers}, mm_mask, position_ids) if batched \
                else nullcontext({}) as twin:
            s_logits = student_forward(input_ids=input_ids, attention_mask=attention_mask, images=images,
                                       image_sizes=image_sizes, use_cache=False).logits  # (B, L', V)
        assert s_logits.shape[:2] == t_logits.shape[:2], (s_logits.shape, t_logits.shape)
        zero = s_logits.float().sum() * 0.0
        prob = prob_distill_loss(s_logits, t_logits, mask, temperature) if beta > 0 else zero
        ce = ce_loss(s_logits, mm_labels) if gamma > 0 else zero
    # 4. each student Mamba layer on the teacher's input to that layer
    layer = zero
    if alpha > 0 and twin:
        layer = layer_distill_loss([taps[i][1] for i in mamba_layers], [twin[i] for i in mamba_layers], mask,
                                   norm=layer_norm)
    elif alpha > 0:
        taps = {i: taps[i] for i in mamba_layers}
        layer = layer_only_loss(student, taps, mask, layer_norm, attention_mask=mm_mask, position_ids=position_ids)
    # 5. Eq. 11
    return total_loss(layer=layer, prob=prob, ce=ce, alpha=alpha, beta=beta, gamma=gamma)


def set_trainable(student: nn.Module, parts: Sequence[str]) -> List[str]:
    """Freeze everything, then unfreeze parameters of the named parts; returns the trained names."""
    patterns = tuple(p for part in parts for p in TRAINABLE_PARTS[part])
    student.requires_grad_(False)
    names = []
    for name, p in student.named_parameters():
        if "vision_tower" not in name and any(pat in name for pat in patterns):
            p.requires_grad_(True)
            names.append(name)
    if not names:
        raise ValueError(f"--trainable {','.join(parts)}: no student parameter matches")
    return names


def optimizer_groups(model: nn.Module, weight_decay: float) -> List[Dict]:
    """AdamW groups over the trainable parameters (section 4.1): no weight decay on what mamba_ssm marks
    `_no_weight_decay` (dt_bias, A_log, D) nor on any vector (biases, norm weights); decay on the rest."""
    decay, no_decay = [], []
    for p in model.parameters():
        if p.requires_grad:
            rank = len(getattr(p, "ds_shape", p.shape))  # a ZeRO-3 partitioned parameter keeps its shape there
            (no_decay if getattr(p, "_no_weight_decay", False) or rank < 2 else decay).append(p)
    groups = [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    return [g for g in groups if g["params"]]


def _get_llava_trainer():
    from llava.train.llava_trainer import LLaVATrainer
    return LLaVATrainer


def make_trainer_class(base: Optional[type] = None):
    """DistillTrainer(base), base LLaVATrainer by default (built after activation so LLaVA's trainer imports
    cleanly); the text path passes transformers.Trainer and overrides `distill_step`."""
    import transformers

    class DistillTrainer(FiniteGuardMixin, AtomicCheckpointMixin, base or _get_llava_trainer()):
        """LLaVATrainer whose loss is Eq. 11 against a frozen teacher held outside the engine; it stops at the
        first non-finite loss term or weight (FiniteGuardMixin), and its checkpoint-N directories appear only
        when whole (AtomicCheckpointMixin), each with the run plan it was trained under (`run_plan`)."""

        def __init__(self, *args, teacher: nn.Module, mamba_layers: Sequence[int], run_plan: Optional[Dict] = None,
                     **kwargs):
            super().__init__(*args, **kwargs)
            self.teacher = teacher
            self.mamba_layers = list(mamba_layers)
            self.run_plan = run_plan
            self.model_accepts_loss_kwargs = False  # our loss is a mean: the Trainer scales it for GA
            self._sums: Dict[str, float] = {}
            self._count = 0

        def distill_step(self, model, inputs) -> DistillLosses:
            """Eq. 11 on one batch (`model`: the engine-wrapped student)."""
            a = self.args
            return distill_losses(
                self.accelerator.unwrap_model(model), self.teacher, inputs, self.mamba_layers,
                alpha=a.distill_alpha, beta=a.distill_beta, gamma=a.distill_gamma,
                temperature=a.distill_temperature, layer_norm=a.distill_layer_norm, tokens=a.distill_tokens,
                student_forward=model)

        def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
            losses = self.distill_step(model, inputs)
            self.check_finite_loss({"layer": losses.layer, "prob": losses.prob, "ce": losses.ce})
            for k, v in losses.as_floats().items():
                self._sums[k] = self._sums.get(k, 0.0) + v
            self._count += 1
            return (losses.total, losses) if return_outputs else losses.total

        def log(self, logs: Dict[str, float], *args, **kwargs) -> None:
            """Adds the mean of each loss term since the last log to the Trainer's log line."""
            if "loss" in logs and self._count:
                logs.update({k: round(v / self._count, 6) for k, v in self._sums.items()})
                self._sums, self._count = {}, 0
            super().log(logs, *args, **kwargs)

        def create_optimizer(self, model=None):
            """AdamW (args' betas / eps) with weight decay only on matrices outside norms and SSM scalars."""
            if self.optimizer is None:
                opt_model = self.model if model is None else model
                cls, kwargs = transformers.Trainer.get_optimizer_cls_and_kwargs(self.args)
                self.optimizer = cls(optimizer_groups(opt_model, self.args.weight_decay), **kwargs)
            return self.optimizer

        def create_scheduler(self, num_training_steps: int, optimizer=None):
            """Warmup-stable-decay over the run's optimiser steps (section 4.1)."""
            if self.lr_scheduler is None:
                a = self.args
                self.lr_scheduler = wsd_scheduler(optimizer or self.optimizer, num_training_steps,
                                                  a.wsd_warmup_fraction, a.wsd_decay_fraction, a.wsd_decay_shape)
                self._created_lr_scheduler = True
            return self.lr_scheduler

        def _write_checkpoint(self, model, trial) -> None:
            transformers.Trainer._save_checkpoint(self, model, trial)  # LLaVA's adds nothing for a student
            if self.run_plan is not None and self.args.should_save:
                from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR

                name = f"{PREFIX_CHECKPOINT_DIR}-{self.state.global_step}"
                write_run_plan(os.path.join(self._get_output_dir(trial), name), self.run_plan)

    return DistillTrainer


def _compute_dtype(training_args) -> torch.dtype:
    return torch.bfloat16 if training_args.bf16 else torch.float16 if training_args.fp16 else torch.float32


def load_teacher(path: str, training_args):
    """(tokenizer, teacher, image_processor): frozen, eval mode, never partitioned by ZeRO-3."""
    from transformers.integrations import deepspeed as hf_ds
    from llava_hybrid.host.builder import load_pretrained_model

    ds_config = getattr(training_args, "hf_deepspeed_config", None)
    hf_ds.unset_hf_deepspeed_config()  # a ZeRO-3 config would make from_pretrained partition the teacher
    # the name only matters to LLaVA's own loader (LLaVA-1.5 checkpoints), which picks LlavaLlamaForCausalLM
    # only for a name containing "llava"; validation admitted nothing else to it
    try:
        tokenizer, teacher, processor, _ = load_pretrained_model(
            path, None, "llava-" + os.path.basename(os.path.normpath(path)), device=str(training_args.device),
            device_map=None, torch_dtype=_compute_dtype(training_args))
    finally:
        if ds_config is not None:
            hf_ds.set_hf_deepspeed_config(ds_config)
    teacher.requires_grad_(False).eval()
    return tokenizer, teacher, processor


CALIBRATION_SAMPLES = 4  # training conversations the calibrated inits fit on (--mamba_init attention_calibrated)


def calibration_batch(data_module: Dict, n: int = CALIBRATION_SAMPLES) -> Dict:
    """The teacher's forward kwargs on the first `n` training samples (input_ids, attention_mask, images)."""
    dataset, collate = data_module["train_dataset"], data_module["data_collator"]
    batch = collate([dataset[i] for i in range(min(n, len(dataset)))])
    return {k: batch[k] for k in ("input_ids", "attention_mask", "images") if k in batch}


def build_distill_student(teacher: nn.Module, plan: DistillPlan, model_args,
                          calibration: Optional[Dict] = None) -> nn.Module:
    """The hybrid student (--mamba_init, default Eq. 6), trainable parts set, vision tower by absolute path.

    calibration: the teacher's forward kwargs on a few training samples (`calibration_batch`), used by the
    calibrated inits only."""
    from llava_hybrid.host.hybrid_models import build_llava_student
    from llava_hybrid.host.siglip import resolve_tower_path

    init = model_args.mamba_init
    student = build_llava_student(teacher, plan.mamba_layers, init_from_attention=model_args.init_from_attention,
                                  carry_bias=model_args.mamba_carry_bias, seed=0,
                                  chunk_size=model_args.mamba_chunk_size, init=init,
                                  calibration=calibration if init in CALIBRATED_INITS else None)
    tower = getattr(teacher.config, "mm_vision_tower", None)
    if tower:
        student.config.mm_vision_tower = os.path.abspath(resolve_tower_path(str(tower), teacher.config))
    student.config.use_cache = False
    set_trainable(student, plan.trainable)
    return student.train()


def main(argv: Optional[List[str]] = None):
    """Entry point of scripts/distill_hybrid.py (plain python or the deepspeed launcher)."""
    import llava_hybrid

    llava_hybrid.activate()
    preflight_deepspeed_cpu(sys.argv[1:] if argv is None else argv)  # before the flags start DeepSpeed
    model_args, data_args, training_args = parse_args(argv)
    plan = validate(model_args, data_args, training_args)
    say = (lambda msg: print(f"distill: {msg}", flush=True)) if training_args.should_log else (lambda msg: None)
    if training_args.should_log:
        print(layer_plan_line(plan.num_layers, plan.mamba_layers), flush=True)
    if training_args.should_save:
        remove_unfinished_saves(training_args.output_dir)  # .tmp-* of a save killed half-way
    resume = last_complete_checkpoint(training_args.output_dir, log=say)
    if resume:
        check_resume(resume, plan.run_plan)  # before any model loads: a changed plan is refused, both named

    from llava import conversation as conversation_lib
    from llava_hybrid.host.data import check_sample_lengths, tokens_per_image
    from llava_hybrid.host.training import llava_train

    torch.manual_seed(training_args.seed)
    tokenizer, teacher, processor = load_teacher(plan.teacher_path, training_args)
    if plan.model_path != plan.teacher_path:  # the student starts from another all-attention VLM
        tokenizer, base, _ = load_teacher(plan.model_path, training_args)
    else:
        base = teacher
    # data: LLaVA's module with the template (host.preprocess routes phi / chatml and the collator)
    tokenizer.model_max_length = training_args.model_max_length
    tokenizer.padding_side = "right"
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.unk_token
    conversation_lib.default_conversation = conversation_lib.conv_templates[model_args.version]  # validated
    data_args.image_processor = processor
    data_args.is_multimodal = True
    data_args.mm_use_im_start_end = getattr(base.config, "mm_use_im_start_end", False)
    check_sample_lengths(plan.samples, tokenizer, data_args, tokens_per_image(teacher), tokenizer.model_max_length)
    data_module = llava_train().make_supervised_data_module(tokenizer=tokenizer, data_args=data_args)

    def splice_like_the_data(model):  # student and teacher splice and truncate identically (else the teacher's own config)
        model.config.image_aspect_ratio = data_args.image_aspect_ratio
        model.config.tokenizer_padding_side = tokenizer.padding_side
        model.config.tokenizer_model_max_length = tokenizer.model_max_length

    splice_like_the_data(teacher)
    splice_like_the_data(base)  # the calibration batch runs through it
    calibration = calibration_batch(data_module) if model_args.mamba_init in CALIBRATED_INITS else None
    student = build_distill_student(base, plan, model_args, calibration)
    del base, calibration
    splice_like_the_data(student)
    n_train = sum(p.numel() for p in student.parameters() if p.requires_grad)
    if training_args.should_log:
        print(f"distill: {n_train:,} trainable parameters ({','.join(plan.trainable)}), Mamba init "
              f"{student.mamba_init_report['init']}", flush=True)

    trainer = make_trainer_class()(model=student, tokenizer=tokenizer, args=training_args, teacher=teacher,
                                   mamba_layers=plan.mamba_layers, run_plan=plan.run_plan, **data_module)
    trainer.resumed_from = resume
    if resume:
        say(f"resuming from {resume}")
    trainer.train(resume_from_checkpoint=resume)
    trainer.check_finite_weights()  # the last step's update too: non-finite weights are never saved
    trainer.save_state()
    save_final_model(trainer, student, tokenizer, training_args.output_dir)  # atomic, lane-portable
    return trainer
