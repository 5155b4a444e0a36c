"""Text distillation: Eq. 11 against a plain causal-LM teacher (transformers' Llama / Phi, no LLaVA, no images).

    L = alpha * L_layer + beta * L_prob + gamma * L_ce                                    (Eq. 11)

One step (`text_distill_losses`), batch = {"input_ids": (B, L), "index": (B,)}:
  1. the teacher's layer taps {i: (x_i, T_i(x_i))} for the Mamba layers: from a `TeacherTapCache` (the
     teacher ran once over the fixed training set; possible because the teacher is frozen and the
     layer loss reads only its activations) or from a live teacher forward with hooks;
  2. beta = gamma = 0 (the layer-only objective): only the student's Mamba decoder layers run, each on
     the teacher's x_i; no embedding, no other layer, no lm_head;
  3. otherwise the teacher's logits (live) and the student's full forward for L_prob / L_ce;
  4. Eq. 11 with every term kept.

`TextDistillTrainer` is the VLM path's DistillTrainer (AdamW groups, WSD schedule, per-term loss logs,
atomic checkpoints) over transformers.Trainer with this step. `heldout_perplexity` scores a model by
exp(mean next-token cross-entropy) on held-out sequences.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Dict, Optional, Sequence

import torch
import transformers
from torch import nn
from tqdm import tqdm

from llava_hybrid.distill.flags import DistillFlags
from llava_hybrid.distill.losses import DistillLosses, ce_loss, layer_distill_loss, prob_distill_loss, total_loss
from llava_hybrid.distill.trainer import capture_layers, decoder_layers, layer_only_loss, make_trainer_class


@dataclass
class TextDistillArguments(DistillFlags, transformers.TrainingArguments):
    """transformers' TrainingArguments + the distillation flags; text batches keep their `index` column."""

    remove_unused_columns: bool = field(default=False)
    report_to: str = field(default="none")


class TokenDataset(torch.utils.data.Dataset):
    """Fixed-length token sequences (N, L) -> {"input_ids": (L,), "index": ()}; the index finds cached taps."""

    def __init__(self, sequences: torch.Tensor):
        self.sequences = sequences

    def __len__(self) -> int:
        return self.sequences.shape[0]

    def __getitem__(self, i: int) -> Dict[str, torch.Tensor]:
        return {"input_ids": self.sequences[i], "index": torch.tensor(i)}


class TeacherTapCache:
    """The teacher's input and output of `layers` on every training sequence, computed once (no grad).

    hidden[j] (N, L, D) is the residual stream entering decoder layer j (j = num_layers: the last layer's
    output, before the final norm); a layer's output is the next layer's input, so each stream is stored
    once. fp32, on the CPU: 4 bytes x N x L x D per stream.
    """

    def __init__(self, teacher: nn.Module, sequences: torch.Tensor, layers: Sequence[int], batch_size: int = 4,
                 desc: str = "teacher taps"):
        self.layers = sorted(set(int(i) for i in layers))
        streams = sorted({j for i in self.layers for j in (i, i + 1)})
        self.hidden: Dict[int, torch.Tensor] = {}
        n = sequences.shape[0]
        with torch.no_grad(), capture_layers(teacher, self.layers) as taps:
            for start in tqdm(range(0, n, batch_size), desc=desc, unit="batch", leave=False):
                teacher(input_ids=sequences[start:start + batch_size], use_cache=False)
                for i in self.layers:
                    x, y = taps[i]
                    for j, t in ((i, x), (i + 1, y)):
                        if j not in self.hidden:
                            self.hidden[j] = torch.empty(n, *t.shape[1:], dtype=torch.float32)  # (N, L, D)
                        self.hidden[j][start:start + t.shape[0]] = t.float()
        assert set(self.hidden) == set(streams)

    def taps(self, index: torch.Tensor, layers: Sequence[int]) -> Dict[int, tuple]:
        """{i: (x_i (B, L, D), T_i(x_i) (B, L, D))} for the sequences `index` (B,)."""
        missing = [i for i in layers if i not in self.layers]
        if missing:
            raise ValueError(f"TeacherTapCache: layers {missing} were not cached (cached: {self.layers})")
        idx = index.long().cpu()
        return {i: (self.hidden[i][idx], self.hidden[i + 1][idx]) for i in layers}


