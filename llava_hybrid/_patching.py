"""One mechanism for every replacement this plugin makes in upstream modules.

`replace_attr(owner, name, new)` swaps `owner.name` (owner: a module or a class) for `new` once,
remembers the original, and `rebind_imported()` then walks the already-imported `llava*` modules (and
`__main__`) and re-points every name still bound to an original (`from llava.model.builder import
load_pretrained_model` binds a copy of the name at import time, so patching the defining module alone
is not enough).

`when_imported(name, fn)` runs `fn(module)` right after module `name` finishes executing (or at once
if it already has), before the module that imported it binds any names. It is how the startup hook
activates the plugin and how patches of lazily imported upstream modules (llava.train.*) wait for
them.

`Patch` is the skeleton of every compatibility patch (llava_hybrid/patches/): its metadata (name, reason,
the upstream function, the version range it is for, the module whose import it waits for) and its
`Site`s, each an upstream attribute and the function that builds its replacement from the original.
`Patch.apply()` does the rest once: import, resolve, skip what is already replaced, `replace_attr`.

This file imports only the standard library: the startup hook loads it in every process.
"""
from __future__ import annotations

import importlib
import importlib.abc
import sys
import threading
import types
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Optional, Tuple

# id(original object) -> (original, replacement); kept so a second activate() is a no-op and so
# names bound before activation can be found and re-pointed.
_REPLACED: Dict[int, Tuple[Any, Any]] = {}
# (owner qualified name, attribute) -> replacement, for idempotence and for `patched_sites()`.
_BY_SITE: Dict[Tuple[str, str], Any] = {}


def _owner_name(owner: Any) -> str:
    if isinstance(owner, types.ModuleType):
        return owner.__name__
    return f"{owner.__module__}.{owner.__qualname__}"


def replace_attr(owner: Any, name: str, new: Any) -> Any:
    """Replace `owner.<name>` (owner: module or class) by `new` unless already done; return the original.

    For a class the original is what `owner.__dict__` held (None when the attribute was inherited).
    """
    site = (_owner_name(owner), name)
    current = owner.__dict__.get(name) if isinstance(owner, type) else getattr(owner, name, None)
    if site in _BY_SITE and current is _BY_SITE[site]:
        return original_of(new)
    if current is not None:
        _REPLACED[id(current)] = (current, new)
        if _settable(new):
            new.__llava_hybrid_original__ = current
    setattr(owner, name, new)
    _BY_SITE[site] = new
    return current


def is_replaced(owner: Any, name: str) -> bool:
    """Whether `owner.<name>` currently holds a replacement made by `replace_attr`."""
    site = (_owner_name(owner), name)
    current = owner.__dict__.get(name) if isinstance(owner, type) else getattr(owner, name, None)
    return site in _BY_SITE and current is _BY_SITE[site]


def original_of(obj: Any) -> Any:
    """The upstream object that `obj` replaced (or None)."""
    return getattr(obj, "__llava_hybrid_original__", None)


def rebind_imported(prefixes: Tuple[str, ...] = ("llava", "__main__")) -> int:
    """Re-point names bound to replaced originals in already-imported modules; return the count."""
    count = 0
    for mod_name, mod in list(sys.modules.items()):
        if mod is None or not any(mod_name == p or mod_name.startswith(p + ".") for p in prefixes):
            continue
        if mod_name.startswith("llava_hybrid"):
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
    """(owner, attribute) -> replacement, for diagnostics (`python -m llava_hybrid.run --list-patches`)."""
    return dict(_BY_SITE)


# ---- post-import hooks -------------------------------------------------------------------------

_HOOKS: Dict[str, List[Callable[[types.ModuleType], None]]] = {}
_LOCK = threading.RLock()


def when_imported(name: str, fn: Callable[[types.ModuleType], None]) -> None:
    """Call `fn(module)` once module `name` has finished executing (now, if it already has)."""
    with _LOCK:
        mod = sys.modules.get(name)
        if mod is not None and not is_initialising(mod):
            pending = False
        else:
            _HOOKS.setdefault(name, []).append(fn)
            _install_finder()
            pending = True
    if not pending:
        fn(mod)


def pending_hooks() -> Dict[str, int]:
    """Module name -> number of callbacks still waiting for its import."""
    with _LOCK:
        return {k: len(v) for k, v in _HOOKS.items() if v}


