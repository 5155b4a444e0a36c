"""Official MaTVLM release layout -> our llava_hybrid_phi checkpoint (scripts/convert_matvlm.py).

The source is written with exactly the release's names and files: TinyLLaVA_Factory config.json
(model_type tinyllava), model.safetensors with language_model.* / vision_tower._vision_tower.* /
connector._connector.{0,2}.* and language_model.model.layers.{i}.mamba.* keys, mamba_config.json with
attn_layers, tokenizer files.
"""
import json
import os
import shutil
import sys

import easy_vqa
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file, save_file

import llava_hybrid
from llava_hybrid.convert.factory import convert_factory_checkpoint
from llava_hybrid.convert.matvlm import convert_matvlm_checkpoint
from llava_hybrid.host.hybrid_models import LlavaHybridPhiForCausalLM, build_llava_student
from llava_hybrid.host.tiny import build_tiny_llava_phi, factory_state_dict

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(__file__)), "scripts"))
import convert_matvlm  # noqa: E402

MAMBA_LAYERS, ATTN_LAYERS = [0, 2], [1, 3]
PROMPT = torch.tensor([[1000, 2000, -200, 318, 257, 3797, 30]])  # -200: the image placeholder


@pytest.fixture(scope="module")
def release(tmp_path_factory):
    """(release dir, the student model whose weights it holds)."""
    llava_hybrid.activate()
    from llava_hybrid.host.phi import LlavaPhiForCausalLM

    root = tmp_path_factory.mktemp("matvlm")
    factory = build_tiny_llava_phi(str(root / "factory"), layout="factory", hidden_size=64, num_layers=4)
    teacher_dir = convert_factory_checkpoint(factory, str(root / "teacher"))
    teacher = LlavaPhiForCausalLM.from_pretrained(teacher_dir).eval()
    teacher.get_model().get_vision_tower().load_model()
    student = build_llava_student(teacher, MAMBA_LAYERS, seed=3)
    # the release = the Factory checkpoint's files with the student's weights under Factory names
    src = root / "release"
    shutil.copytree(factory, src)
    state = factory_state_dict(student.state_dict())
    assert "language_model.model.layers.0.mamba.in_proj.weight" in state
    assert "language_model.model.layers.2.mamba.A_log" in state
    assert "connector._connector.2.weight" in state and "language_model.lm_head.bias" in state
    assert not any(k.startswith("language_model.model.layers.0.self_attn") for k in state)
    save_file(state, str(src / "model.safetensors"), metadata={"format": "pt"})
    with open(src / "mamba_config.json", "w") as f:
        json.dump({"d_model": 64, "attn_layers": ATTN_LAYERS, "ssm_cfg": {"expand": 1, "d_state": 16}}, f)
    return str(src), student


def pixels(model):
    _, path = sorted(easy_vqa.get_test_image_paths().items())[0]
    processor = model.get_model().get_vision_tower().image_processor
    return processor(images=Image.open(path).convert("RGB"), return_tensors="pt")["pixel_values"]


def test_converted_release_loads_with_equal_logits(release, tmp_path):
    src, student = release
    dst = convert_matvlm.main(["--src", src, "--dst", str(tmp_path / "out")])
    with open(os.path.join(dst, "config.json")) as f:
        config = json.load(f)
    assert config["model_type"] == "llava_hybrid_phi" and config["mamba_layers"] == MAMBA_LAYERS
    from llava.model.builder import load_pretrained_model

    tokenizer, model, processor, _ = load_pretrained_model(dst, None, "matvlm", device="cpu")
    assert isinstance(model, LlavaHybridPhiForCausalLM)
    images = pixels(model)
    with torch.no_grad():
        got = model(input_ids=PROMPT, images=images).logits
        want = student(input_ids=PROMPT, images=images).logits
    assert got.shape == want.shape
    assert torch.allclose(got, want, atol=1e-6, rtol=0)


def _broken_copy(src, dst, edit_state=None, drop_mamba_config=False):
    shutil.copytree(src, dst)
    if edit_state is not None:
        state = load_file(os.path.join(dst, "model.safetensors"))
        edit_state(state)
        save_file(state, os.path.join(dst, "model.safetensors"))
    if drop_mamba_config:
        os.remove(os.path.join(dst, "mamba_config.json"))
    return str(dst)


def test_missing_mamba_config_raises(release, tmp_path):
    src = _broken_copy(release[0], tmp_path / "src", drop_mamba_config=True)
    with pytest.raises(ValueError, match="mamba_config.json"):
        convert_matvlm_checkpoint(src, str(tmp_path / "out"))


def test_mamba_key_on_attention_layer_raises(release, tmp_path):
    def add(state):
        state["language_model.model.layers.1.mamba.D"] = torch.ones(4)

    src = _broken_copy(release[0], tmp_path / "src", edit_state=add)
    with pytest.raises(ValueError, match=r"layers\.1\.mamba\.D"):
        convert_matvlm_checkpoint(src, str(tmp_path / "out"))


def test_unexpected_and_missing_keys_raise(release, tmp_path):
    def add(state):
        state["language_model.model.extra_head.weight"] = torch.zeros(2)

    src = _broken_copy(release[0], tmp_path / "a", edit_state=add)
    with pytest.raises(ValueError, match="unexpected.*extra_head"):
        convert_matvlm_checkpoint(src, str(tmp_path / "out_a"))

    def drop(state):
        del state["language_model.model.layers.2.mamba.dt_bias"]

    src = _broken_copy(release[0], tmp_path / "b", edit_state=drop)
    with pytest.raises(ValueError, match=r"missing.*layers\.2\.mamba\.dt_bias"):
        convert_matvlm_checkpoint(src, str(tmp_path / "out_b"))


def test_source_that_is_not_a_factory_checkpoint(tmp_path):
    """Both converters read the source config.json through one checked reader."""
    import json

    from llava_hybrid.checkpoint_files import CheckpointError

    for convert in (convert_matvlm_checkpoint, convert_factory_checkpoint):
        with pytest.raises(CheckpointError, match="--src .*no such directory"):
            convert(str(tmp_path / "missing"), str(tmp_path / "out"))
    (tmp_path / "llava").mkdir()
    (tmp_path / "llava" / "config.json").write_text(json.dumps({"model_type": "llava_phi"}))
    for convert in (convert_matvlm_checkpoint, convert_factory_checkpoint):
        with pytest.raises(ValueError, match="model_type='llava_phi', expected 'tinyllava'"):
            convert(str(tmp_path / "llava"), str(tmp_path / "out"))
