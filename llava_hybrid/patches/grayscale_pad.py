"""LLaVA's eval scripts model_vqa_science and model_vqa_mmbench hand images to process_images as opened; a
grayscale (L / LA / P / I ...) photo then breaks: with image_aspect_ratio pad in expand2square (an RGB fill
colour for a one-band image), without it in transformers 4.x's image processors (a 2-D array)."""
from __future__ import annotations

from llava_hybrid._patching import Patch, Site


def _process_images(original, mm_utils):
    def process_images(images, image_processor, model_cfg):
        """LLaVA's process_images on the images in RGB (what model_vqa / model_vqa_loader hand it)."""
        images = [image.convert("RGB") if getattr(image, "mode", "RGB") != "RGB" else image for image in images]
        return original(images, image_processor, model_cfg)

    return process_images


PATCH = Patch(
    name="grayscale_pad",
    reason=("llava.eval.model_vqa_science and model_vqa_mmbench skip the .convert('RGB') that model_vqa and "
            "model_vqa_loader do: with image_aspect_ratio pad expand2square raises TypeError 'color must be int or "
            "single-element tuple' at the first grayscale photo (LLaVA-1.5 models hit it too), and on transformers "
            "4.x the image processor raises 'Unsupported number of image dimensions: 2' in any mode: convert "
            "non-RGB images to RGB on entry, as the other eval scripts do"),
    upstream="llava.mm_utils.process_images (and through it expand2square)",
    target="llava.mm_utils",
    versions={"llava-torch": "<=1.2.2"},
    note="seen on 1.2.2.post1, the last release; any transformers; a no-op for RGB images",
    sites=(Site("llava.mm_utils", "", "process_images", _process_images),),
)
