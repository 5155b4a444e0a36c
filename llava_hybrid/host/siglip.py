"""SigLIP vision tower with LLaVA's tower interface, and a `build_vision_tower` that knows it.

LLaVA only builds CLIP towers. TinyLLaVA's teacher uses SigLIP (so400m, 384 px, patch 14 -> 27 x 27
= 729 patch tokens, no [CLS] token). Two token conventions exist in released checkpoints, chosen here
by the config field `mm_vision_select_feature` (never by a model name):

  "patch" / "cls_patch"  all tokens of hidden_states[select_layer]             -> 729 (TinyLLaVA-Bench,
                          bczhou/TinyLLaVA-3.1B: SigLIP has no [CLS] to drop)
  "patch_drop_first"      hidden_states[select_layer][:, 1:] (CLIP habit kept  -> 728 (TinyLLaVA_Factory,
                          by TinyLLaVA_Factory, `vision_feature_select_strategy`    the MaTVLM teacher)
                          "patch" there)

Checkpoints store `mm_vision_tower` as a path; a relative path is resolved against the checkpoint
directory (`config.name_or_path`) so a converted checkpoint can carry its tower as a subdirectory.
"""
from __future__ import annotations

import copy
import os
from typing import List, Optional, Union

import torch
import torch.nn as nn
from transformers import SiglipImageProcessor, SiglipVisionConfig, SiglipVisionModel

from llava_hybrid.checkpoint_files import CONFIG_NAME, read_config

SIGLIP_MODEL_TYPES = ("siglip_vision_model", "siglip")
SELECT_FEATURES = ("patch", "cls_patch", "patch_drop_first")


class SiglipVisionTower(nn.Module):
    """A frozen SigLIP vision encoder loaded from a local directory, shaped like LLaVA's CLIPVisionTower."""

    def __init__(self, vision_tower: str, args, delay_load: bool = False):
        super().__init__()
        self.is_loaded = False
        self.vision_tower_name = vision_tower
        self.select_layer = getattr(args, "mm_vision_select_layer", -2)
        self.select_feature = getattr(args, "mm_vision_select_feature", "patch")
        if self.select_feature not in SELECT_FEATURES:
            raise ValueError(
                f"mm_vision_select_feature={self.select_feature!r} is not valid for a SigLIP tower; "
                f"choose one of {SELECT_FEATURES} ('patch': all tokens, 'patch_drop_first': drop token 0)")
        # LLaVA loads an unfrozen tower at once; inside from_pretrained (transformers >= 5 builds the
        # model on the meta device) that nested from_pretrained fails, so there the tower stays delayed
        # and the loader (host.builder / sft.setup_vision) loads it from its directory.
        eager = getattr(args, "unfreeze_mm_vision_tower", False) and not _on_meta_device()
        if not delay_load or eager:
            self.load_model()
        else:
            self.cfg_only = SiglipVisionConfig.from_pretrained(self.vision_tower_name)

    def load_model(self, device_map=None) -> None:
        """Load weights and image processor from `self.vision_tower_name` (a local directory)."""
        if self.is_loaded:
            return
        self.image_processor = load_siglip_image_processor(self.vision_tower_name)
        self.vision_tower = SiglipVisionModel.from_pretrained(self.vision_tower_name, device_map=device_map)
        self.vision_tower.requires_grad_(False)
        self.is_loaded = True

    def feature_select(self, image_forward_outs) -> torch.Tensor:
        """(B, N, C) tokens of the selected layer: N = num_patches, or num_patches - 1 for patch_drop_first."""
        image_features = image_forward_outs.hidden_states[self.select_layer]  # (B, num_patches, C)
        if self.select_feature == "patch_drop_first":
            image_features = image_features[:, 1:]  # (B, num_patches - 1, C)
        return image_features

    @torch.no_grad()
    def forward(self, images: Union[torch.Tensor, List[torch.Tensor]]):
        """images: (B, 3, H, W) -> (B, N, C), or a list of (3, H, W) -> list of (1, N, C)."""
        if isinstance(images, list):
            return [self._encode(image.unsqueeze(0)).to(image.dtype) for image in images]
        return self._encode(images).to(images.dtype)

    def _encode(self, pixel_values: torch.Tensor) -> torch.Tensor:
        out = self.vision_tower(pixel_values.to(device=self.device, dtype=self.dtype), output_hidden_states=True)
        return self.feature_select(out)

    @property
    def dummy_feature(self) -> torch.Tensor:
        return torch.zeros(1, self.hidden_size, device=self.device, dtype=self.dtype)

    @property
    def dtype(self) -> torch.dtype:
        return self.vision_tower.dtype

    @property
    def device(self) -> torch.device:
        return self.vision_tower.device

    @property
    def config(self) -> SiglipVisionConfig:
        return self.vision_tower.config if self.is_loaded else self.cfg_only

    @property
    def hidden_size(self) -> int:
        return self.config.hidden_size

    @property
    def num_patches_per_side(self) -> int:
        return self.config.image_size // self.config.patch_size

    @property
    def num_patches(self) -> int:
        """Image tokens this tower emits per image (728 vs 729 convention included)."""
        n = self.num_patches_per_side ** 2
        return n - 1 if self.select_feature == "patch_drop_first" else n


