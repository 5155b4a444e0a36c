"""(e) On CPU (e.g. DeepSpeed's gloo backend), LLaVA's save path calls torch.cuda.synchronize()."""
from __future__ import annotations

from llava_hybrid import _patching

NAME = "cuda_synchronize"
REASON = "llava's safe_save_model_for_hf_trainer calls torch.cuda.synchronize() under DeepSpeed, which raises without CUDA"
UPSTREAM = "llava.train.train.safe_save_model_for_hf_trainer (torch.cuda.synchronize)"
VERSIONS = "any transformers; only in processes without CUDA"
TARGET = "llava.train.train"


def needed() -> bool:
    """True where torch has no usable CUDA device (torch is already imported by then via llava)."""
    import torch

    return not torch.cuda.is_available()


def apply() -> bool:
    """Make torch.cuda.synchronize a no-op while no CUDA device exists; True if it changed."""
    import torch

    if _patching.is_replaced(torch.cuda, "synchronize"):
        return False
    original = torch.cuda.synchronize

    def synchronize(device=None):
        """Nothing to wait for without CUDA; with a device (e.g. after a late init) the real call."""
        if torch.cuda.is_available():
            return original(device)
        return None

    _patching.replace_attr(torch.cuda, "synchronize", synchronize)
    return True
