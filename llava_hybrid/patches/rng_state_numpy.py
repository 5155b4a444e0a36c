"""torch >= 2.6 loads with weights_only=True by default; old Trainers' rng_state.pth holds numpy arrays."""
from __future__ import annotations

from llava_hybrid._patching import Patch, Site


def numpy_safe_globals() -> list:
    """What a pickled numpy RandomState (and any numpy array) needs under weights_only loading."""
    import numpy as np

    core = np._core if hasattr(np, "_core") else np.core
    return [core.multiarray._reconstruct, np.ndarray, np.dtype, type(np.dtype(np.uint32))]


def _load_rng_state(original, cls):
    import torch

    def _load_rng_state(self, checkpoint):
        """The Trainer's own RNG restore, with the numpy types of its own rng_state.pth allowed."""
        with torch.serialization.safe_globals(numpy_safe_globals()):
            return original(self, checkpoint)

    return _load_rng_state


PATCH = Patch(
    name="rng_state_numpy",
    reason=("Trainer._load_rng_state calls torch.load(rng_state.pth) with torch's default weights_only=True "
            "(torch >= 2.6), which refuses the numpy RNG state the same Trainer saved; allowlist numpy's arrays"),
    upstream="transformers.trainer.Trainer._load_rng_state (resume_from_checkpoint)",
    target="transformers.trainer",
    versions={"transformers": "<4.50", "torch": ">=2.6"},
    note="later transformers allowlist numpy themselves",
    sites=(Site("transformers.trainer", "Trainer", "_load_rng_state", _load_rng_state),),
)