def _on_meta_device() -> bool:
    """True inside a meta-device context (where transformers >= 5 constructs models in from_pretrained)."""
    return torch.empty(0).device.type == "meta"


def load_siglip_image_processor(path: str) -> SiglipImageProcessor:
    """SiglipImageProcessor from `path`, with the `crop_size` dict LLaVA's data path reads.

    LLaVA's collator and `process_images` (pad) read `crop_size['height'/'width']` and `image_mean`,
    which CLIP's processor has and SigLIP's does not.
    """
    if os.path.isfile(os.path.join(path, "preprocessor_config.json")):
        processor = SiglipImageProcessor.from_pretrained(path)
    else:  # a tower directory without a processor: SigLIP defaults at the tower's resolution
        size = SiglipVisionConfig.from_pretrained(path).image_size
        processor = SiglipImageProcessor(size={"height": size, "width": size})
    size = processor.size
    height = size["height"] if "height" in size else size.get("shortest_edge")
    width = size["width"] if "width" in size else size.get("shortest_edge")
    processor.crop_size = {"height": int(height), "width": int(width)}
    return processor


def tower_model_type(path: str) -> Optional[str]:
    """`model_type` of `<path>/config.json` (the one reader), or None when `path` is not a directory with one."""
    if not os.path.isfile(os.path.join(path, CONFIG_NAME)):
        return None
    return read_config(path, "--vision_tower / mm_vision_tower").get("model_type")


def resolve_tower_path(vision_tower: str, cfg) -> str:
    """A relative tower path is looked up beside the checkpoint (`cfg.name_or_path`) first."""
    base = getattr(cfg, "name_or_path", None) or getattr(cfg, "_name_or_path", None)
    if not os.path.isabs(vision_tower) and base and os.path.isdir(base):
        candidate = os.path.join(base, vision_tower)
        if os.path.exists(candidate):
            return candidate
    return vision_tower


def _clip_name_known(name: str) -> bool:
    # the names LLaVA's own builder accepts without a local directory
    return name.startswith("openai") or name.startswith("laion") or "ShareGPT4V" in name


def build_vision_tower(vision_tower_cfg, **kwargs):
    """LLaVA's `build_vision_tower` with SigLIP: dispatch on the tower directory's config model_type."""
    name = getattr(vision_tower_cfg, "mm_vision_tower", getattr(vision_tower_cfg, "vision_tower", None))
    if name is None:
        raise ValueError("no vision tower configured: set --vision_tower (config field mm_vision_tower)")
    path = resolve_tower_path(str(name), vision_tower_cfg)
    if tower_model_type(path) in SIGLIP_MODEL_TYPES:
        return SiglipVisionTower(path, args=vision_tower_cfg, **kwargs)
    if os.path.exists(path) or _clip_name_known(path):
        return _original_builder()(_with_tower(vision_tower_cfg, path), **kwargs)
    raise ValueError(
        f"unknown vision tower {name!r} (--vision_tower / config mm_vision_tower): it is not a local "
        "directory and no model hub is reachable from this machine. Pass a local directory holding a "
        "SigLIP or CLIP vision model (config.json, weights and preprocessor_config.json), e.g. the "
        "`vision_tower` subdirectory written by build_tiny_llava_phi or convert_tinyllava_factory.py.")


def _with_tower(cfg, path: str):
    """`cfg` itself, or a shallow copy whose mm_vision_tower is the resolved `path` (LLaVA reads that first)."""
    if getattr(cfg, "mm_vision_tower", getattr(cfg, "vision_tower", None)) == path:
        return cfg
    cfg = copy.copy(cfg)
    cfg.mm_vision_tower = path
    return cfg


def _original_builder():
    from llava_hybrid._patching import original_of
    original = original_of(build_vision_tower)
    if original is None:  # not patched (yet): the module attribute is LLaVA's own
        import llava.model.multimodal_encoder.builder as encoder_builder
        original = encoder_builder.build_vision_tower
    assert original is not build_vision_tower
    return original


def register() -> None:
    """Route LLaVA's tower construction through `build_vision_tower` above (idempotent)."""
    import llava.model.llava_arch as llava_arch
    import llava.model.multimodal_encoder.builder as encoder_builder
    from llava_hybrid._patching import replace_attr

    replace_attr(encoder_builder, "build_vision_tower", build_vision_tower)
    replace_attr(llava_arch, "build_vision_tower", build_vision_tower)
