"""Trainer now calls `self._get_train_sampler(train_dataset)`; LLaVATrainer's takes no argument."""
from __future__ import annotations

from llava_hybrid._patching import Patch, Site


def _get_train_sampler(original, cls):
    from transformers import Trainer

    def _get_train_sampler(self, train_dataset=None):
        """LLaVA's sampler (modality-grouped) for its own train set; the Trainer's for another set."""
        if train_dataset is None or train_dataset is self.train_dataset:
            return original(self)
        return Trainer._get_train_sampler(self, train_dataset)

    return _get_train_sampler


PATCH = Patch(
    name="train_sampler_arity",
    reason="Trainer calls _get_train_sampler(train_dataset); LLaVATrainer's override takes only self",
    upstream="llava.train.llava_trainer.LLaVATrainer._get_train_sampler",
    target="llava.train.llava_trainer",
    versions={"transformers": ">=4.52"},
    sites=(Site("llava.train.llava_trainer", "LLaVATrainer", "_get_train_sampler", _get_train_sampler),),
)
