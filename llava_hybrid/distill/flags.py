"""The distillation flags shared by the VLM entry (`distill.arguments.TrainingArguments`) and the text path
(`distill.text.TextDistillArguments`): Eq. 11's weights, the loss options, the WSD schedule and the paper's
optimiser defaults (MaTVLM section 4.1). A plain dataclass mixed in before a transformers TrainingArguments;
it imports nothing from `llava`."""
from __future__ import annotations

from dataclasses import dataclass, field

from llava_hybrid.distill.losses import LAYER_NORMS, TOKEN_COVERAGES
from llava_hybrid.distill.schedule import DECAY_SHAPES


@dataclass
class DistillFlags:
    """Paper defaults: alpha = beta = 1, gamma = 0, T = 1, AdamW lr 2e-4, betas (0.9, 0.95), wd 0.01, WSD 10/10 %."""

    learning_rate: float = field(default=2e-4)
    weight_decay: float = field(default=0.01)
    adam_beta1: float = field(default=0.9)
    adam_beta2: float = field(default=0.95)
    distill_alpha: float = field(default=1.0, metadata={"help": "weight of L_layer (Eq. 9)"})
    distill_beta: float = field(default=1.0, metadata={"help": "weight of L_prob (Eq. 7)"})
    distill_gamma: float = field(default=0.0, metadata={"help": "weight of L_ce (Eq. 10)"})
    distill_temperature: float = field(default=1.0, metadata={"help": "T of Eq. 7-8"})
    distill_layer_norm: str = field(default="l2", metadata={"help": f"L_layer distance: {' | '.join(LAYER_NORMS)}"})
    distill_tokens: str = field(default="all", metadata={"help": f"covered tokens: {' | '.join(TOKEN_COVERAGES)}"})
    wsd_warmup_fraction: float = field(default=0.1, metadata={"help": "WSD warmup share of the steps"})
    wsd_decay_fraction: float = field(default=0.1, metadata={"help": "WSD decay share of the steps"})
    wsd_decay_shape: str = field(default="linear", metadata={"help": f"WSD decay: {' | '.join(DECAY_SHAPES)}"})
