"""(d) transformers 5 removed Trainer(tokenizer=); LLaVA's train() still passes tokenizer=."""
from __future__ import annotations

import importlib

from llava_hybrid import _patching
from llava_hybrid.compat import transformers_version

NAME = "processing_class"
REASON = "Trainer(tokenizer=) was removed in favour of processing_class=; llava.train.train.train() passes tokenizer="
UPSTREAM = "llava.train.llava_trainer.LLaVATrainer.__init__ (inherited Trainer.__init__)"
VERSIONS = "transformers >= 5.0"
TARGET = "llava.train.llava_trainer"


def needed() -> bool:
    """True from transformers 5.0."""
    return transformers_version() >= (5, 0, 0)


def apply() -> bool:
    """Give LLaVATrainer an __init__ mapping tokenizer= to processing_class=; True if it changed."""
    llava_trainer = importlib.import_module("llava.train.llava_trainer")
    cls = llava_trainer.LLaVATrainer
    if _patching.is_replaced(cls, "__init__"):
        return False
    trainer_base = llava_trainer.Trainer

    def __init__(self, *args, tokenizer=None, **kwargs):
        """Trainer.__init__ with the pre-5.0 `tokenizer=` keyword mapped to `processing_class=`."""
        if tokenizer is not None:
            if kwargs.get("processing_class") is not None:
                raise ValueError("LLaVATrainer: pass tokenizer= or processing_class=, not both")
            kwargs["processing_class"] = tokenizer
        trainer_base.__init__(self, *args, **kwargs)

    _patching.replace_attr(cls, "__init__", __init__)
    return True
