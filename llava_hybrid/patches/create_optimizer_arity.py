"""Trainer may call `self.create_optimizer(model)` (delayed creation); LLaVATrainer's takes no argument."""
from __future__ import annotations

from llava_hybrid._patching import Patch, Site


def _create_optimizer(original, cls):
    def create_optimizer(self, model=None):
        """LLaVA's optimizer groups over self.model (the model argument is the same module, prepared)."""
        return original(self)

    return create_optimizer


PATCH = Patch(
    name="create_optimizer_arity",
    reason="Trainer calls create_optimizer(model) when optimizer creation is delayed (FSDP); LLaVATrainer's takes only self",
    upstream="llava.train.llava_trainer.LLaVATrainer.create_optimizer",
    target="llava.train.llava_trainer",
    versions={"transformers": ">=5.0"},
    note="Trainer.create_optimizer takes `model` from 5.0",
    sites=(Site("llava.train.llava_trainer", "LLaVATrainer", "create_optimizer", _create_optimizer),),
)
