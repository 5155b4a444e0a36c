"""TinyLLaVA_Factory -> llava_phi conversion, the `tinyllava` alias, and their errors."""
import json
import os
import shutil
import sys

import pytest
import torch
from safetensors.torch import load_file

import llava_hybrid.host as host
from llava_hybrid.convert.common import FACTORY_PREFIXES, factory_key, map_factory_key
from llava_hybrid.convert.factory import convert_factory_checkpoint
from llava_hybrid.host.aliases import TINYLLAVA_ENV, resolve_model_path
from llava_hybrid.host.tiny import build_tiny_llava_phi, rewrite_factory_weights


@pytest.fixture(scope="module")
def factory(tmp_path_factory):
    host.register()
    return build_tiny_llava_phi(str(tmp_path_factory.mktemp("factory")), layout="factory", num_layers=2)


def test_converted_config_and_tower_directory(factory, tmp_path):
    """The translated config (the released layouts' tensors and logits: tests/test_convert_releases.py)."""
    sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "scripts"))
    import convert_tinyllava_factory
    dst = convert_tinyllava_factory.main(["--src", factory, "--dst", str(tmp_path / "out")])
    with open(os.path.join(dst, "config.json")) as f:
        cfg = json.load(f)
    assert cfg["model_type"] == "llava_phi" and cfg["mm_vision_tower"] == "vision_tower"
    assert cfg["mm_vision_select_feature"] == "patch_drop_first" and cfg["mm_vision_select_layer"] == -2
    assert cfg["mm_projector_type"] == "mlp2x_gelu" and cfg["mm_hidden_size"] == 32
    assert cfg["image_aspect_ratio"] == "square" and cfg["vocab_size"] == 50304
    assert cfg["tokenizer_model_max_length"] == 3072 and cfg["num_hidden_layers"] == 2
    assert os.path.isfile(os.path.join(dst, "vision_tower", "preprocessor_config.json"))
    tower = load_file(os.path.join(dst, "vision_tower", "model.safetensors"))
    assert tower and all(k.startswith("vision_model.") for k in tower)  # the names both lanes read


def test_key_map_is_data_and_its_inverse_is_derived():
    assert map_factory_key("language_model.model.layers.0.self_attn.q_proj.weight") == \
        "model.layers.0.self_attn.q_proj.weight"
    assert map_factory_key("language_model.lm_head.bias") == "lm_head.bias"
    assert map_factory_key("connector._connector.2.weight") == "model.mm_projector.2.weight"
    assert map_factory_key("vision_tower._vision_tower.vision_model.post_layernorm.weight") == \
        "model.vision_tower.vision_tower.vision_model.post_layernorm.weight"
    # a tower re-saved by transformers 5 (no vision_model. level) lands on the same names
    assert map_factory_key("vision_tower._vision_tower.post_layernorm.weight") == \
        "model.vision_tower.vision_tower.vision_model.post_layernorm.weight"
    assert map_factory_key("resampler.query") is None
    assert len(FACTORY_PREFIXES) == 4
    for key in ("language_model.model.embed_tokens.weight", "language_model.lm_head.weight",
                "connector._connector.0.bias", "vision_tower._vision_tower.vision_model.head.probe"):
        assert factory_key(map_factory_key(key)) == key


def test_unexpected_and_misshapen_keys(factory, tmp_path):
    bad = str(tmp_path / "bad")
    shutil.copytree(factory, bad)
    rewrite_factory_weights(bad, lambda state: state.update({"resampler.query": torch.zeros(2, 2)}))
    with pytest.raises(ValueError, match="unexpected") as err:
        convert_factory_checkpoint(bad, str(tmp_path / "out"))
    assert "resampler.query" in str(err.value) and "model-0000" in str(err.value)

    def misshape(state):
        del state["resampler.query"]
        state["connector._connector.0.weight"] = torch.zeros(3, 3, dtype=torch.float16)

    rewrite_factory_weights(bad, misshape)
    with pytest.raises(ValueError, match="shape"):
        convert_factory_checkpoint(bad, str(tmp_path / "out2"))
    assert not os.path.exists(tmp_path / "out") and not os.path.exists(tmp_path / "out2")


