"""Startup hook: existing `llava` entry points see the plugin without being edited.

The installed `llava_hybrid_startup.pth` (one line, run by `site` at interpreter start) imports this
module unless `LLAVA_HYBRID_DISABLE=1`. Importing it costs a dictionary lookup per later import: it
registers post-import callbacks (llava_hybrid._patching.when_imported) and imports neither torch nor
transformers. When `llava` (always the first llava module to finish loading) or, as retries,
`llava.conversation` / `llava.model.builder` finish loading, it calls `llava_hybrid.activate()`:
before the importing module (e.g. llava.eval.model_vqa's `from llava.model.builder import
load_pretrained_model`) binds any name. In a process without CUDA it also maps `.cuda()` to the CPU.

    python -m llava_hybrid.startup install     # write the .pth into site-packages (purelib)
    python -m llava_hybrid.startup uninstall   # remove it
    python -m llava_hybrid.startup status      # where it is, whether it is installed / enabled
"""
from __future__ import annotations

import logging
import os
import sys
import sysconfig
from pathlib import Path
from typing import Optional

from llava_hybrid import _patching

PTH_NAME = "llava_hybrid_startup.pth"
# The packaged llava_hybrid/llava_hybrid_startup.pth holds the one line `install` copies: `site`
# executes .pth lines that start with "import"; its guard keeps interpreter start clean when the
# package was removed without `uninstall`, and skips even importing this module when disabled.
PTH_LINE = (Path(__file__).with_name(PTH_NAME)).read_text()
DISABLE_ENV = "LLAVA_HYBRID_DISABLE"
TRIGGERS = ("llava", "llava.conversation", "llava.model.builder")

_log = logging.getLogger("llava_hybrid")
_ARMED: set = set()  # trigger modules already given a callback


def disabled() -> bool:
    """Whether LLAVA_HYBRID_DISABLE switches the hook off (any value but '' and '0')."""
    return os.environ.get(DISABLE_ENV, "") not in ("", "0")


def install_hook() -> bool:
    """Register the post-import callbacks (idempotent); False when disabled."""
    if disabled():
        return False
    for name in TRIGGERS:
        if name not in _ARMED:
            _ARMED.add(name)
            _patching.when_imported(name, _on_llava_import)
    return True


def _on_llava_import(module) -> None:
    """Activate the plugin once llava has loaded (retried at later triggers while incomplete)."""
    from llava_hybrid import activation

    if activation.is_active():
        return
    busy = _plugin_modules_loading()
    if busy:
        # Our own code is importing llava (e.g. `import llava_hybrid.host.phi` first): registering
        # now would read half-built modules; the entry point's main() calls activate(). The upstream
        # patches read none of our modules, so they go in now.
        from llava_hybrid import patches

        patches.apply_all()
        _log.debug("llava_hybrid: activation postponed, %s still loading", ", ".join(busy))
        return
    activation.activate()
    if activation.is_active():
        from llava_hybrid.patches import cuda_to_cpu

        cuda_to_cpu.apply()


def _plugin_modules_loading() -> list:
    """llava_hybrid modules (other than the activation machinery) whose import is in progress."""
    machinery = ("llava_hybrid", "llava_hybrid._patching", "llava_hybrid.startup", "llava_hybrid.activation")
    out = []
    for name, mod in list(sys.modules.items()):
        if not name.startswith("llava_hybrid.") or name in machinery or name.startswith("llava_hybrid.patches"):
            continue
        if _patching.is_initialising(mod):
            out.append(name)
    return out


def pth_path(purelib: Optional[str] = None) -> Path:
    """Where the .pth goes: this interpreter's purelib (site-packages) unless given."""
    return Path(purelib or sysconfig.get_paths()["purelib"]) / PTH_NAME


def install(purelib: Optional[str] = None) -> Path:
    """Write the startup .pth; return its path."""
    path = pth_path(purelib)
    path.write_text(PTH_LINE)
    return path


def uninstall(purelib: Optional[str] = None) -> bool:
    """Remove the startup .pth; True if one was there."""
    path = pth_path(purelib)
    if path.exists():
        path.unlink()
        return True
    return False


def main(argv=None) -> int:
    """CLI: install | uninstall | status."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if len(argv) != 1 or argv[0] not in ("install", "uninstall", "status"):
        print("usage: python -m llava_hybrid.startup {install|uninstall|status}", file=sys.stderr)
        return 2
    command = argv[0]
    if command == "install":
        print(f"installed {install()}")
    elif command == "uninstall":
        print(("removed " if uninstall() else "not installed: ") + str(pth_path()))
    else:
        path = pth_path()
        print(f"{path}: {'installed' if path.exists() else 'not installed'}; "
              f"{DISABLE_ENV}={'1 (hook off)' if disabled() else 'unset (hook on)'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
elif __name__ == "llava_hybrid.startup":
    install_hook()
