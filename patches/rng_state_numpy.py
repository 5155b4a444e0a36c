"""(h) torch >= 2.6 loads with weights_only=True by default; old Trainers' rng_state.pth holds numpy arrays."""
from __future__ import annotations

import importlib

from llava_hybrid import _patching
from llava_hybrid.compat import installed_version, transformers_version

NAME = "rng_state_numpy"
REASON = ("Trainer._load_rng_state calls torch.load(rng_state.pth) with torch's default weights_only=True "
          "(torch >= 2.6), which refuses the numpy RNG state the same Trainer saved; allowlist numpy's arrays")
UPSTREAM = "transformers.trainer.Trainer._load_rng_state (resume_from_checkpoint)"
VERSIONS = "transformers < 4.50 (later ones allowlist numpy themselves) with torch >= 2.6"
TARGET = "transformers.trainer"


def needed() -> bool:
    """True for transformers < 4.50 under torch >= 2.6 (read without importing either)."""
    return transformers_version() < (4, 50, 0) and installed_version("torch") >= (2, 6, 0)


def numpy_safe_globals() -> list:
    """What a pickled numpy RandomState (and any numpy array) needs under weights_only loading."""
    import numpy as np

    core = np._core if hasattr(np, "_core") else np.core
    return [core.multiarray._reconstruct, np.ndarray, np.dtype, type(np.dtype(np.uint32))]


def apply() -> bool:
    """Run Trainer._load_rng_state with numpy's array types allowlisted; True if it changed."""
    import torch

    trainer_mod = importlib.import_module("transformers.trainer")
    cls = trainer_mod.Trainer
    if _patching.is_replaced(cls, "_load_rng_state"):
        return False
    original = cls.__dict__["_load_rng_state"]

    def _load_rng_state(self, checkpoint):
        """The Trainer's own RNG restore, with the numpy types of its own rng_state.pth allowed."""
        with torch.serialization.safe_globals(numpy_safe_globals()):
            return original(self, checkpoint)

    _patching.replace_attr(cls, "_load_rng_state", _load_rng_state)
    return True
