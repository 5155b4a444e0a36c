"""On CPU (e.g. DeepSpeed's gloo backend), LLaVA's save path calls torch.cuda.synchronize()."""
from __future__ import annotations

from llava_hybrid._patching import Patch, Site


def no_cuda() -> bool:
    """True where torch has no usable CUDA device."""
    import torch

    return not torch.cuda.is_available()


def _synchronize(original, cuda_module):
    def synchronize(device=None):
        """Nothing to wait for without CUDA; with a device (e.g. after a late init) the real call."""
        if cuda_module.is_available():
            return original(device)
        return None

    return synchronize


PATCH = Patch(
    name="cuda_synchronize",
    reason="llava's safe_save_model_for_hf_trainer calls torch.cuda.synchronize() under DeepSpeed, which raises without CUDA",
    upstream="llava.train.train.safe_save_model_for_hf_trainer (torch.cuda.synchronize)",
    target="llava.train.train",
    condition=no_cuda,
    note="only in processes without CUDA",
    sites=(Site("torch.cuda", "", "synchronize", _synchronize),),
)
