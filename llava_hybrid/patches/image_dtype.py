"""LLaVA's eval scripts send `.half()` images; the towers return features in the images' dtype."""
from __future__ import annotations

from llava_hybrid._patching import Patch, Site


def _encode_images(original, mixin):
    def encode_images(self, images):
        """LLaVA's encode_images on images cast to the vision tower's dtype: (N, 3, H, W) -> (N, T, D)."""
        dtype = self.get_model().get_vision_tower().dtype
        if isinstance(images, (list, tuple)):
            images = [image.to(dtype) for image in images]
        else:
            images = images.to(dtype)
        return original(self, images)

    return encode_images


PATCH = Patch(
    name="image_dtype",
    reason=("llava.eval.* call images.half(); the CLIP/SigLIP towers cast their output back to the input dtype, "
            "so a float32 (CPU) or bfloat16 model fails at the projector: cast images to the tower's dtype first"),
    upstream="llava.model.llava_arch.LlavaMetaForCausalLM.encode_images",
    target="llava.model.llava_arch",
    note="LLaVA-side; a no-op for a float16 model",
    sites=(Site("llava.model.llava_arch", "LlavaMetaForCausalLM", "encode_images", _encode_images),),
)
