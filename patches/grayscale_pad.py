"""With image_aspect_ratio "pad", LLaVA pads an image to a square filled with the processor's mean colour
(an RGB triple); a grayscale (L / LA / P / I) image cannot take a triple and PIL raises."""
from __future__ import annotations

import importlib

from llava_hybrid import _patching

NAME = "grayscale_pad"
REASON = ("llava.eval.model_vqa_science and model_vqa_mmbench hand images to process_images without "
          ".convert('RGB') (model_vqa and model_vqa_loader convert); with image_aspect_ratio pad, expand2square "
          "then calls Image.new(<L/LA/P mode>, size, <RGB mean>) -> TypeError 'color must be int or single-element "
          "tuple' at the first grayscale photo (LLaVA-1.5 models hit it too): convert such images to RGB first, "
          "as the other eval scripts do")
UPSTREAM = "llava.mm_utils.expand2square (called by llava.mm_utils.process_images)"
VERSIONS = "llava-torch 1.2.2.post1, any transformers; a no-op for RGB / RGBA images"
TARGET = "llava.mm_utils"

_TAKES_RGB_FILL = ("RGB", "RGBA")


def needed() -> bool:
    """Always: the bug is LLaVA's own, on every transformers version."""
    return True


def apply() -> bool:
    """Wrap expand2square to convert non-RGB images to RGB before padding; True if it changed."""
    mm_utils = importlib.import_module("llava.mm_utils")
    if _patching.is_replaced(mm_utils, "expand2square"):
        return False
    original = mm_utils.expand2square

    def expand2square(pil_img, background_color):
        """LLaVA's expand2square on the image in RGB when its mode cannot take an RGB fill colour."""
        if pil_img.mode not in _TAKES_RGB_FILL and isinstance(background_color, tuple) and len(background_color) > 1:
            pil_img = pil_img.convert("RGB")
        return original(pil_img, background_color)

    _patching.replace_attr(mm_utils, "expand2square", expand2square)
    return True
