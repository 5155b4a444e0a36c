"""LLaVA's training stack as the entry points (host.sft, distill) reach it: only after activation.

`llava.train.train` (LLaVA's flag dataclasses, data module, save helper) imports `llava.train.llava_trainer`,
which imports names newer transformers moved (patches/layernorm_alias.py): it imports only once the plugin is
active. So no module of ours imports it at module level; the entries import it through `llava_train()` and
build their flag dataclasses (subclasses of LLaVA's) on first use, published under their names with
`publish` so that pickling them (the Trainer saves its arguments with torch.save) finds them.
"""
from __future__ import annotations

import sys
import types
from typing import Callable, Sequence


def llava_train() -> types.ModuleType:
    """`llava.train.train`, after `llava_hybrid.activate()` (idempotent) made it importable."""
    import llava_hybrid

    llava_hybrid.activate()
    from llava.train import train

    return train


def publish(module_name: str, *classes: type) -> tuple:
    """Bind classes built inside a function as `<module>.<ClassName>` (what pickle looks up); returns them."""
    module = sys.modules[module_name]
    for cls in classes:
        cls.__qualname__ = cls.__name__
        setattr(module, cls.__name__, cls)
    return classes


def lazy_attributes(module_name: str, names: Sequence[str], build: Callable[[], tuple]) -> Callable:
    """A module-level `__getattr__` serving `names` from `build()` (a cached tuple in the same order)."""

    def __getattr__(name: str):
        if name in names:
            return build()[list(names).index(name)]
        raise AttributeError(f"module {module_name!r} has no attribute {name!r}")

    return __getattr__
