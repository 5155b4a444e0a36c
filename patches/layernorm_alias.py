"""(a) `ALL_LAYERNORM_LAYERS` left transformers.trainer; llava.train.llava_trainer still imports it there."""
from __future__ import annotations

import importlib

from llava_hybrid import _patching
from llava_hybrid.compat import transformers_version

NAME = "layernorm_alias"
REASON = "transformers.trainer no longer re-exports ALL_LAYERNORM_LAYERS; alias it from transformers.pytorch_utils"
UPSTREAM = "llava.train.llava_trainer (module import: from transformers.trainer import ALL_LAYERNORM_LAYERS)"
VERSIONS = "transformers >= 4.53"
TARGET = "transformers.trainer"


def needed() -> bool:
    """True where transformers.trainer lacks the name (>= 4.53)."""
    return transformers_version() >= (4, 53, 0)


def apply() -> bool:
    """Set transformers.trainer.ALL_LAYERNORM_LAYERS; return True when it had to be added."""
    trainer = importlib.import_module("transformers.trainer")
    if hasattr(trainer, "ALL_LAYERNORM_LAYERS"):
        return False
    from transformers.pytorch_utils import ALL_LAYERNORM_LAYERS

    _patching.replace_attr(trainer, "ALL_LAYERNORM_LAYERS", ALL_LAYERNORM_LAYERS)
    return True
