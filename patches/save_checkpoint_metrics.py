"""(f) Trainer._save_checkpoint lost its `metrics` argument; LLaVATrainer passes it on to super()."""
from __future__ import annotations

import importlib
import inspect

from llava_hybrid import _patching
from llava_hybrid.compat import transformers_version

NAME = "save_checkpoint_metrics"
REASON = "Trainer._save_checkpoint(model, trial) lost `metrics`; LLaVATrainer calls super()._save_checkpoint(model, trial, metrics)"
UPSTREAM = "llava.train.llava_trainer.LLaVATrainer._save_checkpoint"
VERSIONS = "transformers >= 4.47"
TARGET = "llava.train.llava_trainer"


def needed() -> bool:
    """True from transformers 4.47."""
    return transformers_version() >= (4, 47, 0)


def apply() -> bool:
    """Route LLaVATrainer's full-model checkpoint to the 2-argument Trainer method; True if changed."""
    llava_trainer = importlib.import_module("llava.train.llava_trainer")
    cls = llava_trainer.LLaVATrainer
    trainer_base = llava_trainer.Trainer
    if "metrics" in inspect.signature(trainer_base._save_checkpoint).parameters:
        return False
    if _patching.is_replaced(cls, "_save_checkpoint"):
        return False
    original = cls.__dict__["_save_checkpoint"]

    def _save_checkpoint(self, model, trial, metrics=None):
        """LLaVA's adapter-only checkpoint when tuning the projector, else the Trainer's checkpoint."""
        if getattr(self.args, "tune_mm_mlp_adapter", False):
            return original(self, model, trial, metrics)  # this branch never reaches super()
        return trainer_base._save_checkpoint(self, model, trial)

    _patching.replace_attr(cls, "_save_checkpoint", _save_checkpoint)
    return True
