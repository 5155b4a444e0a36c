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
REASON = ("llava.eval.* hard-code tensor.cuda() and .to(device='cuda'); on a machine without CUDA map "
          "them to moves to the CPU")
UPSTREAM = ("torch.Tensor.cuda/.to, torch.nn.Module.cuda/.to (called by llava.eval.model_vqa, "
            "model_vqa_loader and llava.model.builder)")
VERSIONS = "any; only in processes without CUDA"
TARGET = "torch"

_log = logging.getLogger("llava_hybrid")


def needed() -> bool:
    """True where torch has no usable CUDA device."""
    import torch

    return not torch.cuda.is_available()


def _is_cuda(device) -> bool:
    """True for 'cuda', 'cuda:1', torch.device('cuda'), or an int device index (CUDA's meaning)."""
    import torch

    if isinstance(device, torch.device):
        return device.type == "cuda"
    if isinstance(device, str):
        return device.split(":")[0] == "cuda"
    return isinstance(device, int) and not isinstance(device, bool)


def _to_cpu_args(args, kwargs):
    """Rewrite the device of a `.to(...)` call from CUDA to CPU; dtype and other arguments kept."""
    if args and _is_cuda(args[0]):
        args = ("cpu",) + tuple(args[1:])
    if _is_cuda(kwargs.get("device")):
        kwargs = {**kwargs, "device": "cpu"}
    return args, kwargs


def apply() -> bool:
    """Map .cuda() and .to(<cuda device>) of tensors and modules to CPU moves when there is no CUDA."""
    import torch

    if not needed() or _patching.is_replaced(torch.Tensor, "cuda"):
        return False

    def tensor_cuda(self, device=None, non_blocking=False, memory_format=torch.preserve_format):
        """No CUDA here: the tensor stays on (moves to) the CPU."""
        return self.to("cpu", non_blocking=non_blocking, memory_format=memory_format)

    def module_cuda(self, device=None):
        """No CUDA here: the module stays on (moves to) the CPU."""
        return self.to("cpu")

    tensor_to_upstream, module_to_upstream = torch.Tensor.to, torch.nn.Module.to

    def tensor_to(self, *args, **kwargs):
        """No CUDA here: a CUDA target device becomes the CPU; everything else as upstream."""
        args, kwargs = _to_cpu_args(args, kwargs)
        return tensor_to_upstream(self, *args, **kwargs)

    def module_to(self, *args, **kwargs):
        """No CUDA here: a CUDA target device becomes the CPU; everything else as upstream."""
        args, kwargs = _to_cpu_args(args, kwargs)
        return module_to_upstream(self, *args, **kwargs)

    _patching.replace_attr(torch.Tensor, "cuda", tensor_cuda)
    _patching.replace_attr(torch.nn.Module, "cuda", module_cuda)
    _patching.replace_attr(torch.Tensor, "to", tensor_to)
    _patching.replace_attr(torch.nn.Module, "to", module_to)
    _log.warning("llava_hybrid: no CUDA device; .cuda() / .to('cuda') calls now keep tensors on the CPU")
    return True
