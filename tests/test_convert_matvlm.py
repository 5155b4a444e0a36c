"""Official MaTVLM release layout -> our llava_hybrid_phi checkpoint: the converter's own refusals.

The source is a MaTVLM release as hustvl/MaTVLM_*_Mamba2 is laid out (llava_hybrid.host.tiny.
build_matvlm_release: Factory names, 2 shards + index, mamba_config.json with attn_layers), here a 4-layer
one with Mamba layers [0, 2]. The released plans themselves, loading, logits and eval answers are in
tests/test_convert_releases.py.
"""
import json
import os
import shutil

import pytest
import torch

import llava_hybrid
from llava_hybrid.convert.factory import convert_factory_checkpoint
from llava_hybrid.convert.matvlm import convert_matvlm_checkpoint
from llava_hybrid.host.tiny import build_matvlm_release, build_tiny_llava_phi, rewrite_factory_weights

MAMBA_LAYERS = [0, 2]


@pytest.fixture(scope="module")
def release(tmp_path_factory):
    """A 4-layer release directory with Mamba layers [0, 2]."""
    llava_hybrid.activate()
    root = tmp_path_factory.mktemp("matvlm")
    teacher = build_tiny_llava_phi(str(root / "teacher"), hidden_size=64, num_layers=4, siglip_tokens=728,
                                   image_aspect_ratio="square")
    src, _ = build_matvlm_release(str(root / "release"), teacher, MAMBA_LAYERS, seed=3)
    return src


def test_the_release_holds_mamba_weights_under_factory_names(release):
    index = json.load(open(os.path.join(release, "model.safetensors.index.json")))["weight_map"]
    assert "language_model.model.layers.0.mamba.in_proj.weight" in index
    assert "language_model.model.layers.2.mamba.A_log" in index
    assert "connector._connector.2.weight" in index and "language_model.lm_head.bias" in index
    assert not any(k.startswith("language_model.model.layers.0.self_attn") for k in index)
    assert json.load(open(os.path.join(release, "mamba_config.json")))["attn_layers"] == [1, 3]


def _broken_copy(src, dst, edit_state=None, drop_mamba_config=False):
    shutil.copytree(src, dst)
    if edit_state is not None:
        rewrite_factory_weights(str(dst), edit_state)
    if drop_mamba_config:
        os.remove(os.path.join(dst, "mamba_config.json"))
    return str(dst)


def test_missing_mamba_config_raises(release, tmp_path):
    src = _broken_copy(release, tmp_path / "src", drop_mamba_config=True)
    with pytest.raises(ValueError, match="mamba_config.json"):
        convert_matvlm_checkpoint(src, str(tmp_path / "out"))


def test_mamba_key_on_attention_layer_raises(release, tmp_path):
    def add(state):
        state["language_model.model.layers.1.mamba.D"] = torch.ones(4, dtype=torch.bfloat16)

    src = _broken_copy(release, tmp_path / "src", edit_state=add)
    with pytest.raises(ValueError, match=r"layers\.1\.mamba\.D"):
        convert_matvlm_checkpoint(src, str(tmp_path / "out"))


def test_unexpected_and_missing_keys_raise(release, tmp_path):
    def add(state):
        state["language_model.model.extra_head.weight"] = torch.zeros(2, dtype=torch.bfloat16)

    src = _broken_copy(release, tmp_path / "a", edit_state=add)
    with pytest.raises(ValueError, match="unexpected.*extra_head"):
        convert_matvlm_checkpoint(src, str(tmp_path / "out_a"))

    def drop(state):
        del state["language_model.model.layers.2.mamba.dt_bias"]

    src = _broken_copy(release, tmp_path / "b", edit_state=drop)
    with pytest.raises(ValueError, match=r"missing.*layers\.2\.mamba\.dt_bias"):
        convert_matvlm_checkpoint(src, str(tmp_path / "out_b"))


def test_source_that_is_not_a_factory_checkpoint(tmp_path):
    """Both converters read the source config.json through one checked reader."""
    from llava_hybrid.checkpoint_files import CheckpointError

    for convert in (convert_matvlm_checkpoint, convert_factory_checkpoint):
        with pytest.raises(CheckpointError, match="--src .*no such directory"):
            convert(str(tmp_path / "missing"), str(tmp_path / "out"))
    (tmp_path / "llava").mkdir()
    (tmp_path / "llava" / "config.json").write_text(json.dumps({"model_type": "llava_phi"}))
    for convert in (convert_matvlm_checkpoint, convert_factory_checkpoint):
        with pytest.raises(ValueError, match="model_type='llava_phi', expected 'tinyllava'"):
            convert(str(tmp_path / "llava"), str(tmp_path / "out"))
