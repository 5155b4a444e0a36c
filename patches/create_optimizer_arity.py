"""Trainer may call `self.create_optimizer(model)` (delayed creation); LLaVATrainer's takes no argument."""
from __future__ import annotations

import importlib
import inspect

from llava_hybrid import _patching
from llava_hybrid.compat import transformers_version

NAME = "create_optimizer_arity"
REASON = "Trainer calls create_optimizer(model) when optimizer creation is delayed (FSDP); LLaVATrainer's takes only self"
UPSTREAM = "llava.train.llava_trainer.LLaVATrainer.create_optimizer"
VERSIONS = "transformers whose Trainer.create_optimizer takes `model` (5.x)"
TARGET = "llava.train.llava_trainer"


def needed() -> bool:
    """True from transformers 5.0 (apply() re-checks the installed Trainer's signature)."""
    return transformers_version() >= (5, 0, 0)


def apply() -> bool:
    """Let LLaVATrainer.create_optimizer take (and ignore) `model`; True if it changed."""
    llava_trainer = importlib.import_module("llava.train.llava_trainer")
    cls = llava_trainer.LLaVATrainer
    if "model" not in inspect.signature(llava_trainer.Trainer.create_optimizer).parameters:
        return False
    if _patching.is_replaced(cls, "create_optimizer"):
        return False
    original = cls.__dict__["create_optimizer"]

    def create_optimizer(self, model=None):
        """LLaVA's optimizer groups over self.model (the model argument is the same module, prepared)."""
        return original(self)

    _patching.replace_attr(cls, "create_optimizer", create_optimizer)
    return True