def test_resolve_model_path(tmp_path, monkeypatch):
    assert resolve_model_path(str(tmp_path)) == str(tmp_path)
    monkeypatch.delenv(TINYLLAVA_ENV, raising=False)
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "empty-cache"))
    with pytest.raises(ValueError) as err:
        resolve_model_path("tinyllava", flag="--teacher_model_name_or_path")
    msg = str(err.value)
    assert "--teacher_model_name_or_path" in msg and "huggingface-cli download bczhou/TinyLLaVA-3.1B" in msg
    assert "convert_tinyllava_factory.py" in msg and TINYLLAVA_ENV in msg
    (tmp_path / "config.json").write_text("{}")
    monkeypatch.setenv(TINYLLAVA_ENV, str(tmp_path))
    assert resolve_model_path("tinyllava") == str(tmp_path)
    snapshot = tmp_path / "hub" / "models--bczhou--TinyLLaVA-3.1B" / "snapshots" / "abc"
    snapshot.mkdir(parents=True)
    (snapshot / "config.json").write_text("{}")
    monkeypatch.delenv(TINYLLAVA_ENV)
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    assert resolve_model_path("tinyllava") == str(snapshot)
    with pytest.raises(ValueError, match="--model_name_or_path"):
        resolve_model_path("no/such-model")


def test_save_with_vision_tower_round_trip(factory, tmp_path):
    """A loaded model saved elsewhere carries its tower and loads again with equal outputs."""
    import llava.model.builder as llava_builder
    from llava_hybrid.host.saving import save_llava_checkpoint
    src = convert_factory_checkpoint(factory, str(tmp_path / "converted"))
    tokenizer, model, _, _ = llava_builder.load_pretrained_model(src, None, "x", device="cpu")
    out = save_llava_checkpoint(model, str(tmp_path / "elsewhere"), tokenizer)
    assert not any(k.startswith("model.vision_tower") for k in load_file(os.path.join(out, "model.safetensors")))
    _, again, _, _ = llava_builder.load_pretrained_model(out, None, "x", device="cpu")
    ids, images = torch.tensor([[5, -200, 6, 7]]), torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(again(input_ids=ids, images=images).logits, model(input_ids=ids, images=images).logits)


def test_tokenizer_json_made_portable_keeps_the_encoding(tmp_path):
    """Pair-form BPE merges (tokenizers >= 0.20) rewritten as strings encode identically (and 0.15 reads them)."""
    import json

    import transformers

    from llava_hybrid.host.saving import make_tokenizer_json_portable
    from llava_hybrid.host.tiny import write_phi2_style_tokenizer

    write_phi2_style_tokenizer(str(tmp_path))
    text = "USER: <image>\nIs there a red circle? ASSISTANT: Yes<|endoftext|>"
    before = transformers.AutoTokenizer.from_pretrained(str(tmp_path))(text).input_ids
    tok = json.loads((tmp_path / "tokenizer.json").read_text())
    tok["model"]["merges"] = [m.split(" ") if isinstance(m, str) else m for m in tok["model"]["merges"]]
    (tmp_path / "tokenizer.json").write_text(json.dumps(tok))  # pair form, as tokenizers >= 0.20 writes
    assert make_tokenizer_json_portable(str(tmp_path)) is True
    assert make_tokenizer_json_portable(str(tmp_path)) is False  # already portable
    merges = json.loads((tmp_path / "tokenizer.json").read_text())["model"]["merges"]
    assert all(isinstance(m, str) for m in merges)
    assert transformers.AutoTokenizer.from_pretrained(str(tmp_path))(text).input_ids == before
