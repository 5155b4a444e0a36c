"""The grayscale_pad patch: LLaVA's process_images takes grayscale photos in pad and square mode (LLaVA's own
expand2square raises on them in pad mode, transformers 4.x's processors in any mode; model_vqa_science /
model_vqa_mmbench hand them over as opened).
The end-to-end case (model_vqa_science on a grayscale photo) runs in tests/test_eval_launchers.py."""
import json
import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import easy_vqa
import pytest
import torch
from PIL import Image

import llava_hybrid
from llava_hybrid import _patching

TEACHER = Path(__file__).resolve().parents[1] / "playground" / "easyvqa" / "teacher"


def photo(mode):
    """A real easy-VQA image, cropped to 64 x 40 (not square, so padding happens), in `mode`."""
    _id, path = sorted(easy_vqa.get_test_image_paths().items())[0]
    return Image.open(path).convert("RGB").crop((0, 12, 64, 52)).convert(mode)


@pytest.fixture(scope="module")
def processor():
    from transformers import SiglipImageProcessor

    return SiglipImageProcessor.from_pretrained(str(TEACHER / "vision_tower"))


@pytest.mark.parametrize("aspect", ["pad", "square"])
@pytest.mark.parametrize("mode", ["L", "LA", "P"])
def test_grayscale_and_palette_images_are_processed_as_their_rgb_conversion(processor, mode, aspect):
    llava_hybrid.activate()
    from llava.mm_utils import process_images

    assert _patching.is_replaced(sys.modules["llava.mm_utils"], "process_images")
    config = SimpleNamespace(image_aspect_ratio=aspect)
    image = photo(mode)
    got = process_images([image], processor, config)
    want = process_images([image.convert("RGB")], processor, config)
    assert got.shape == want.shape and torch.equal(got, want)


def test_rgb_images_are_untouched(processor):
    llava_hybrid.activate()
    from llava.mm_utils import process_images

    rgb = photo("RGB")
    original = _patching.original_of(process_images)
    config = SimpleNamespace(image_aspect_ratio="pad")
    assert torch.equal(process_images([rgb], processor, config), original([rgb], processor, config))


def test_without_the_plugin_llava_raises_on_a_grayscale_photo(tmp_path):
    """The upstream bug, unpatched (LLAVA_HYBRID_DISABLE=1): the TypeError the patch exists for."""
    photo("L").save(tmp_path / "gray.png")
    code = ("import json; from types import SimpleNamespace; from PIL import Image; "
            "from transformers import SiglipImageProcessor; from llava.mm_utils import process_images; "
            f"p = SiglipImageProcessor.from_pretrained({json.dumps(str(TEACHER / 'vision_tower'))}); "
            f"process_images([Image.open({json.dumps(str(tmp_path / 'gray.png'))})], p, "
            "SimpleNamespace(image_aspect_ratio='pad'))")
    env = dict(os.environ, LLAVA_HYBRID_DISABLE="1")
    proc = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode != 0
    assert "TypeError" in proc.stderr and "color must be int" in proc.stderr
