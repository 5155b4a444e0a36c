"""One mechanism for every replacement this plugin makes in upstream modules.

`replace_attr(module, name, new)` swaps `module.name` for `new` once, remembers the original, and
`rebind_imported()` then walks the already-imported `llava*` modules (and `__main__`) and re-points
every name still bound to an original (`from llava.model.builder import load_pretrained_model`
binds a copy of the name at import time, so patching the defining module alone is not enough).
"""
from __future__ import annotations

import sys
import types
from typing import Any, Callable, Dict, Tuple

# id(original object) -> (original, replacement); kept so a second activate() is a no-op and so
# names bound before activation can be found and re-pointed.
_REPLACED: Dict[int, Tuple[Any, Any]] = {}
# (module name, attribute) -> replacement, for idempotence and for `originals()`.
_BY_SITE: Dict[Tuple[str, str], Any] = {}


def replace_attr(module: types.ModuleType, name: str, new: Any) -> Any:
    """Replace `module.<name>` by `new` unless already done; return the original object."""
    site = (module.__name__, name)
    current = getattr(module, name, None)
    if site in _BY_SITE and current is _BY_SITE[site]:
        return original_of(new)
    if current is not None:
        _REPLACED[id(current)] = (current, new)
        if _settable(new):
            new.__llava_hybrid_original__ = current
    setattr(module, name, new)
    _BY_SITE[site] = new
    return current


def original_of(obj: Any) -> Any:
    """The upstream object that `obj` replaced (or None)."""
    return getattr(obj, "__llava_hybrid_original__", None)


def rebind_imported(prefixes: Tuple[str, ...] = ("llava", "__main__")) -> int:
    """Re-point names bound to replaced originals in already-imported modules; return the count."""
    count = 0
    for mod_name, mod in list(sys.modules.items()):
        if mod is None or not any(mod_name == p or mod_name.startswith(p + ".") for p in prefixes):
            continue
        for attr, value in list(vars(mod).items()):
            hit = _REPLACED.get(id(value))
            if hit is not None and hit[0] is value:
                setattr(mod, attr, hit[1])
                count += 1
    return count


def _settable(obj: Any) -> bool:
    return isinstance(obj, (types.FunctionType, type)) or hasattr(obj, "__dict__")


def patched_sites() -> Dict[Tuple[str, str], Callable]:
    """(module, attribute) -> replacement, for diagnostics (`python -m llava_hybrid.run --list-patches`)."""
    return dict(_BY_SITE)
