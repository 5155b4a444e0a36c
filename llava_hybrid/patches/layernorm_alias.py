"""`ALL_LAYERNORM_LAYERS` left transformers.trainer; llava.train.llava_trainer still imports it there."""
from __future__ import annotations

from llava_hybrid._patching import Patch, Site


def _alias(original, trainer_module):
    """The list where transformers keeps it now."""
    from transformers.pytorch_utils import ALL_LAYERNORM_LAYERS

    return ALL_LAYERNORM_LAYERS


PATCH = Patch(
    name="layernorm_alias",
    reason="transformers.trainer no longer re-exports ALL_LAYERNORM_LAYERS; alias it from transformers.pytorch_utils",
    upstream="llava.train.llava_trainer (module import: from transformers.trainer import ALL_LAYERNORM_LAYERS)",
    target="transformers.trainer",
    versions={"transformers": ">=4.53"},
    sites=(Site("transformers.trainer", "", "ALL_LAYERNORM_LAYERS", _alias),),
)
