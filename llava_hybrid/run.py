"""Run an unchanged `llava` module with the plugin active, also where the startup hook is not installed.

    python -m llava_hybrid.run llava.eval.model_vqa --model-path ... --question-file ... [args]
    python -m llava_hybrid.run --list-patches

Steps: activate() (patches, registrations, re-bound names); on a machine without CUDA map `.cuda()`
to the CPU (llava_hybrid.patches.cuda_to_cpu); then `runpy.run_module(<module>, run_name="__main__",
alter_sys=True)` with sys.argv[1:] = the module's own arguments. Dtype on the CPU: the plugin's
loader (llava_hybrid.host.builder) loads float32 when the target device is the CPU, and the
`image_dtype` patch casts the scripts' `.half()` images to the vision tower's dtype on entry.
"""
from __future__ import annotations

import runpy
import sys
from typing import List, Optional

USAGE = "usage: python -m llava_hybrid.run [--list-patches] <llava module> [module args...]"


def list_patches() -> str:
    """A table of every upstream patch: name, needed, state, upstream site, reason."""
    from llava_hybrid import _patching, patches

    lines = []
    for row in patches.describe():
        lines.append(f"{row['name']:<24} needed={row['needed']:<5} {row['state']}")
        lines.append(f"    {row['upstream']} [{row['versions']}]")
        lines.append(f"    {row['reason']}")
    lines.append("replaced attributes:")
    for (owner, attr) in sorted(_patching.patched_sites()):
        lines.append(f"    {owner}.{attr}")
    return "\n".join(lines)


def prepare() -> dict:
    """Activate the plugin and, without CUDA, map .cuda() to the CPU; return activate()'s summary."""
    import llava_hybrid
    from llava_hybrid.patches import cuda_to_cpu

    summary = llava_hybrid.activate()
    cuda_to_cpu.apply()
    return summary


def main(argv: Optional[List[str]] = None) -> int:
    """Parse `[--list-patches] <module> [args]`, prepare, run the module as __main__."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(USAGE)
        return 0 if argv else 2
    if argv[0] == "--list-patches":
        prepare()
        import llava.train.train  # noqa: F401  (so the trainer patches show as applied)
        import transformers.hf_argparser  # noqa: F401
        print(list_patches())
        return 0
    module, module_args = argv[0], argv[1:]
    if module.startswith("-"):
        raise ValueError(f"llava_hybrid.run: unknown option {module!r}; {USAGE}")
    prepare()
    sys.argv = [module] + module_args
    runpy.run_module(module, run_name="__main__", alter_sys=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
