"""SigLIP tower: token conventions (729 all / 728 drop-first) by config, LLaVA's tower interface,
the patched build_vision_tower dispatch and its error for an unknown tower."""
import os
from types import SimpleNamespace

import pytest
import torch
from PIL import Image

import llava_hybrid.host as host
from llava_hybrid.host.siglip import SiglipVisionTower, build_vision_tower
from llava_hybrid.host.tiny import build_tiny_llava_phi


@pytest.fixture(scope="module")
def tower_dir(tmp_path_factory):
    host.register()
    ckpt = build_tiny_llava_phi(str(tmp_path_factory.mktemp("tiny")), image_size=64, patch_size=16)
    return os.path.join(ckpt, "vision_tower")


def _args(feature, layer=-2):
    return SimpleNamespace(mm_vision_select_layer=layer, mm_vision_select_feature=feature)


def test_token_convention_by_config(tower_dir):
    images = torch.randn(2, 3, 64, 64)
    full = SiglipVisionTower(tower_dir, _args("patch"))
    drop = SiglipVisionTower(tower_dir, _args("patch_drop_first"))
    f_full, f_drop = full(images), drop(images)
    assert f_full.shape == (2, 16, 32) and full.num_patches == 16  # the "729" convention: every token
    assert f_drop.shape == (2, 15, 32) and drop.num_patches == 15  # the "728" convention: token 0 dropped
    # both are hidden_states[-2] of the same SigLIP encoder
    ref = full.vision_tower(images, output_hidden_states=True).hidden_states[-2]
    torch.testing.assert_close(f_full, ref)
    torch.testing.assert_close(f_drop, ref[:, 1:])
    # list input: one (1, N, C) per image
    listed = full([images[0], images[1]])
    assert [t.shape for t in listed] == [(1, 16, 32), (1, 16, 32)]
    torch.testing.assert_close(listed[1][0], f_full[1])


def test_tower_interface(tower_dir):
    tower = SiglipVisionTower(tower_dir, _args("patch"), delay_load=True)
    assert not tower.is_loaded and tower.hidden_size == 32 and tower.num_patches_per_side == 4
    tower.load_model()
    assert tower.is_loaded and tower.dtype == torch.float32 and tower.device.type == "cpu"
    assert tower.dummy_feature.shape == (1, 32)
    assert not any(p.requires_grad for p in tower.parameters())
    assert tower.image_processor.crop_size == {"height": 64, "width": 64}


def test_image_processor_feeds_llava_pad_path(tower_dir):
    import easy_vqa
    from llava.mm_utils import process_images
    tower = SiglipVisionTower(tower_dir, _args("patch"))
    path = next(iter(easy_vqa.get_test_image_paths().values()))
    image = Image.open(path).convert("RGB").resize((48, 64))  # non-square: exercises expand2square
    pixels = process_images([image], tower.image_processor, SimpleNamespace(image_aspect_ratio="pad"))
    assert pixels.shape == (1, 3, 64, 64)
    # padding colour is image_mean (0.5) -> 0 after SigLIP normalisation
    assert torch.allclose(pixels[0, :, :, :4], torch.zeros(3, 64, 4), atol=1e-2)


def test_build_vision_tower_dispatch(tower_dir, tmp_path):
    import llava.model.llava_arch as llava_arch
    import llava.model.multimodal_encoder.builder as encoder_builder
    from llava.model.multimodal_encoder.clip_encoder import CLIPVisionTower
    from transformers import CLIPVisionConfig
    assert llava_arch.build_vision_tower is build_vision_tower
    assert encoder_builder.build_vision_tower is build_vision_tower
    siglip = llava_arch.build_vision_tower(SimpleNamespace(mm_vision_tower=tower_dir, **vars(_args("patch"))),
                                           delay_load=True)
    assert isinstance(siglip, SiglipVisionTower)
    clip_dir = tmp_path / "clip"
    CLIPVisionConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2,
                     image_size=32, patch_size=16).save_pretrained(clip_dir)
    clip = llava_arch.build_vision_tower(SimpleNamespace(mm_vision_tower=str(clip_dir), mm_vision_select_layer=-2),
                                         delay_load=True)
    assert type(clip) is CLIPVisionTower and clip.num_patches == 4


def test_unknown_vision_tower_error():
    with pytest.raises(ValueError) as err:
        build_vision_tower(SimpleNamespace(mm_vision_tower="google/siglip-so400m-patch14-384"))
    msg = str(err.value)
    assert "--vision_tower" in msg and "mm_vision_tower" in msg and "hub" in msg and "local directory" in msg


def test_bad_select_feature(tower_dir):
    with pytest.raises(ValueError, match="mm_vision_select_feature"):
        SiglipVisionTower(tower_dir, _args("cls"), delay_load=True)


def test_tower_is_saved_with_hub_weight_names(tower_dir, tmp_path):
    """Towers are written as `vision_model.*` on every lane (transformers 5 would write `embeddings.*`,
    which 4.x silently ignores) and reload to the same weights."""
    from safetensors import safe_open
    from transformers import SiglipVisionModel

    from llava_hybrid.host.saving import save_siglip_model

    with safe_open(os.path.join(tower_dir, "model.safetensors"), "pt") as f:
        assert all(k.startswith("vision_model.") for k in f.keys())
    model = SiglipVisionModel.from_pretrained(tower_dir)
    save_siglip_model(model, str(tmp_path / "again"))
    with safe_open(str(tmp_path / "again" / "model.safetensors"), "pt") as f:
        assert all(k.startswith("vision_model.") for k in f.keys())
    again, info = SiglipVisionModel.from_pretrained(str(tmp_path / "again"), output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"]
    for (name, a), b in zip(model.state_dict().items(), again.state_dict().values()):
        torch.testing.assert_close(a, b, msg=name)
