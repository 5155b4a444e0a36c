"""LLaVA hybrid (MaTVLM student in LLaVA layout): build from a tiny real teacher, save/load, generate."""
import os

import easy_vqa
import pytest
import torch
from PIL import Image
from transformers import AutoTokenizer

import llava_hybrid
from llava_hybrid.host.tiny import build_tiny_llava_phi
from llava_hybrid.host.hybrid_models import LlavaHybridPhiForCausalLM, build_llava_student, register
from llava_hybrid.hybrid.layers import left_align

IMAGE_TOKEN_INDEX = -200
MAMBA_LAYERS = [0, 2]


@pytest.fixture(scope="module")
def teacher_and_student(tmp_path_factory):
    llava_hybrid.activate()
    register()
    from llava_hybrid.host.phi import LlavaPhiForCausalLM

    src = build_tiny_llava_phi(str(tmp_path_factory.mktemp("teacher")), hidden_size=64, num_layers=4)
    teacher = LlavaPhiForCausalLM.from_pretrained(src).eval()
    teacher.get_model().get_vision_tower().load_model()
    student = build_llava_student(teacher, MAMBA_LAYERS, seed=0)
    return teacher, student, src


def easy_vqa_image(student):
    """One real easy-VQA image (64x64 PNG) as pixel values (1, 3, H, W) from the tower's processor."""
    image_id, path = sorted(easy_vqa.get_test_image_paths().items())[0]
    image = Image.open(path).convert("RGB")
    processor = student.get_model().get_vision_tower().image_processor
    return processor(images=image, return_tensors="pt")["pixel_values"]


def prompt_ids():
    # a prompt with one image placeholder, as LLaVA's tokenizer_image_token produces
    return torch.tensor([[1000, 2000, IMAGE_TOKEN_INDEX, 318, 257, 3797, 30]])


def test_student_is_llava_and_keeps_teacher_weights(teacher_and_student):
    teacher, student, _ = teacher_and_student
    assert isinstance(student, LlavaHybridPhiForCausalLM)
    assert student.config.model_type == "llava_hybrid_phi"
    for field in ("mm_projector_type", "mm_hidden_size", "mm_vision_select_layer", "mm_vision_select_feature",
                  "image_aspect_ratio", "mm_use_im_start_end"):
        assert getattr(student.config, field) == getattr(teacher.config, field), field
    t_sd, s_sd = teacher.state_dict(), student.state_dict()
    replaced = tuple(f"model.layers.{i}.self_attn." for i in MAMBA_LAYERS)
    for key, value in t_sd.items():
        if not key.startswith(replaced):
            assert torch.equal(s_sd[key], value), key
    assert any(k.startswith("model.vision_tower.") for k in s_sd)  # tower carried over, loaded


def test_save_and_from_pretrained_identical_logits(teacher_and_student, tmp_path):
    _, student, _ = teacher_and_student
    images = easy_vqa_image(student)
    student.save_pretrained(str(tmp_path))
    assert os.path.isfile(tmp_path / "vision_tower" / "config.json")
    loaded = LlavaHybridPhiForCausalLM.from_pretrained(str(tmp_path)).eval()
    loaded.get_model().get_vision_tower().load_model()
    assert loaded.config.mamba_layers == MAMBA_LAYERS
    with torch.no_grad():
        want = student(input_ids=prompt_ids(), images=images).logits
        got = loaded(input_ids=prompt_ids(), images=images).logits
    n_image = student.get_model().get_vision_tower().num_patches
    assert want.shape == (1, prompt_ids().shape[1] - 1 + n_image, student.config.vocab_size)
    assert torch.equal(got, want)


def test_load_pretrained_model_and_generate_new_tokens_only(teacher_and_student, tmp_path):
    _, student, src = teacher_and_student
    student.save_pretrained(str(tmp_path))
    AutoTokenizer.from_pretrained(src).save_pretrained(str(tmp_path))
    from llava.model.builder import load_pretrained_model

    tokenizer, model, image_processor, context_len = load_pretrained_model(
        str(tmp_path), None, "llava_hybrid_tiny", device="cpu")
    assert isinstance(model, LlavaHybridPhiForCausalLM) and image_processor is not None
    images = easy_vqa_image(student)
    with torch.no_grad():
        want = student(input_ids=prompt_ids(), images=images).logits
        got = model(input_ids=prompt_ids(), images=images).logits
    assert torch.allclose(got, want, atol=1e-5)
    new = model.generate(prompt_ids(), images=images, image_sizes=[(64, 64)], max_new_tokens=5, do_sample=False)
    assert new.shape[0] == 1 and 1 <= new.shape[1] <= 5
    # greedy new tokens = argmax continuation computed with full forwards (no prompt ids in the output)
    ids = prompt_ids()
    with torch.no_grad():
        for step in range(new.shape[1]):
            logits = model(input_ids=ids, images=images).logits[:, -1]
            assert int(logits.argmax(-1)) == int(new[0, step])
            ids = torch.cat([ids, new[:, step:step + 1]], dim=1)


def test_left_align_keeps_token_order():
    embeds = torch.arange(10.0).view(2, 5, 1)
    mask = torch.tensor([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]])
    out, out_mask = left_align(embeds, mask)
    assert out[0, :, 0].tolist() == [3.0, 4.0, 0.0, 1.0, 2.0]
    assert out_mask[0].tolist() == [0, 0, 1, 1, 1]
    assert torch.equal(out[1], embeds[1])
    ids, ids_mask = left_align(torch.tensor([[5, 6, 0], [7, 8, 9]]), torch.tensor([[1, 1, 0], [1, 1, 1]]))
    assert ids.tolist() == [[0, 5, 6], [7, 8, 9]] and ids_mask.tolist() == [[0, 1, 1], [1, 1, 1]]
