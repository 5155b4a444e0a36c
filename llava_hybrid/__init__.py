"""llava_hybrid: MaTVLM (Mamba-2 / attention hybrid VLMs distilled from a LLaVA teacher) as a plugin
over the `llava` package (PyPI llava-torch).

Importing this package is light (no torch, no transformers). `activate()` makes `llava` see the
plugin; the installed startup hook calls it when `llava` is imported (`LLAVA_HYBRID_DISABLE=1` turns
the hook off) and `python -m llava_hybrid.run <llava module> ...` calls it explicitly.
"""
from __future__ import annotations

__version__ = "0.1.0"
__all__ = ["activate", "__version__"]


def activate():
    """Apply upstream patches, register the host and hybrid models, re-bind names; idempotent.

    Returns a summary dict (see `llava_hybrid.activation.activate`).
    """
    from llava_hybrid.activation import activate as _activate

    return _activate()
