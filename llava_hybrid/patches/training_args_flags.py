"""Renamed/removed TrainingArguments flags that LLaVA's (and MaTVLM's) launch scripts still pass."""
from __future__ import annotations

import logging
import sys
from typing import List, Optional, Sequence

from llava_hybrid._patching import Patch, Site

_log = logging.getLogger("llava_hybrid.patches")
# old flag -> new flag; applied only when the parser lacks the old one and has the new one.
RENAMES = {"--evaluation_strategy": "--eval_strategy", "--warmup_ratio": "--warmup_steps"}


def rewrite_flags(parser, args: Sequence[str]) -> List[str]:
    """Return `args` with each old flag the parser rejects replaced by its successor.

    Both `--flag value` and `--flag=value` forms; ValueError when old and new are both given or a
    --warmup_ratio is not a ratio (< 1), since --warmup_steps >= 1 would mean a step count.
    """
    known = set(parser._option_string_actions)
    renames = {o: n for o, n in RENAMES.items() if o not in known and n in known}
    out: List[str] = list(args)
    for i, arg in enumerate(args):
        flag, eq, value = arg.partition("=")
        if flag not in renames:
            continue
        new = renames[flag]
        if any(a == new or a.startswith(new + "=") for a in args):
            raise ValueError(f"{flag} and {new} both given; {flag} is the old name of {new}: keep one")
        if flag == "--warmup_ratio":
            ratio = value if eq else (args[i + 1] if i + 1 < len(args) else "")
            if not _is_ratio(ratio):
                raise ValueError(f"--warmup_ratio {ratio!r}: expected a number in [0, 1)")
        _log.warning("llava_hybrid: %s is %s in this transformers; rewritten", flag, new)
        out[i] = new + eq + value
    return out


def _is_ratio(text: str) -> bool:
    try:
        return 0 <= float(text) < 1
    except ValueError:
        return False


def _parse(original, cls):
    def parse_args_into_dataclasses(self, args: Optional[Sequence[str]] = None, *rest, **kwargs):
        """transformers' parser, after renaming flags this version no longer knows."""
        argv = list(sys.argv[1:] if args is None else args)
        return original(self, rewrite_flags(self, argv), *rest, **kwargs)

    return parse_args_into_dataclasses


PATCH = Patch(
    name="training_args_flags",
    reason=("--evaluation_strategy was renamed --eval_strategy (4.51+) and --warmup_ratio was removed "
            "(5.x: --warmup_steps < 1 is a ratio); rewrite the old flags before parsing"),
    upstream="transformers.HfArgumentParser.parse_args_into_dataclasses (used by llava.train.train.train)",
    target="transformers.hf_argparser",
    versions={"transformers": ">=4.51"},
    note="eval_strategy from 4.51, warmup_ratio removed in 5.0; only flags the parser lacks are renamed",
    sites=(Site("transformers.hf_argparser", "HfArgumentParser", "parse_args_into_dataclasses", _parse),),
)
