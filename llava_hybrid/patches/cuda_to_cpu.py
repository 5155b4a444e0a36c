"""LLaVA's eval scripts call `.cuda()` on tensors (and models); without CUDA that is a certain crash.

Not part of `apply_all()`: only the startup hook and `python -m llava_hybrid.run` apply it, and only
in a process where torch has no CUDA device. The scripts' `.half()` on images is handled by the
`image_dtype` patch (the towers cast their *output* back to the input dtype, which would feed fp16
features to a float32 projector).
"""
from __future__ import annotations

import logging

from llava_hybrid._patching import Patch, Site
from llava_hybrid.patches.cuda_synchronize import no_cuda

_log = logging.getLogger("llava_hybrid")


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


def _tensor_cuda(original, cls):
    import torch

    def tensor_cuda(self, device=None, non_blocking=False, memory_format=torch.preserve_format):
        """No CUDA here: the tensor stays on (moves to) the CPU."""
        return self.to("cpu", non_blocking=non_blocking, memory_format=memory_format)

    return tensor_cuda


def _module_cuda(original, cls):
    def module_cuda(self, device=None):
        """No CUDA here: the module stays on (moves to) the CPU."""
        return self.to("cpu")

    return module_cuda


def _to(original, cls):
    upstream = getattr(cls, "to")  # as it is before the replacement (Tensor.to is inherited from the C base)

    def to(self, *args, **kwargs):
        """No CUDA here: a CUDA target device becomes the CPU; everything else as upstream."""
        args, kwargs = _to_cpu_args(args, kwargs)
        return upstream(self, *args, **kwargs)

    return to


PATCH = Patch(
    name="cuda_to_cpu",
    reason=("llava.eval.* hard-code tensor.cuda() and .to(device='cuda'); on a machine without CUDA map "
            "them to moves to the CPU"),
    upstream=("torch.Tensor.cuda/.to, torch.nn.Module.cuda/.to (called by llava.eval.model_vqa, "
              "model_vqa_loader and llava.model.builder)"),
    target="torch",
    condition=no_cuda,
    note="only in processes without CUDA; applied by the startup hook and llava_hybrid.run, not by activate()",
    sites=(Site("torch", "Tensor", "cuda", _tensor_cuda), Site("torch", "nn.Module", "cuda", _module_cuda),
           Site("torch", "Tensor", "to", _to), Site("torch", "nn.Module", "to", _to)),
)


def apply() -> bool:
    """Apply where there is no CUDA device (idempotent); True if it changed anything."""
    if not PATCH.needed() or not PATCH.apply():
        return False
    _log.warning("llava_hybrid: no CUDA device; .cuda() / .to('cuda') calls now keep tensors on the CPU")
    return True
