"""LLaVA's eval scripts call `.cuda()` on tensors (and models); without CUDA that is a certain crash.

Not part of `apply_all()`: only the startup hook and `python -m llava_hybrid.run` apply it, and only
in a process where torch has no CUDA device. The scripts' `.half()` on images is handled by the
`image_dtype` patch (the towers cast their *output* back to the input dtype, which would feed fp16
features to a float32 projector).
"""
from __future__ import annotations

import logging

from llava_hybrid import _patching

NAME = "cuda_to_cpu"
REASON = "llava.eval.* hard-code tensor.cuda(); on a machine without CUDA map it to a move to the CPU"
UPSTREAM = "torch.Tensor.cuda, torch.nn.Module.cuda (called by llava.eval.model_vqa and friends)"
VERSIONS = "any; only in processes without CUDA"
TARGET = "torch"

_log = logging.getLogger("llava_hybrid")


def needed() -> bool:
    """True where torch has no usable CUDA device."""
    import torch

    return not torch.cuda.is_available()


def apply() -> bool:
    """Map Tensor.cuda and Module.cuda to CPU moves when there is no CUDA; True if it changed."""
    import torch

    if not needed() or _patching.is_replaced(torch.Tensor, "cuda"):
        return False

    def tensor_cuda(self, device=None, non_blocking=False, memory_format=torch.preserve_format):
        """No CUDA here: the tensor stays on (moves to) the CPU."""
        return self.to("cpu", non_blocking=non_blocking, memory_format=memory_format)

    def module_cuda(self, device=None):
        """No CUDA here: the module stays on (moves to) the CPU."""
        return self.to("cpu")

    _patching.replace_attr(torch.Tensor, "cuda", tensor_cuda)
    _patching.replace_attr(torch.nn.Module, "cuda", module_cuda)
    _log.warning("llava_hybrid: no CUDA device; .cuda() calls in llava now keep tensors on the CPU")
    return True
