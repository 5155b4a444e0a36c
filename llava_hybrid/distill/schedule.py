"""Warmup-stable-decay (WSD) learning-rate schedule (MaTVLM section 4.1: 10 % warmup, 10 % decay).

Multiplier of the base learning rate at optimiser step s out of S total steps, with
W = round(warmup_fraction * S) and K = round(decay_fraction * S) (each at least 1 when its fraction is > 0):

    s <  W              : (s + 1) / W                       linear warmup (first step already > 0)
    W <= s < S - K      : 1                                 stable
    S - K <= s < S      : p = (s - (S - K) + 1) / (K + 1)   decay: p runs 1/(K+1) .. K/(K+1)
                          linear: 1 - p;  cosine: 0.5 * (1 + cos(pi * p))
    s >= S              : 0                                 the floor, reached only after the last step

Every one of the S steps trains (the last at 1/(K+1) of the base rate for the linear shape); the
multiplier would reach 0 at step S, which never runs.

The paper does not name the decay shape; "linear" is the default (the common WSD choice), "cosine"
is available.
"""
from __future__ import annotations

import math
from typing import Callable

from torch.optim import Optimizer
from torch.optim.lr_scheduler import LambdaLR

DECAY_SHAPES = ("linear", "cosine")


def wsd_lambda(total_steps: int, warmup_fraction: float = 0.1, decay_fraction: float = 0.1,
               decay: str = "linear") -> Callable[[int], float]:
    """The WSD multiplier as a function of the step index (for LambdaLR)."""
    if total_steps <= 0:
        raise ValueError(f"WSD schedule: total steps must be > 0, got {total_steps} (set --max_steps "
                         "or --num_train_epochs)")
    for flag, frac in (("--wsd_warmup_fraction", warmup_fraction), ("--wsd_decay_fraction", decay_fraction)):
        if not 0.0 <= frac <= 1.0:
            raise ValueError(f"{flag} must be in [0, 1], got {frac}")
    if warmup_fraction + decay_fraction > 1.0:
        raise ValueError(f"--wsd_warmup_fraction + --wsd_decay_fraction must be <= 1, got "
                         f"{warmup_fraction} + {decay_fraction}")
    if decay not in DECAY_SHAPES:
        raise ValueError(f"--wsd_decay_shape must be one of {DECAY_SHAPES}, got {decay!r}")
    # a non-zero fraction is at least one step, so short runs still warm up and decay
    warmup = max(1, int(round(warmup_fraction * total_steps))) if warmup_fraction > 0 else 0
    decay_steps = max(1, int(round(decay_fraction * total_steps))) if decay_fraction > 0 else 0
    decay_steps = min(decay_steps, total_steps - warmup) if warmup < total_steps else 0
    decay_start = total_steps - decay_steps

    def factor(step: int) -> float:
        if decay_steps and step >= total_steps:
            return 0.0
        if step < warmup:
            return (step + 1) / warmup
        if step < decay_start or decay_steps == 0:
            return 1.0
        p = (step - decay_start + 1) / (decay_steps + 1)  # < 1 on every step that runs
        if decay == "linear":
            return 1.0 - p
        return 0.5 * (1.0 + math.cos(math.pi * p))

    return factor


def wsd_scheduler(optimizer: Optimizer, total_steps: int, warmup_fraction: float = 0.1,
                  decay_fraction: float = 0.1, decay: str = "linear", last_epoch: int = -1) -> LambdaLR:
    """A LambdaLR with the WSD multiplier over `total_steps` optimiser steps."""
    return LambdaLR(optimizer, wsd_lambda(total_steps, warmup_fraction, decay_fraction, decay),
                    last_epoch=last_epoch)
