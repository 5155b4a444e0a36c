"""The easy-VQA teacher's image path through the SFT entry: real data, real dataset/collator, a tiny
teacher checkpoint. Checks what the colour diagnosis needed: sane pixels, the image tokens spliced
into the LM input, the tower trained by --unfreeze_mm_vision_tower (gradients reach SigLIP through
SiglipVisionTower.forward), and answers that depend on the image."""
from dataclasses import replace

import pytest
import torch

from llava_hybrid.easyvqa import teacher
from llava_hybrid.easyvqa.data import prepare
from llava_hybrid.easyvqa.tokenizer import build_easyvqa_tokenizer


@pytest.fixture(scope="module")
def sft_parts(tmp_path_factory):
    from llava import conversation as conversation_lib
    from llava.train import train as llava_train
    from llava_hybrid.host import sft

    root = tmp_path_factory.mktemp("teacher")
    data = prepare(str(root / "data"), turns=1, max_train_images=4, max_test_images=1)
    build_easyvqa_tokenizer(str(root / "tok"))
    cfg = replace(teacher.TeacherConfig(), hidden_size=64, num_layers=2, num_heads=2, vision_hidden=32,
                  vision_layers=1, max_steps=1, batch_size=4, tower_steps=0, freeze_tower=False)
    init = teacher.build_initial_checkpoint(str(root / "init"), str(root / "tok"), cfg)
    argv = teacher.sft_argv(init, data["train"], data["image_folder"], str(root / "out"), cfg)
    model_args, data_args, training_args = sft.parse_args(argv)
    tokenizer = sft.load_tokenizer(model_args, training_args)
    conversation_lib.default_conversation = sft.check_conv_mode(model_args.version, tokenizer)
    model = sft.load_model(model_args, training_args)
    sft.setup_vision(model, tokenizer, model_args, data_args, training_args, has_images=True)
    module = llava_train.make_supervised_data_module(tokenizer=tokenizer, data_args=data_args)
    dataset, collator = module["train_dataset"], module["data_collator"]
    batch = collator([dataset[i] for i in range(4)])
    return model, batch, cfg, argv


def test_pixels_and_image_tokens_reach_the_lm(sft_parts):
    model, batch, cfg, _ = sft_parts
    images = batch["images"]  # (4, 3, 64, 64), SigLIP normalisation (x - 0.5) / 0.5
    assert images.shape == (4, 3, cfg.image_size, cfg.image_size)
    assert images.min() >= -1.0 and images.max() <= 1.0 and images.std() > 0.1
    assert ((batch["input_ids"] == -200).sum(1) == 1).all()  # one placeholder per single-turn sample
    n_image = (cfg.image_size // cfg.patch_size) ** 2
    _, _, _, _, embeds, labels = model.prepare_inputs_labels_for_multimodal(
        batch["input_ids"], None, batch["attention_mask"], None, batch["labels"], images)
    assert embeds.shape[1] == batch["input_ids"].shape[1] - 1 + n_image
    # the spliced rows are the projected tower features of each sample's own image
    features = model.encode_images(images)  # (4, n_image, D)
    start = (batch["input_ids"][0] == -200).nonzero().item()
    torch.testing.assert_close(embeds[0, start:start + n_image], features[0])
    assert not torch.allclose(features[0], features[1])


def test_unfreeze_flag_trains_the_tower(sft_parts):
    model, batch, _, _ = sft_parts
    tower = model.get_vision_tower().vision_tower
    assert model.config.unfreeze_mm_vision_tower
    assert all(p.requires_grad for p in tower.parameters())
    model.train()
    model.zero_grad()
    out = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], labels=batch["labels"],
                images=batch["images"])
    out.loss.backward()
    grad = tower.get_input_embeddings().weight.grad  # the patch embedding (both transformers lanes)
    assert grad is not None and grad.abs().sum() > 0


def test_answer_logits_depend_on_the_image(sft_parts):
    model, batch, _, _ = sft_parts
    model.eval()
    ids, mask = batch["input_ids"][:1].repeat(2, 1), batch["attention_mask"][:1].repeat(2, 1)
    images = batch["images"][:2]  # the same question with two different images
    with torch.no_grad():
        logits = model(input_ids=ids, attention_mask=mask, images=images).logits
    assert (logits[0] - logits[1]).abs().max() > 1e-4


def test_tower_trained_by_sft_is_the_one_eval_loads(sft_parts, tmp_path):
    """A checkpoint saved with unfreeze_mm_vision_tower=True reloads through the eval loader (the tower
    used to be built eagerly inside from_pretrained's meta-device context and crashed) with the trained
    tower and the training image processor."""
    from transformers import SiglipVisionModel
    from llava.model.builder import load_pretrained_model
    from llava_hybrid.host import sft

    _, _, _, argv = sft_parts
    argv = list(argv)
    argv[argv.index("--output_dir") + 1] = str(tmp_path / "out")
    argv[argv.index("--max_steps") + 1] = "2"
    trainer = sft.main(argv)
    trained = trainer.model.get_vision_tower().vision_tower.state_dict()
    _, model, processor, _ = load_pretrained_model(str(tmp_path / "out"), None, "llava_phi", device="cpu",
                                                    device_map="cpu")
    assert model.config.unfreeze_mm_vision_tower
    loaded = model.get_vision_tower().vision_tower.state_dict()
    assert all(torch.equal(loaded[k], trained[k]) for k in trained)
    initial = SiglipVisionModel.from_pretrained(argv[argv.index("--model_name_or_path") + 1] + "/vision_tower")
    assert any(not torch.equal(v, trained[k]) for k, v in initial.state_dict().items())
    assert processor.size == trainer.model.get_vision_tower().image_processor.size
