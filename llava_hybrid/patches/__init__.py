"""Upstream compatibility patches.

One module per breakage between LLaVA 1.2.2.post1 (written for transformers 4.36/4.37) and newer
transformers (or torch, or a CUDA-less machine). Each module defines `PATCH`, a `_patching.Patch`:
its name, reason, the upstream function it fixes, the declared version range it is for, the upstream
module whose import it waits for, and its sites (the attribute and the function that builds the
replacement from the original). The skeleton (version guard, import, idempotence) is `Patch` itself.

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
    "image_token_bos",
)

_STATE: Dict[str, str] = {}  # patch name -> "applied" | "pending: <target>"
_LOCK = threading.RLock()


def patch(short: str) -> _patching.Patch:
    """The `PATCH` of module `llava_hybrid.patches.<short>`."""
    return importlib.import_module(f"{__name__}.{short}").PATCH


def apply_all() -> List[str]:
    """Apply (now or at the import of their target) every patch the installed versions need.

    Returns the names of the needed patches, in order. Idempotent.
    """
    names = []
    for short in PATCH_MODULES:
        p = patch(short)
        if not p.needed():
            continue
        names.append(p.name)
        with _LOCK:
            if p.name in _STATE:
                continue
            _STATE[p.name] = f"pending: import of {p.target}"
        _patching.when_imported(p.target, lambda _m, p=p: _apply_one(p))
    return names


def _apply_one(p: _patching.Patch) -> None:
    p.apply()
    with _LOCK:
        _STATE[p.name] = "applied"


def status() -> Dict[str, str]:
    """Patch name -> 'applied' or 'pending: import of <module>' (only patches apply_all() took)."""
    with _LOCK:
        return dict(_STATE)


def describe() -> List[Dict[str, str]]:
    """One row per known patch: name, reason, upstream, versions, needed, state."""
    rows = []
    for short in PATCH_MODULES:
        p = patch(short)
        rows.append({"name": p.name, "reason": p.reason, "upstream": p.upstream, "versions": p.versions_text,
                     "needed": str(p.needed()), "state": status().get(p.name, "not applied")})
    return rows
