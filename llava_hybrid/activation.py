"""`activate()`: make the installed `llava` see this plugin (patches, registrations, re-bound names)."""
from __future__ import annotations

import importlib
import logging
import threading
from typing import Dict, List, Optional

_log = logging.getLogger("llava_hybrid")
_LOCK = threading.RLock()
_SUMMARY: Optional[Dict[str, object]] = None
_IN_PROGRESS = False  # re-entry guard: a register() may import a module that triggers the startup hook

# The subpackages whose register() activate() calls: the host (everything LLaVA sees) and the hybrid
# core (its transformers Auto classes).
REGISTRANTS = ("llava_hybrid.host", "llava_hybrid.hybrid")


def activate() -> Dict[str, object]:
    """Apply every needed upstream patch, register the host and hybrid models, re-bind imported names.

    Idempotent and thread-safe: the second call returns the first call's summary without doing
    anything. Returns {"patches": [needed patch names], "registered": [subpackages registered],
    "rebound": number of names re-pointed in already-imported llava modules}. A subpackage that fails to
    import or register raises (the plugin must not half-load).
    """
    global _SUMMARY, _IN_PROGRESS
    with _LOCK:
        if _SUMMARY is not None:
            return _SUMMARY
        if _IN_PROGRESS:
            return {"in_progress": True}
        _IN_PROGRESS = True
        try:
            _SUMMARY = _activate_once()
        finally:
            _IN_PROGRESS = False
        _log.debug("llava_hybrid activated: %s", _SUMMARY)
        return _SUMMARY


def _activate_once() -> Dict[str, object]:
    from llava_hybrid import _patching, patches

    summary: Dict[str, object] = {"patches": patches.apply_all()}
    registered: List[str] = []
    for name in REGISTRANTS:
        _find_register(name)()
        registered.append(name)
    summary["registered"] = registered
    summary["rebound"] = _patching.rebind_imported()
    return summary


def is_active() -> bool:
    """Whether activate() has completed in this process."""
    return _SUMMARY is not None


def _find_register(name: str):
    """`<name>.register`; import errors propagate, a missing register() is a broken install."""
    module = importlib.import_module(name)
    register = getattr(module, "register", None)
    if register is None:
        raise RuntimeError(f"llava_hybrid.activate(): {name} defines no register() (see docs/design.md)")
    return register
