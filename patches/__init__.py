"""Upstream compatibility patches (installs as `llava_hybrid.patches`).

One module per breakage between LLaVA 1.2.2.post1 (written for transformers 4.36/4.37) and newer
transformers. Each module has `NAME`, `REASON` (one line), `UPSTREAM` (the function it fixes),
`VERSIONS` (the transformers versions it is for), `TARGET` (the upstream module whose import it
waits for), `needed()` (the version guard) and an idempotent `apply()`.

`apply_all()` applies every needed patch: at once when its target module is already imported, else
right after that module is imported (so `import llava_hybrid` and activation never import
transformers.trainer or llava.train themselves). Importing this package is light (stdlib only).
"""
from __future__ import annotations

import importlib
import threading
from typing import Dict, List

from llava_hybrid import _patching

# Order matters only where one patch's target imports another's (the layer-norm alias must be in
# place before llava.train.llava_trainer runs `from transformers.trainer import ALL_LAYERNORM_LAYERS`).
PATCH_MODULES = (
    "layernorm_alias",
    "cache_position",
    "train_sampler_arity",
    "create_optimizer_arity",
    "processing_class",
    "cuda_synchronize",
    "save_checkpoint_metrics",
    "loss_kwargs",
    "image_dtype",
    "training_args_flags",
    "rng_state_numpy",
    "deepspeed_use_cpu",
    "tokenizer_backend_name",
    "grayscale_pad",
)

_STATE: Dict[str, str] = {}  # patch name -> "applied" | "pending: <target>"
_LOCK = threading.RLock()


def _module(short: str):
    return importlib.import_module(f"{__name__}.{short}")


def apply_all() -> List[str]:
    """Apply (now or at the import of their target) every patch the installed versions need.

    Returns the names of the needed patches, in order. Idempotent.
    """
    names = []
    for short in PATCH_MODULES:
        mod = _module(short)
        if not mod.needed():
            continue
        names.append(mod.NAME)
        with _LOCK:
            if mod.NAME in _STATE:
                continue
            _STATE[mod.NAME] = f"pending: import of {mod.TARGET}"
        _patching.when_imported(mod.TARGET, lambda _m, mod=mod: _apply_one(mod))
    return names


def _apply_one(mod) -> None:
    mod.apply()
    with _LOCK:
        _STATE[mod.NAME] = "applied"


def status() -> Dict[str, str]:
    """Patch name -> 'applied' or 'pending: import of <module>' (only patches apply_all() took)."""
    with _LOCK:
        return dict(_STATE)


def describe() -> List[Dict[str, str]]:
    """One row per known patch: name, reason, upstream, versions, needed, state."""
    rows = []
    for short in PATCH_MODULES:
        mod = _module(short)
        rows.append({"name": mod.NAME, "reason": mod.REASON, "upstream": mod.UPSTREAM,
                     "versions": mod.VERSIONS, "needed": str(mod.needed()),
                     "state": status().get(mod.NAME, "not applied")})
    return rows
