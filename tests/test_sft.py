"""SFT entry: a tiny real llava_phi checkpoint trained on real easy-VQA samples through LLaVATrainer."""
import json
import shutil

import easy_vqa
import pytest
import torch

from llava_hybrid.easyvqa.tokenizer import train_task_tokenizer
from llava_hybrid.host.conversation import PHI_EOS as EOS, conv_phi
from llava_hybrid.compat import trainer_tokenizer
from llava_hybrid.host.sft import main
from llava_hybrid.host.tiny import build_tiny_llava_phi

N_IMAGES, TURNS = 16, 2


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    """Tiny llava_phi checkpoint with the GPT-2 BPE tokenizer (Phi-2's: <|endoftext|> = eos = pad)."""
    return build_tiny_llava_phi(str(tmp_path_factory.mktemp("tiny") / "ckpt"), hidden_size=64, num_layers=2)


@pytest.fixture(scope="module")
def task_ckpt(tmp_path_factory, data):
    """The same with a byte-level BPE trained on the task text (same Phi-2 conditions: <|endoftext|>
    = eos = pad = unk, no BOS), so a step is not dominated by a 50k-row lm_head."""
    root = tmp_path_factory.mktemp("tiny_task")
    samples = json.loads((data / "data.json").read_text())
    texts = [conv_phi.system] + [t["value"] + EOS for s in samples for t in s["conversations"]]
    train_task_tokenizer(texts, str(root / "tok"), vocab_size=320)
    return build_tiny_llava_phi(str(root / "ckpt"), hidden_size=64, num_layers=2, vocab=str(root / "tok"))


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    """A LLaVA-format JSON of multi-turn easy-VQA conversations + their image folder."""
    root = tmp_path_factory.mktemp("evqa")
    (root / "images").mkdir()
    texts, answers, image_ids = easy_vqa.get_train_questions()
    paths = easy_vqa.get_train_image_paths()
    by_image = {}
    for q, a, i in zip(texts, answers, image_ids):
        by_image.setdefault(i, []).append((q, a))
    samples = []
    for i in sorted(by_image)[:N_IMAGES]:
        shutil.copy(paths[i], root / "images" / f"{i}.png")
        turns = []
        for k, (q, a) in enumerate(by_image[i][:TURNS]):
            turns += [{"from": "human", "value": ("<image>\n" if k == 0 else "") + q}, {"from": "gpt", "value": a}]
        samples.append({"id": str(i), "image": f"{i}.png", "conversations": turns})
    (root / "data.json").write_text(json.dumps(samples))
    return root


def _argv(ckpt, data, out, *extra):
    return ["--model_name_or_path", ckpt, "--version", "phi", "--data_path", str(data / "data.json"),
            "--image_folder", str(data / "images"), "--output_dir", str(out), "--report_to", "none",
            "--per_device_train_batch_size", "4", "--learning_rate", "2e-3", "--logging_steps", "1",
            "--save_strategy", "no", "--dataloader_num_workers", "0", "--seed", "0",
            "--model_max_length", "256", "--dataloader_pin_memory", "False", *extra]


def _fixed_batch_loss(model, trainer_like):
    dataset, collator = trainer_like.train_dataset, trainer_like.data_collator
    batch = collator([dataset[i] for i in range(4)])
    model.eval()
    with torch.no_grad():
        return model(**batch).loss.item(), batch


def test_sft_lowers_loss_and_learns_the_stop_token(task_ckpt, data, tmp_path, capsys):
    out = tmp_path / "out"
    trainer = main(_argv(task_ckpt, data, out, "--max_steps", "14", "--learning_rate", "4e-3"))
    n = trainer.model.config.num_hidden_layers  # the run's first line: its layer plan (all attention here)
    assert f"layer plan: {'*' * n} (M = Mamba-2 at [], * = attention; {n} decoder layers)" in capsys.readouterr().out
    losses = [h["loss"] for h in trainer.state.log_history if "loss" in h]
    assert len(losses) == 14
    first, last = sum(losses[:4]) / 4, sum(losses[-4:]) / 4
    assert last < first - 1.0, losses
    # the in-sample <|endoftext|> tokens reach the loss: they stay attended and labelled
    tok = trainer_tokenizer(trainer)
    loss_after, batch = _fixed_batch_loss(trainer.model, trainer)
    assert tok.pad_token_id == tok.eos_token_id
    assert ((batch["labels"] == tok.eos_token_id) & batch["attention_mask"]).sum() == 4 * TURNS
    # the saved output is a loadable checkpoint (tokenizer, config, tower dir) with the trained weights
    from llava_hybrid.host.builder import load_pretrained_model
    tok2, model, _, _ = load_pretrained_model(str(out), None, "out", device="cpu")
    reloaded, _ = _fixed_batch_loss(model, trainer)
    _, initial_model, _, _ = load_pretrained_model(task_ckpt, None, "ckpt", device="cpu")
    before, _ = _fixed_batch_loss(initial_model, trainer)
    assert reloaded == pytest.approx(loss_after, rel=1e-4) and reloaded < before - 1.0
    assert tok2.pad_token_id == tok2.eos_token_id and model.config.image_aspect_ratio == "pad"
    # its BPE merges are in the string form both transformers lanes read (tokenizers 0.15 and >= 0.20)
    merges = json.loads((out / "tokenizer.json").read_text())["model"]["merges"]
    assert merges and all(isinstance(m, str) for m in merges)


