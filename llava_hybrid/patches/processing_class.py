"""transformers 5 removed Trainer(tokenizer=); LLaVA's train() still passes tokenizer=."""
from __future__ import annotations

from llava_hybrid._patching import Patch, Site


def _init(original, cls):
    from transformers import Trainer

    def __init__(self, *args, tokenizer=None, **kwargs):
        """Trainer.__init__ with the pre-5.0 `tokenizer=` keyword mapped to `processing_class=`."""
        if tokenizer is not None:
            if kwargs.get("processing_class") is not None:
                raise ValueError("LLaVATrainer: pass tokenizer= or processing_class=, not both")
            kwargs["processing_class"] = tokenizer
        Trainer.__init__(self, *args, **kwargs)

    return __init__


PATCH = Patch(
    name="processing_class",
    reason="Trainer(tokenizer=) was removed in favour of processing_class=; llava.train.train.train() passes tokenizer=",
    upstream="llava.train.llava_trainer.LLaVATrainer.__init__ (inherited Trainer.__init__)",
    target="llava.train.llava_trainer",
    versions={"transformers": ">=5.0"},
    sites=(Site("llava.train.llava_trainer", "LLaVATrainer", "__init__", _init),),
)
