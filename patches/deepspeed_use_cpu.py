"""(i) transformers 4.x: --use_cpu with --deepspeed wraps the model in DDP while the Trainer expects DeepSpeed."""
from __future__ import annotations

import importlib
import logging

from llava_hybrid import _patching
from llava_hybrid.compat import transformers_version

NAME = "deepspeed_use_cpu"
REASON = ("with --use_cpu the 4.x TrainingArguments build a plain CPU state, so accelerate wraps the model in DDP "
          "while --deepspeed makes the Trainer save through the DeepSpeed engine (AttributeError at the first "
          "checkpoint); without CUDA, DeepSpeed already runs on its CPU accelerator, so --use_cpu is dropped")
UPSTREAM = "transformers.training_args.TrainingArguments.__post_init__ / _setup_devices"
VERSIONS = "transformers 4.x (seen on 4.37.2; 5.23 runs DeepSpeed under --use_cpu)"
TARGET = "transformers.training_args"

_log = logging.getLogger("llava_hybrid.patches")


def needed() -> bool:
    """True before transformers 5."""
    return transformers_version() < (5, 0, 0)


def apply() -> bool:
    """Make `use_cpu` yield to `deepspeed` on CUDA-less machines; True if it changed."""
    import torch

    training_args = importlib.import_module("transformers.training_args")
    cls = training_args.TrainingArguments
    if _patching.is_replaced(cls, "__post_init__"):
        return False
    original = cls.__dict__["__post_init__"]

    def __post_init__(self):
        """--deepspeed without CUDA: DeepSpeed's CPU accelerator does the work, so --use_cpu is dropped."""
        if self.deepspeed and self.use_cpu and not torch.cuda.is_available():
            _log.info("llava_hybrid: --use_cpu dropped under --deepspeed (DeepSpeed runs on its CPU accelerator)")
            self.use_cpu = False
            self.dataloader_pin_memory = False  # what --use_cpu would have set
        return original(self)

    _patching.replace_attr(cls, "__post_init__", __post_init__)
    return True
