"""LLaVA's eval scripts send `.half()` images; the towers return features in the images' dtype."""
from __future__ import annotations

import importlib

from llava_hybrid import _patching

NAME = "image_dtype"
REASON = ("llava.eval.* call images.half(); the CLIP/SigLIP towers cast their output back to the input dtype, "
          "so a float32 (CPU) or bfloat16 model fails at the projector: cast images to the tower's dtype first")
UPSTREAM = "llava.model.llava_arch.LlavaMetaForCausalLM.encode_images"
VERSIONS = "any transformers (LLaVA-side); a no-op for a float16 model"
TARGET = "llava.model.llava_arch"


def needed() -> bool:
    """Always: the cast costs nothing when the dtypes already agree."""
    return True


def apply() -> bool:
    """Wrap encode_images to cast its input to the vision tower's dtype; True if it changed."""
    arch = importlib.import_module("llava.model.llava_arch")
    mixin = arch.LlavaMetaForCausalLM
    if _patching.is_replaced(mixin, "encode_images"):
        return False
    original = mixin.__dict__["encode_images"]

    def encode_images(self, images):
        """LLaVA's encode_images on images cast to the vision tower's dtype: (N, 3, H, W) -> (N, T, D)."""
        dtype = self.get_model().get_vision_tower().dtype
        if isinstance(images, (list, tuple)):
            images = [image.to(dtype) for image in images]
        else:
            images = images.to(dtype)
        return original(self, images)

    _patching.replace_attr(mixin, "encode_images", encode_images)
    return True