def is_initialising(mod: types.ModuleType) -> bool:
    """Whether `mod` is still executing its body (an import in progress)."""
    spec = getattr(mod, "__spec__", None)
    return bool(getattr(spec, "_initializing", False))


def _run_hooks(name: str, module: types.ModuleType) -> None:
    with _LOCK:
        fns = _HOOKS.pop(name, [])
    for fn in fns:
        fn(module)


class _HookLoader(importlib.abc.Loader):
    """Wraps the real loader: executes the module, then the callbacks waiting for it."""

    def __init__(self, loader: importlib.abc.Loader):
        self._loader = loader

    def create_module(self, spec):
        return self._loader.create_module(spec)

    def exec_module(self, module):
        self._loader.exec_module(module)
        _run_hooks(module.__name__, module)

    def __getattr__(self, attr):  # get_source, get_code, is_package, resource readers, ...
        return getattr(self._loader, attr)


class _PostImportFinder(importlib.abc.MetaPathFinder):
    """First on sys.meta_path; only modules with waiting callbacks are looked up (cheap otherwise)."""

    _busy = threading.local()

    def find_spec(self, fullname, path=None, target=None):
        if fullname not in _HOOKS or getattr(self._busy, "on", False):
            return None
        self._busy.on = True
        try:
            for finder in sys.meta_path:
                if finder is self or not hasattr(finder, "find_spec"):
                    continue
                spec = finder.find_spec(fullname, path, target)
                if spec is not None:
                    break
            else:
                return None
        finally:
            self._busy.on = False
        if spec.loader is None or not hasattr(spec.loader, "exec_module"):
            return spec
        spec.loader = _HookLoader(spec.loader)
        return spec


_FINDER = _PostImportFinder()


def _install_finder() -> None:
    if _FINDER not in sys.meta_path:
        sys.meta_path.insert(0, _FINDER)


# ---- the patch skeleton -------------------------------------------------------------------------

@dataclass(frozen=True)
class Site:
    """One upstream attribute a patch replaces: `<module>.<owner>.<attr>` (owner "" = the module itself).

    make(original, owner) -> the replacement; `original` is what the owner held (a class's own
    `__dict__` entry, None when inherited or absent). optional: skip the site when its module does not
    import (e.g. llava's Mistral model on a transformers without Mistral).
    """

    module: str
    owner: str
    attr: str
    make: Callable[[Any, Any], Any]
    optional: bool = False

    def resolve(self) -> Any:
        """The owner object (module or class), importing its module; None for an optional site that fails."""
        try:
            obj = importlib.import_module(self.module)
        except ImportError:
            if self.optional:
                return None
            raise
        for part in filter(None, self.owner.split(".")):
            obj = getattr(obj, part)
        return obj


@dataclass(frozen=True)
class Patch:
    """A compatibility patch: what upstream breaks, where, for which versions, and the replacement.

    versions: {distribution: PEP 440 specifier set} the breakage exists for (e.g. {"transformers":
    ">=4.53"}; {} = every version), checked by llava_hybrid.compat.version_in without importing the
    packages. condition: a run-time condition on top of the versions (e.g. no CUDA device). note: what
    was seen where, shown with the versions.
    """

    name: str
    reason: str
    upstream: str
    target: str
    sites: Tuple[Site, ...]
    versions: Dict[str, str] = field(default_factory=dict)
    condition: Optional[Callable[[], bool]] = None
    note: str = ""

    def needed(self) -> bool:
        """The declared version range holds for every package named (and the condition, if any)."""
        from llava_hybrid.compat import version_in

        in_range = all(version_in(package, spec) for package, spec in self.versions.items())
        return in_range and (self.condition is None or bool(self.condition()))

    @property
    def versions_text(self) -> str:
        """E.g. 'transformers >=4.53 (5.23 still ...)'; 'any version' when unrestricted."""
        text = ", ".join(f"{package} {spec}" for package, spec in self.versions.items()) or "any version"
        return f"{text} ({self.note})" if self.note else text

    def apply(self) -> bool:
        """Replace every site not replaced yet (idempotent); True if anything changed."""
        changed = False
        for site in self.sites:
            owner = site.resolve()
            if owner is None or is_replaced(owner, site.attr):
                continue
            original = owner.__dict__.get(site.attr) if isinstance(owner, type) else getattr(owner, site.attr, None)
            replace_attr(owner, site.attr, site.make(original, owner))
            changed = True
        return changed
