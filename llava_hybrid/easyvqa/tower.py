"""Stage 0 of the teacher recipe: pretrain the SigLIP-architecture tower on the easy-VQA train images.

Why a stage 0: LLaVA and TinyLLaVA never train a tower from nothing; they start from a pretrained
CLIP / SigLIP and (in TinyLLaVA's recipes) fine-tune it. No pretrained tower ships offline, so the
recipe makes one from the train split. Trained end to end through a random LM, the tower learns
too slowly: the LM first settles on the question-text prior (yes/no 87 %), and the gradient that
reaches the tower through 8 random decoder layers is weak (docs/easyvqa/recipe.md: 73.8 % after
800 SFT steps, colour 24 %). Trained directly on labels (the recipe's 3,000 steps, flips, per-token
read-out; ~4 min on one thread) its tokens tell shape 98.4 % and colour 100 % of the test images.

The supervision is read from the train split only: an image's shape is the answer to its "what
shape" question, its colour the answer to its "what colour" question (an image without such a
question is ignored by that head). The features trained are exactly the ones the LM will see,
`hidden_states[mm_vision_select_layer]`, and every one of the image tokens is trained to tell the
image's shape and colour through two linear heads (thrown away afterwards): the LM then reads the
answer from whichever image token it attends to, instead of first learning to pool 16 of them.
"""
from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from tqdm import tqdm

from .data import COLORS, SHAPES, load_split

IGNORE = -100


@dataclass(frozen=True)
class TowerPretrainConfig:
    """Stage-0 schedule (measured: docs/easyvqa/recipe.md)."""
    steps: int = 3000        # the recipe's (TeacherConfig.tower_steps)
    batch_size: int = 64
    learning_rate: float = 2e-3
    warmup_steps: int = 50
    augment: str = "flip"    # "flip": a random left-right flip per image; "flip_rot90": one flip and
                             # one quarter turn per batch (shows upside-down triangles, which easy-VQA
                             # never draws); "none"
    readout: str = "token"   # "token": every image token must tell shape and colour; "mean": their mean
    select_layer: int = -1   # the features the LLaVA config hands the LM (mm_vision_select_layer)
    seed: int = 0


