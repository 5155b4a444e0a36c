"""Model names that are not paths: the `tinyllava` alias of the MaTVLM teacher.

No machine here reaches a model hub, so a name is either an existing local directory or the alias
`tinyllava`, found on disk (env LLAVA_HYBRID_TINYLLAVA_PATH, or a Hugging Face cache snapshot of
bczhou/TinyLLaVA-3.1B, LLaVA layout); anything else fails with what to pass instead.
"""
from __future__ import annotations

import glob
import os

TINYLLAVA_ALIAS = "tinyllava"
TINYLLAVA_REPO = "bczhou/TinyLLaVA-3.1B"
TINYLLAVA_ENV = "LLAVA_HYBRID_TINYLLAVA_PATH"


def resolve_model_path(name_or_path: str, flag: str = "--model_name_or_path") -> str:
    """An existing directory -> itself; the alias 'tinyllava' -> the local TinyLLaVA-3.1B directory."""
    if os.path.isdir(name_or_path):
        return name_or_path
    if name_or_path == TINYLLAVA_ALIAS:
        found = _find_tinyllava()
        if found is not None:
            return found
        raise ValueError(
            f"{flag} {TINYLLAVA_ALIAS!r}: {TINYLLAVA_REPO} is not on this machine and no machine here can "
            f"download it. On a connected machine run `huggingface-cli download {TINYLLAVA_REPO} "
            "--local-dir TinyLLaVA-3.1B` (or download tinyllava/TinyLLaVA-Phi-2-SigLIP-3.1B and run "
            "`python scripts/convert_tinyllava_factory.py --src <it> --dst TinyLLaVA-3.1B`), copy the "
            f"directory here, then pass {flag} <that directory> or set {TINYLLAVA_ENV}=<that directory>. "
            "For tests and recipes, llava_hybrid.host.tiny.build_tiny_llava_phi writes a tiny local teacher.")
    raise ValueError(f"{flag} {name_or_path!r}: not a local directory and not the alias {TINYLLAVA_ALIAS!r} "
                     "(no model hub is reachable from this machine)")


def _find_tinyllava():
    env = os.environ.get(TINYLLAVA_ENV)
    if env:
        if not os.path.isfile(os.path.join(env, "config.json")):
            raise ValueError(f"{TINYLLAVA_ENV}={env!r}: no config.json there")
        return env
    hub = os.environ.get("HF_HUB_CACHE") or os.path.join(
        os.environ.get("HF_HOME", os.path.expanduser("~/.cache/huggingface")), "hub")
    repo_dir = os.path.join(hub, "models--" + TINYLLAVA_REPO.replace("/", "--"))
    snapshots = sorted(glob.glob(os.path.join(repo_dir, "snapshots", "*", "config.json")), key=os.path.getmtime)
    return os.path.dirname(snapshots[-1]) if snapshots else None
