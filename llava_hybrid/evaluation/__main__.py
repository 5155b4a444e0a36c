"""`python -m llava_hybrid.evaluation <benchmark|table|smoke> [args]`: the converters and scorers the
launchers in scripts/eval/ call after LLaVA's own model_vqa* scripts (see docs/evaluation.md)."""
from __future__ import annotations

import importlib
import sys

COMMANDS = {
    "mme": ("mme", "main"), "pope": ("llava_scorers", "main_pope"), "textvqa": ("llava_scorers", "main_textvqa"),
    "sqa": ("llava_scorers", "main_sqa"), "gqa": ("gqa", "main"), "vqav2": ("vqav2", "main"),
    "mmbench": ("mmbench", "main"), "mmvet": ("mmvet", "main"), "mmmu": ("mmmu", "main"),
    "mmstar": ("mmstar", "main"), "table": ("table", "main"), "smoke": ("smoke", "main"),
    "lmms-task": ("lmms_task", "main"),
}


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] not in COMMANDS:
        print(f"usage: python -m llava_hybrid.evaluation {{{','.join(COMMANDS)}}} [args]  (-h after one for its flags)")
        return 0 if argv and argv[0] in ("-h", "--help") else 2
    module, function = COMMANDS[argv[0]]
    getattr(importlib.import_module(f"llava_hybrid.evaluation.{module}"), function)(argv[1:])
    return 0


if __name__ == "__main__":
    sys.exit(main())
