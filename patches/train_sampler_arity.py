"""(c) Trainer now calls `self._get_train_sampler(train_dataset)`; LLaVATrainer's takes no argument."""
from __future__ import annotations

import importlib

from llava_hybrid import _patching
from llava_hybrid.compat import transformers_version

NAME = "train_sampler_arity"
REASON = "Trainer calls _get_train_sampler(train_dataset); LLaVATrainer's override takes only self"
UPSTREAM = "llava.train.llava_trainer.LLaVATrainer._get_train_sampler"
VERSIONS = "transformers >= 4.52"
TARGET = "llava.train.llava_trainer"


def needed() -> bool:
    """True from transformers 4.52, where the sampler hook gained its dataset argument."""
    return transformers_version() >= (4, 52, 0)


def apply() -> bool:
    """Give LLaVATrainer._get_train_sampler an optional dataset argument; True if it changed."""
    llava_trainer = importlib.import_module("llava.train.llava_trainer")
    cls = llava_trainer.LLaVATrainer
    if _patching.is_replaced(cls, "_get_train_sampler"):
        return False
    original = cls.__dict__["_get_train_sampler"]
    trainer_base = llava_trainer.Trainer

    def _get_train_sampler(self, train_dataset=None):
        """LLaVA's sampler (modality-grouped) for its own train set; the Trainer's for another set."""
        if train_dataset is None or train_dataset is self.train_dataset:
            return original(self)
        return trainer_base._get_train_sampler(self, train_dataset)

    _patching.replace_attr(cls, "_get_train_sampler", _get_train_sampler)
    return True