def image_labels(split: str) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(pixels (N,3,64,64) in SigLIP normalisation, shape ids (N,), colour ids (N,)) of an easy-VQA split.

    Labels come from the split's own shape / colour answers; IGNORE where the image has none.
    """
    from PIL import Image

    questions, paths = load_split(split)
    ids = sorted(paths)
    row = {image_id: k for k, image_id in enumerate(ids)}
    shape = torch.full((len(ids),), IGNORE)
    color = torch.full((len(ids),), IGNORE)
    for q in questions:
        if q.qtype == "shape":
            shape[row[q.image_id]] = SHAPES.index(q.answer)
        elif q.qtype == "color":
            color[row[q.image_id]] = COLORS.index(q.answer)
    pixels = np.stack([np.asarray(Image.open(paths[i]).convert("RGB"), dtype=np.float32) for i in ids])
    pixels = (pixels / 255.0 - 0.5) / 0.5  # SiglipImageProcessor: rescale, mean = std = 0.5
    return torch.from_numpy(pixels).permute(0, 3, 1, 2).contiguous(), shape, color


AUGMENTS = ("none", "flip", "flip_rot90")
READOUTS = ("token", "mean")


def _augment(x: torch.Tensor, how: str, gen: torch.Generator) -> torch.Tensor:
    """(B,3,S,S) -> (B,3,S,S), augmented as TowerPretrainConfig.augment says."""
    if how == "flip":
        flip = torch.rand(x.shape[0], generator=gen) < 0.5
        return torch.where(flip[:, None, None, None], x.flip(3), x)
    if how == "flip_rot90":
        if torch.rand((), generator=gen) < 0.5:
            x = x.flip(3)
        return torch.rot90(x, int(torch.randint(4, (), generator=gen)), dims=(2, 3))
    return x


class ProbeHeads(nn.Module):
    """Tower features (B,N,C) -> shape logits (B,M,3), colour logits (B,M,8): per token (M = N) for
    readout "token", of the tokens' mean (M = 1) for "mean"."""

    def __init__(self, width: int, readout: str = "token"):
        super().__init__()
        self.shape = nn.Linear(width, len(SHAPES))
        self.color = nn.Linear(width, len(COLORS))
        self.readout = readout

    def forward(self, features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if self.readout == "mean":
            features = features.mean(dim=1, keepdim=True)  # (B, 1, C)
        return self.shape(features), self.color(features)


def _masked_ce(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Cross-entropy of every token's logits (B,N,K) against its image's label (B,), over labelled
    images; 0 (not NaN) when a batch has none."""
    known = labels != IGNORE
    if not known.any():
        return logits.sum() * 0.0
    per_token = logits[known]  # (b, N, K)
    return F.cross_entropy(per_token.flatten(0, 1), labels[known].repeat_interleave(per_token.shape[1]))


def _features(tower, pixels: torch.Tensor, select_layer: int) -> torch.Tensor:
    return tower(pixel_values=pixels, output_hidden_states=True).hidden_states[select_layer]  # (B, N, C)


@torch.no_grad()
def probe_accuracy(tower, heads: ProbeHeads, pixels, shape, color, select_layer: int) -> dict:
    """Per-token shape / colour accuracy over labelled images (`<name>`), and the share of images whose
    every token is right (`<name>_all_tokens`); batches of 500."""
    was_training = tower.training
    tower.eval()
    preds = [heads(_features(tower, pixels[j:j + 500], select_layer)) for j in range(0, len(pixels), 500)]
    tower.train(was_training)
    out = {}
    for name, labels, logits in (("shape", shape, torch.cat([p[0] for p in preds])),
                                 ("color", color, torch.cat([p[1] for p in preds]))):
        known = labels != IGNORE
        right = logits[known].argmax(-1) == labels[known][:, None]  # (b, N): token right about its image
        out[name] = float(right.float().mean())
        out[name + "_all_tokens"] = float(right.all(dim=1).float().mean())
    return out


def pretrain_tower(tower_dir: str, cfg: TowerPretrainConfig = TowerPretrainConfig()) -> dict:
    """Train the SigLIP tower saved in `tower_dir` on the train split's labels; save it back in place.

    Returns (and writes to <tower_dir>/pretrain.json) the schedule, the train time and the heads'
    accuracy on the test images (reported only: nothing is selected on it).
    """
    import time

    from transformers import SiglipVisionModel

    from llava_hybrid.host.saving import save_siglip_model

    if cfg.steps <= 0:
        raise ValueError(f"--tower-steps must be > 0, got {cfg.steps}")
    if cfg.augment not in AUGMENTS or cfg.readout not in READOUTS:
        raise ValueError(f"tower augment {cfg.augment!r} / readout {cfg.readout!r}: choose from {AUGMENTS} / {READOUTS}")
    if not os.path.isfile(os.path.join(tower_dir, "config.json")):
        raise ValueError(f"{tower_dir!r} holds no SigLIP tower (config.json missing)")
    torch.manual_seed(cfg.seed)
    gen = torch.Generator().manual_seed(cfg.seed)
    tower = SiglipVisionModel.from_pretrained(tower_dir).train()
    heads = ProbeHeads(tower.config.hidden_size, cfg.readout)
    params = list(tower.parameters()) + list(heads.parameters())
    opt = torch.optim.AdamW(params, lr=cfg.learning_rate, weight_decay=0.0)
    warm = max(1, cfg.warmup_steps)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min(1.0, (s + 1) / warm) * 0.5 * (
        1 + np.cos(np.pi * min(1.0, s / cfg.steps))))
    pixels, shape, color = image_labels("train")
    t0 = time.time()
    bar = tqdm(range(cfg.steps), desc="tower pretrain", unit="step")
    for step in bar:
        idx = torch.randint(len(pixels), (cfg.batch_size,), generator=gen)
        x = pixels[idx]
        x = _augment(x, cfg.augment, gen)
        shape_logits, color_logits = heads(_features(tower, x, cfg.select_layer))
        loss = _masked_ce(shape_logits, shape[idx]) + _masked_ce(color_logits, color[idx])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        sched.step()
        if step % 50 == 0:
            bar.set_postfix(loss=f"{loss.item():.3f}")
    train_s = time.time() - t0
    test = probe_accuracy(tower, heads, *image_labels("test"), cfg.select_layer)
    save_siglip_model(tower.eval(), tower_dir)
    card = {"config": asdict(cfg), "train_s": train_s, "test_probe_accuracy": test}
    with open(os.path.join(tower_dir, "pretrain.json"), "w") as f:
        json.dump(card, f, indent=1)
    return card
