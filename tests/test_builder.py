"""The patched llava.model.builder.load_pretrained_model: tiny checkpoints in both layouts load and
generate from a real easy-VQA image; vocab never shrinks; registry and error behaviour."""
import os
import re
import shutil

import easy_vqa
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file

import llava_hybrid.host as host
from llava_hybrid.host import builder
from llava_hybrid.convert.factory import convert_factory_checkpoint
from llava_hybrid.host.phi import LlavaPhiForCausalLM
from llava_hybrid.host.tiny import build_tiny_llava_phi


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    host.register()
    root = tmp_path_factory.mktemp("ckpts")
    llava_dir = build_tiny_llava_phi(str(root / "llava"), num_layers=2)
    factory_dir = build_tiny_llava_phi(str(root / "factory"), layout="factory", num_layers=2, seed=1)
    converted = convert_factory_checkpoint(factory_dir, str(root / "converted"))
    return {"llava": llava_dir, "factory": converted}


def _ask(tokenizer, model, image_processor):
    from llava.mm_utils import process_images, tokenizer_image_token
    question = easy_vqa.get_test_questions()[0][0]
    image = Image.open(easy_vqa.get_test_image_paths()[easy_vqa.get_test_questions()[2][0]]).convert("RGB")
    pixels = process_images([image], image_processor, model.config)  # (1, 3, 64, 64)
    prompt = f"USER: <image>\n{question} ASSISTANT:"
    ids = tokenizer_image_token(prompt, tokenizer, return_tensors="pt").unsqueeze(0)
    assert (ids == -200).sum() == 1 and ids[0, 0] != tokenizer.eos_token_id  # no BOS prepended
    out = model.generate(ids, images=pixels, image_sizes=[image.size], max_new_tokens=3, min_new_tokens=3,
                         do_sample=False)
    return ids, out


@pytest.mark.parametrize("layout,tokens", [("llava", 16), ("factory", 15)])
def test_load_and_generate_through_patched_llava_builder(checkpoints, layout, tokens):
    import llava.model.builder as llava_builder
    assert llava_builder.load_pretrained_model is builder.load_pretrained_model
    path = checkpoints[layout]
    tokenizer, model, image_processor, context_len = llava_builder.load_pretrained_model(
        path, None, "anything-without-llava-in-it", device="cuda")  # "cuda" maps to CPU here
    assert type(model) is LlavaPhiForCausalLM and model.device.type == "cpu" and model.dtype == torch.float32
    # the Factory teacher's tokenizer_model_max_length (3072, as the release) is kept by the conversion
    assert context_len == (2048 if layout == "llava" else 3072)
    assert image_processor.crop_size == {"height": 64, "width": 64}
    assert model.get_vision_tower().is_loaded and model.get_vision_tower().num_patches == tokens
    # weights are the checkpoint's (not re-initialised), embeddings not shrunk to len(tokenizer)
    saved = load_file(os.path.join(path, "model.safetensors"))
    torch.testing.assert_close(model.lm_head.weight, saved["lm_head.weight"].float())  # factory: float16
    torch.testing.assert_close(model.get_model().mm_projector[2].bias, saved["model.mm_projector.2.bias"].float())
    # GPT-2's 50,257 tokens; Phi-2's (the Factory release's slow files) add 38 whitespace runs
    assert len(tokenizer) == (50257 if layout == "llava" else 50295)
    assert model.get_input_embeddings().weight.shape[0] == 50304
    assert "<im_patch>" not in tokenizer.get_vocab()
    ids, out = _ask(tokenizer, model, image_processor)
    assert out.shape == (1, 3) and (out >= 0).all()
    assert isinstance(tokenizer.batch_decode(out, skip_special_tokens=True)[0], str)