def test_tune_mm_mlp_adapter_trains_only_the_projector(ckpt, data, tmp_path):
    trainer = main(_argv(ckpt, data, tmp_path / "out", "--max_steps", "2", "--tune_mm_mlp_adapter", "True",
                        "--group_by_modality_length", "True"))
    trainable = {n for n, p in trainer.model.named_parameters() if p.requires_grad}
    assert trainable and all("mm_projector" in n for n in trainable)
    assert (tmp_path / "out" / "mm_projector.bin").is_file()


def test_missing_data_file(ckpt, data, tmp_path):
    argv = _argv(ckpt, data, tmp_path / "out")
    argv[argv.index("--data_path") + 1] = str(tmp_path / "nope.json")
    with pytest.raises(ValueError, match=r"--data_path .*nope.json.*no such file"):
        main(argv)


def test_malformed_json(ckpt, data, tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text('[{"image": "0.png", "conversations": [')
    argv = _argv(ckpt, data, tmp_path / "out")
    argv[argv.index("--data_path") + 1] = str(bad)
    with pytest.raises(ValueError, match=r"--data_path .*bad.json.*malformed JSON"):
        main(argv)
    bad.write_text('[{"image": "0.png", "text": "no conversations"}]')
    with pytest.raises(ValueError, match=r"sample 0 lacks a 'conversations' list"):
        main(argv)


def test_missing_images_listed_before_training(ckpt, data, tmp_path):
    folder = tmp_path / "images"
    shutil.copytree(data / "images", folder)
    gone = sorted(folder.iterdir())[:7]
    for p in gone:
        p.unlink()
    argv = _argv(ckpt, data, tmp_path / "out")
    argv[argv.index("--image_folder") + 1] = str(folder)
    with pytest.raises(ValueError, match=r"--image_folder .*7 of 16 images .*missing") as err:
        main(argv)
    assert gone[0].name in str(err.value) and not (tmp_path / "out").exists()


@pytest.mark.parametrize("version,match", [
    ("phi_v9", r"--conv-mode/--version 'phi_v9' is not a known"),
    ("vicuna_v1", r"--conv-mode/--version 'vicuna_v1'.*'</s>' is 3 tokens"),
])
def test_bad_version(ckpt, data, tmp_path, version, match):
    argv = _argv(ckpt, data, tmp_path / "out")
    argv[argv.index("--version") + 1] = version
    with pytest.raises(ValueError, match=match):
        main(argv)


def test_contradicting_projector_flag(ckpt, data, tmp_path):
    with pytest.raises(ValueError, match=r"--mm_projector_type 'linear'.*built with 'mlp2x_gelu'"):
        main(_argv(ckpt, data, tmp_path / "out", "--mm_projector_type", "linear"))


def test_unfreeze_mm_vision_tower_trains_and_saves_the_tower(task_ckpt, data, tmp_path):
    from transformers import SiglipVisionModel
    initial = SiglipVisionModel.from_pretrained(f"{task_ckpt}/vision_tower").state_dict()
    trainer = main(_argv(task_ckpt, data, tmp_path / "out", "--max_steps", "2", "--unfreeze_mm_vision_tower", "True"))
    tower = trainer.model.get_vision_tower()
    assert all(p.requires_grad for p in tower.parameters())
    trained = tower.vision_tower.state_dict()
    changed = [k for k in initial if not torch.equal(initial[k], trained[k])]
    assert changed, "the tower did not train"
    saved = SiglipVisionModel.from_pretrained(str(tmp_path / "out" / "vision_tower")).state_dict()
    assert all(torch.equal(saved[k], trained[k]) for k in changed)
    assert json.loads((tmp_path / "out" / "config.json").read_text())["mm_vision_tower"] == "vision_tower"


def test_llama_lm_gets_a_new_projector_with_llava_pretrain_flags(ckpt, data, tmp_path):
    """LLaVA's stage-1 recipe on a plain (model_type llama) LM: new tower + projector, plain template."""
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM
    lm_dir = tmp_path / "llama"
    tok = AutoTokenizer.from_pretrained(ckpt)
    LlamaForCausalLM(LlamaConfig(vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                                 num_attention_heads=2, num_key_value_heads=2)).save_pretrained(lm_dir)
    tok.save_pretrained(lm_dir)
    one_turn = [dict(s, conversations=s["conversations"][:2]) for s in json.loads((data / "data.json").read_text())]
    (tmp_path / "plain.json").write_text(json.dumps(one_turn))
    argv = _argv(str(lm_dir), data, tmp_path / "out", "--max_steps", "2", "--vision_tower", f"{ckpt}/vision_tower",
                 "--mm_projector_type", "mlp2x_gelu", "--tune_mm_mlp_adapter", "True", "--image_aspect_ratio", "square")
    argv[argv.index("--version") + 1] = "plain"
    argv[argv.index("--data_path") + 1] = str(tmp_path / "plain.json")
    trainer = main(argv)
    model = trainer.model
    assert type(model).__name__ == "LlavaLlamaForCausalLM"
    assert model.config.mm_projector_type == "mlp2x_gelu" and model.config.mm_vision_select_layer == -2
    assert {n for n, p in model.named_parameters() if p.requires_grad} == {
        n for n, _ in model.named_parameters() if "mm_projector" in n}
    assert (tmp_path / "out" / "mm_projector.bin").is_file()


def test_freeze_backbone_keeps_projector_and_head_trainable(ckpt, data, tmp_path):
    trainer = main(_argv(ckpt, data, tmp_path / "out", "--max_steps", "1", "--freeze_backbone", "True"))
    trainable = {n.split(".")[0] + "." + n.split(".")[1] for n, p in trainer.model.named_parameters() if p.requires_grad}
    assert trainable == {"model.mm_projector", "lm_head.weight", "lm_head.bias"}
