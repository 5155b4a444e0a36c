"""The two transformers lanes in one place: the one reader of installed versions, and every helper whose
behaviour differs between transformers 4.x (LLaVA's pin, 4.37.2) and 5.x.

Versions are read from the installed distributions' metadata, without importing the packages (the
patches decide what to wrap before transformers is imported). Everything else here imports
transformers lazily, so importing this module stays cheap.

    installed_version / transformers_version / version_text / parse_version    the version readers
    version_in                 a declared version range (the patches' guards)
    configs_are_dataclasses    5.x configs are dataclasses (fields from annotations, checks in __post_init__)
    tied_weights_keys          5.x: {tied: source} mapping; 4.x: list of tied names
    rope_settings              rope theta / partial factor / type: 5.x `rope_parameters`, 4.x attributes
    lift_rope_parameters       a 5.x-saved config's rope_parameters as the 4.x top-level fields
    dtype_kwargs               from_pretrained's `dtype=` (>= 4.56) or `torch_dtype=`
    trainer_tokenizer          Trainer.processing_class (5.x) or Trainer.tokenizer
    rotate_checkpoints         --save_total_limit applied to a run directory (the helper moved in 5.x)
"""
from __future__ import annotations

import functools
import importlib.metadata
import re
from typing import Dict, Tuple

Version = Tuple[int, int, int]
ROPE_KEYS = ("rope_theta", "partial_rotary_factor")


def parse_version(text: str) -> Version:
    """'4.37.2' -> (4, 37, 2); '5.0.0rc1' -> (5, 0, 0); '2.13.0+cpu' -> (2, 13, 0)."""
    nums = [int(n) for n in re.findall(r"\d+", text.split("+")[0])[:3]]
    return tuple(nums + [0] * (3 - len(nums)))  # type: ignore[return-value]


def version_text(package: str) -> str:
    """The installed version string of distribution `package` as its metadata gives it (for provenance)."""
    return importlib.metadata.version(package)


@functools.lru_cache(maxsize=None)
def installed_version(package: str) -> Version:
    """The installed version of distribution `package` as (major, minor, patch), read without importing it."""
    return parse_version(version_text(package))


def version_in(package: str, spec: str) -> bool:
    """Whether the installed `package` satisfies the PEP 440 specifier set `spec` (e.g. ">=4.46,<5").

    Compared on (major, minor, patch), so a pre-release counts as its release ("5.0.0rc1" is 5.0.0).
    An empty spec is any version.
    """
    from packaging.specifiers import SpecifierSet

    return SpecifierSet(spec).contains(".".join(map(str, installed_version(package))), prereleases=True)


def transformers_version() -> Version:
    """The installed transformers version."""
    return installed_version("transformers")


def configs_are_dataclasses() -> bool:
    """transformers >= 5: PretrainedConfig subclasses are dataclasses (fields are annotations)."""
    return transformers_version() >= (5, 0, 0)


def tied_weights_keys(tied: str = "lm_head.weight", source: str = "model.embed_tokens.weight"):
    """A model class's `_tied_weights_keys`: {tied: source} on transformers >= 5, [tied] before."""
    return {tied: source} if transformers_version() >= (5, 0, 0) else [tied]


def rope_settings(config) -> Tuple[float, float, str]:
    """(rope_theta, partial_rotary_factor, rope_type) of a Phi/Llama config on either lane.

    5.x keeps them in `config.rope_parameters`; 4.x as attributes (and the type in `rope_scaling`).
    """
    params = getattr(config, "rope_parameters", None) or {}
    scaling = getattr(config, "rope_scaling", None) or {}
    theta = params.get("rope_theta", getattr(config, "rope_theta", 10000.0))
    factor = params.get("partial_rotary_factor", getattr(config, "partial_rotary_factor", 1.0))
    rope_type = params.get("rope_type", scaling.get("rope_type", scaling.get("type", "default")))
    return float(theta), float(factor if factor is not None else 1.0), rope_type


def lift_rope_parameters(kwargs: Dict) -> Dict:
    """Config kwargs with, on 4.x, rope_theta / partial_rotary_factor lifted out of `rope_parameters`.

    transformers 5 writes them only inside `rope_parameters`; 4.x's PhiConfig reads the top level and
    would silently use its defaults (factor 0.5, not Phi-2's 0.4). On 5.x the kwargs are returned as
    they are. Keys given at the top level win.
    """
    params = kwargs.get("rope_parameters") or {}
    if transformers_version() >= (5, 0, 0):
        return kwargs
    return {**{k: params[k] for k in ROPE_KEYS if k in params}, **kwargs}


def dtype_kwargs(dtype) -> dict:
    """`from_pretrained(**dtype_kwargs(d))`: the load dtype under the installed transformers' name for it."""
    return {"dtype" if transformers_version() >= (4, 56, 0) else "torch_dtype": dtype}


def trainer_tokenizer(trainer):
    """The tokenizer a Trainer was built with: `processing_class` from transformers 5, `tokenizer` before."""
    return trainer.processing_class if transformers_version() >= (5, 0, 0) else trainer.tokenizer


def rotate_checkpoints(trainer, run_dir: str) -> None:
    """Apply the trainer's --save_total_limit to `run_dir` (a Trainer method on 4.x, trainer_utils on 5.x)."""
    if transformers_version() < (5, 0, 0):
        trainer._rotate_checkpoints(use_mtime=False, output_dir=run_dir)
        return
    from transformers.trainer_utils import rotate_checkpoints as rotate

    rotate(output_dir=run_dir, save_total_limit=trainer.args.save_total_limit,
           best_model_checkpoint=trainer.state.best_model_checkpoint, use_mtime=False)