def test_missing_checkpoint_errors(tmp_path):
    import llava.model.builder as llava_builder
    from llava_hybrid.checkpoint_files import CheckpointError
    with pytest.raises(CheckpointError, match="--model-path") as err:
        llava_builder.load_pretrained_model(str(tmp_path / "nope"), None, "x", device="cpu")
    assert "nope" in str(err.value)
    with pytest.raises(CheckpointError, match="config.json"):
        llava_builder.load_pretrained_model(str(tmp_path), None, "x", device="cpu")


def test_a_truncated_weight_file_is_named_before_loading(checkpoints, tmp_path):
    """A model.safetensors cut short (a failed copy) is named by load_pretrained_model, not a bare
    SafetensorError from deep inside from_pretrained; so is a truncated tower."""
    import llava.model.builder as llava_builder
    from llava_hybrid.checkpoint_files import CheckpointError

    for part in ("model.safetensors", os.path.join("vision_tower", "model.safetensors")):
        ckpt = tmp_path / part.replace(os.sep, "-")
        shutil.copytree(checkpoints["llava"], ckpt)
        weights = ckpt / part
        with open(weights, "r+b") as f:
            f.truncate(weights.stat().st_size - 1000)
        with pytest.raises(CheckpointError, match=rf"{re.escape(str(weights))}: truncated"):
            llava_builder.load_pretrained_model(str(ckpt), None, "x", device="cpu")


def test_registry_refuses_a_second_class():
    builder.register_model_class("llava_phi", LlavaPhiForCausalLM)  # same class: fine (idempotent)
    with pytest.raises(ValueError, match="llava_phi"):
        builder.register_model_class("llava_phi", torch.nn.Module)
    host.register()
    assert builder.MODEL_CLASSES["llava_phi"] is LlavaPhiForCausalLM


def test_unregistered_model_type_goes_to_llava_loader(tmp_path):
    from transformers import GPT2Config, GPT2LMHeadModel
    from llava_hybrid.host.tiny import write_phi2_style_tokenizer
    import llava.model.builder as llava_builder
    write_phi2_style_tokenizer(str(tmp_path))
    GPT2LMHeadModel(GPT2Config(n_embd=16, n_layer=1, n_head=2, n_positions=32)).save_pretrained(tmp_path)
    tokenizer, model, image_processor, context_len = llava_builder.load_pretrained_model(
        str(tmp_path), None, "gpt2-tiny", device="cpu")
    # LLaVA's own non-llava branch: AutoModelForCausalLM in fp16, no image processor, context 2048
    assert type(model) is GPT2LMHeadModel and model.dtype == torch.float16
    assert image_processor is None and context_len == 2048


def test_tiny_llava_phi_model_type_loads(checkpoints, tmp_path):
    """bczhou/TinyLLaVA-3.1B's model_type `tiny_llava_phi` loads into the same model family."""
    import json
    import shutil
    import llava.model.builder as llava_builder
    from llava_hybrid.host.phi import TinyLlavaPhiForCausalLM
    dst = tmp_path / "bczhou-style"
    shutil.copytree(checkpoints["llava"], dst)
    cfg = json.loads((dst / "config.json").read_text())
    cfg.update(model_type="tiny_llava_phi", architectures=["TinyLlavaPhiForCausalLM"])
    (dst / "config.json").write_text(json.dumps(cfg))
    tokenizer, model, image_processor, _ = llava_builder.load_pretrained_model(str(dst), None, "x", device="cpu")
    assert isinstance(model, TinyLlavaPhiForCausalLM) and model.config.model_type == "tiny_llava_phi"
    assert model.get_vision_tower().num_patches == 16 and model.config.image_aspect_ratio == "pad"
    saved = load_file(os.path.join(dst, "model.safetensors"))
    torch.testing.assert_close(model.get_model().embed_tokens.weight, saved["model.embed_tokens.weight"])


def test_model_base_refused_for_registered_types(checkpoints):
    import llava.model.builder as llava_builder
    with pytest.raises(ValueError, match="--model-base"):
        llava_builder.load_pretrained_model(checkpoints["llava"], "/some/base", "x", device="cpu")
