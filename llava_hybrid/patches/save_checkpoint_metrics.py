"""Trainer._save_checkpoint lost its `metrics` argument; LLaVATrainer passes it on to super()."""
from __future__ import annotations

from llava_hybrid._patching import Patch, Site


def _save_checkpoint(original, cls):
    from transformers import Trainer

    def _save_checkpoint(self, model, trial, metrics=None):
        """LLaVA's adapter-only checkpoint when tuning the projector, else the Trainer's checkpoint."""
        if getattr(self.args, "tune_mm_mlp_adapter", False):
            return original(self, model, trial, metrics)  # this branch never reaches super()
        return Trainer._save_checkpoint(self, model, trial)

    return _save_checkpoint


PATCH = Patch(
    name="save_checkpoint_metrics",
    reason="Trainer._save_checkpoint(model, trial) lost `metrics`; LLaVATrainer calls super()._save_checkpoint(model, trial, metrics)",
    upstream="llava.train.llava_trainer.LLaVATrainer._save_checkpoint",
    target="llava.train.llava_trainer",
    versions={"transformers": ">=4.47"},
    sites=(Site("llava.train.llava_trainer", "LLaVATrainer", "_save_checkpoint", _save_checkpoint),),
)
