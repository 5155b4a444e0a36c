"""LlavaPhiForCausalLM: image splicing in forward, generate returns only new tokens, both config
types registered with transformers' Auto classes."""
import pytest
import torch
from transformers import AutoConfig, AutoModelForCausalLM

import llava_hybrid.host as host
from llava.constants import IMAGE_TOKEN_INDEX
from llava_hybrid.host.phi import LlavaPhiForCausalLM, TinyLlavaPhiConfig, TinyLlavaPhiForCausalLM
from llava_hybrid.host.tiny import build_tiny_llava_phi


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    host.register()
    return build_tiny_llava_phi(str(tmp_path_factory.mktemp("tiny")), num_layers=2)


@pytest.fixture(scope="module")
def model(ckpt):
    m = AutoModelForCausalLM.from_pretrained(ckpt).eval()
    m.get_vision_tower().load_model()
    return m


def test_auto_classes_resolve_to_llava_phi(ckpt, model):
    assert type(model) is LlavaPhiForCausalLM
    assert AutoConfig.for_model("tiny_llava_phi").__class__ is TinyLlavaPhiConfig
    tiny_model = AutoModelForCausalLM.from_config(AutoConfig.for_model("tiny_llava_phi", **{
        k: v for k, v in model.config.to_dict().items() if k.startswith(("hidden", "num_", "vocab", "intermediate"))}))
    assert isinstance(tiny_model, LlavaPhiForCausalLM) and type(tiny_model) is TinyLlavaPhiForCausalLM
    # Phi-2 layout: untied lm_head with a bias, parallel block on one LayerNorm
    assert model.lm_head.bias is not None and model.lm_head.weight.data_ptr() != model.model.embed_tokens.weight.data_ptr()


def test_forward_splices_image_tokens(model):
    n_img = model.get_vision_tower().num_patches  # 16
    ids = torch.tensor([[10, 11, IMAGE_TOKEN_INDEX, 12, 13, 14]])
    labels = torch.tensor([[-100, -100, -100, 12, 13, 14]])
    images = torch.randn(1, 3, 64, 64)
    out = model(input_ids=ids, labels=labels, images=images)
    assert out.logits.shape == (1, 6 - 1 + n_img, model.config.vocab_size)
    assert torch.isfinite(out.loss)
    # the text positions after the image equal a text-only pass over the same embeddings
    embeds = model.get_model().embed_tokens(ids[:, [0, 1]])
    feats = model.get_model().mm_projector(model.get_vision_tower()(images))  # (1, n_img, D)
    full = torch.cat([embeds, feats, model.get_model().embed_tokens(ids[:, 3:])], dim=1)
    ref = model(inputs_embeds=full).logits
    torch.testing.assert_close(out.logits, ref)
    out.loss.backward()
    assert model.get_model().mm_projector[0].weight.grad is not None
    model.zero_grad(set_to_none=True)


def test_generate_returns_only_new_tokens(model):
    ids = torch.tensor([[10, 11, IMAGE_TOKEN_INDEX, 12, 13]])
    images = torch.randn(1, 3, 64, 64)
    new = model.generate(ids, images=images, max_new_tokens=4, do_sample=False, min_new_tokens=4)
    assert new.shape == (1, 4)
    # greedy by hand with full forwards: the same 4 tokens (so no prompt ids are returned)
    seq = ids
    for _ in range(4):
        logits = model(input_ids=seq, images=images).logits
        logits[..., model.config.eos_token_id] = float("-inf")  # as min_new_tokens does
        seq = torch.cat([seq, logits[:, -1].argmax(-1, keepdim=True)], dim=1)
    assert seq[0, -4:].tolist() == new[0].tolist()
    # text only (no images) works too and is also prompt-free
    text_only = model.generate(torch.tensor([[10, 11, 12]]), max_new_tokens=3, do_sample=False, min_new_tokens=3)
    assert text_only.shape == (1, 3)


def test_generate_rejects_inputs_embeds(model):
    with pytest.raises(ValueError, match="inputs_embeds"):
        model.generate(torch.tensor([[1, 2]]), inputs_embeds=torch.zeros(1, 2, 64))


@pytest.mark.parametrize("tower_loaded", [True, False])
def test_save_pretrained_is_self_contained(ckpt, model, tmp_path, tower_loaded):
    """Plain `save_pretrained` + tokenizer: the directory reloads through load_pretrained_model alone."""
    import json
    import os

    from safetensors.torch import load_file
    from transformers import AutoTokenizer

    from llava_hybrid.host.builder import load_pretrained_model

    source = model if tower_loaded else AutoModelForCausalLM.from_pretrained(ckpt).eval()  # delay-loaded tower
    assert source.get_vision_tower().is_loaded == tower_loaded
    before = source.config.mm_vision_tower
    out = tmp_path / "saved"
    source.save_pretrained(str(out))
    AutoTokenizer.from_pretrained(ckpt).save_pretrained(str(out))
    assert source.config.mm_vision_tower == before  # the in-memory config is left as it was
    assert json.loads((out / "config.json").read_text())["mm_vision_tower"] == "vision_tower"
    assert os.path.isfile(out / "vision_tower" / "preprocessor_config.json")
    assert not any(k.startswith("model.vision_tower.") for k in load_file(str(out / "model.safetensors")))
    _, again, processor, _ = load_pretrained_model(str(out), None, "x", device="cpu")
    assert processor is not None
    ids, images = torch.tensor([[5, IMAGE_TOKEN_INDEX, 6, 7]]), torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(again(input_ids=ids, images=images).logits, model(input_ids=ids, images=images).logits)


def test_rope_settings_saved_by_either_lane_build_the_same_model():
    """transformers 5 saves partial_rotary_factor inside rope_parameters, 4.x at the top level; a
    config in either form must give the same model on the lane running (4.x used to fall back to 0.5)."""
    from llava_hybrid.host.phi import LlavaPhiConfig

    base = dict(vocab_size=64, hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=2,
                max_position_embeddings=64)
    top_level = LlavaPhiConfig(**base, partial_rotary_factor=0.25, rope_theta=500.0)
    nested = LlavaPhiConfig.from_dict({**base, "rope_parameters": {
        "rope_type": "default", "rope_theta": 500.0, "partial_rotary_factor": 0.25}})
    ids = torch.arange(1, 40)[None]
    logits = []
    for config in (top_level, nested):
        torch.manual_seed(0)
        logits.append(LlavaPhiForCausalLM(config).eval()(input_ids=ids).logits)
    torch.testing.assert_close(logits[0], logits[1], rtol=0, atol=0)
    # and the factor matters (else the test above could not fail)
    torch.manual_seed(0)
    other = LlavaPhiForCausalLM(LlavaPhiConfig(**base, partial_rotary_factor=0.5, rope_theta=500.0)).eval()
    assert not torch.allclose(other(input_ids=ids).logits, logits[0])
