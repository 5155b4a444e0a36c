"""transformers 4.x: --use_cpu with --deepspeed wraps the model in DDP while the Trainer expects DeepSpeed."""
from __future__ import annotations

import logging

from llava_hybrid._patching import Patch, Site

_log = logging.getLogger("llava_hybrid.patches")


def _post_init(original, cls):
    import torch

    def __post_init__(self):
        """--deepspeed without CUDA: DeepSpeed's CPU accelerator does the work, so --use_cpu is dropped."""
        if self.deepspeed and self.use_cpu and not torch.cuda.is_available():
            _log.info("llava_hybrid: --use_cpu dropped under --deepspeed (DeepSpeed runs on its CPU accelerator)")
            self.use_cpu = False
            self.dataloader_pin_memory = False  # what --use_cpu would have set
        return original(self)

    return __post_init__


PATCH = Patch(
    name="deepspeed_use_cpu",
    reason=("with --use_cpu the 4.x TrainingArguments build a plain CPU state, so accelerate wraps the model in DDP "
            "while --deepspeed makes the Trainer save through the DeepSpeed engine (AttributeError at the first "
            "checkpoint); without CUDA, DeepSpeed already runs on its CPU accelerator, so --use_cpu is dropped"),
    upstream="transformers.training_args.TrainingArguments.__post_init__ / _setup_devices",
    target="transformers.training_args",
    versions={"transformers": "<5.0"},
    note="seen on 4.37.2; 5.23 runs DeepSpeed under --use_cpu",
    sites=(Site("transformers.training_args", "TrainingArguments", "__post_init__", _post_init),),
)