def text_distill_losses(student: nn.Module, teacher: nn.Module, batch: Dict, mamba_layers: Sequence[int], *,
                        alpha: float = 1.0, beta: float = 1.0, gamma: float = 0.0, temperature: float = 1.0,
                        layer_norm: str = "l2", cache: Optional[TeacherTapCache] = None,
                        student_forward=None) -> DistillLosses:
    """Eq. 11 on one text batch {"input_ids": (B, L), "index": (B,)}; every position covered (no padding)."""
    student_forward = student_forward or student
    input_ids = batch["input_ids"]                                               # (B, L)
    layers = list(mamba_layers) if alpha > 0 else []
    needs_logits = beta > 0 or gamma > 0
    # 1. teacher taps (cached or live) and, for L_prob, the teacher's logits
    t_logits, taps = None, {}
    if cache is not None and not needs_logits:
        taps = cache.taps(batch["index"], layers)
    else:
        with torch.no_grad(), capture_layers(teacher, layers) as live:
            t_logits = teacher(input_ids=input_ids, use_cache=False).logits         # (B, L, V)
        taps = {i: live[i] for i in layers}
    # 2. the student's full forward only when a term reads its logits
    zero = torch.zeros((), dtype=torch.float32)
    prob = ce = zero
    if needs_logits:
        s_logits = student_forward(input_ids=input_ids, use_cache=False).logits     # (B, L, V)
        zero = s_logits.float().sum() * 0.0
        prob = prob_distill_loss(s_logits, t_logits, None, temperature) if beta > 0 else zero
        ce = ce_loss(s_logits, input_ids) if gamma > 0 else zero
    # 3. the student's Mamba layers on the teacher's inputs
    layer = layer_only_loss(student, taps, None, layer_norm) if taps else zero
    # 4. Eq. 11
    return total_loss(layer=layer, prob=prob, ce=ce, alpha=alpha, beta=beta, gamma=gamma)


class TextDistillTrainer(make_trainer_class(transformers.Trainer)):
    """DistillTrainer over transformers.Trainer with the text step; `cache` (optional) holds the teacher's taps."""

    def __init__(self, *args, cache: Optional[TeacherTapCache] = None, **kwargs):
        super().__init__(*args, **kwargs)
        self.cache = cache

    def distill_step(self, model, inputs) -> DistillLosses:
        a = self.args
        return text_distill_losses(
            self.accelerator.unwrap_model(model), self.teacher, inputs, self.mamba_layers,
            alpha=a.distill_alpha, beta=a.distill_beta, gamma=a.distill_gamma, temperature=a.distill_temperature,
            layer_norm=a.distill_layer_norm, cache=self.cache, student_forward=model)


@torch.no_grad()
def heldout_perplexity(model: nn.Module, sequences: torch.Tensor, batch_size: int = 4, desc: str = "") -> float:
    """exp(mean next-token cross-entropy) over every prediction of `sequences` (N, L)."""
    was_training = model.training
    model.eval()
    total, count = 0.0, 0
    for start in tqdm(range(0, sequences.shape[0], batch_size), desc=desc or "perplexity", unit="batch",
                      leave=False):
        ids = sequences[start:start + batch_size]                                   # (B, L)
        logits = model(input_ids=ids, use_cache=False).logits                       # (B, L, V)
        n = ids.shape[0] * (ids.shape[1] - 1)
        total += float(ce_loss(logits, ids)) * n
        count += n
    model.train(was_training)
    return math.exp(total / count)


def step_zero_losses(student: nn.Module, teacher: nn.Module, input_ids: torch.Tensor,
                     mamba_layers: Sequence[int], temperature: float = 1.0) -> Dict[str, float]:
    """L_prob and L_layer under each layer norm on one batch, no grad: the loss balance at a point."""
    with torch.no_grad():
        with capture_layers(teacher, mamba_layers) as live:
            t_logits = teacher(input_ids=input_ids, use_cache=False).logits         # (B, L, V)
        s_logits = student(input_ids=input_ids, use_cache=False).logits             # (B, L, V)
        out = {"prob": float(prob_distill_loss(s_logits, t_logits, None, temperature))}
        s_layers = decoder_layers(student)
        t_out = [live[i][1] for i in mamba_layers]
        s_out = [s_layers[i](live[i][0]) for i in mamba_layers]
        for norm in ("l2", "mse", "token_l2"):
            out[f"layer_{norm}"] = float(layer_distill_loss(t_out, s_out, None, norm=norm))
    return out
