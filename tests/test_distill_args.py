"""Every bad input of scripts/distill_hybrid.py fails before any model is loaded, naming the flag/file.

Also holds the tiny-teacher / easy-VQA builders the other distillation tests import.
"""
import json
import os
import shutil

import pytest

from llava_hybrid.distill.arguments import parse_args, validate

TRAIN_IMAGES = 8


def build_assets(root: str) -> dict:
    """A tiny LLaVA-Phi teacher (task tokenizer, 4 layers) and a small real easy-VQA split under root."""
    from llava_hybrid.easyvqa.data import prepare
    from llava_hybrid.easyvqa.tokenizer import build_easyvqa_tokenizer
    from llava_hybrid.host.tiny import build_tiny_llava_phi

    tok_dir = os.path.join(root, "tok")
    build_easyvqa_tokenizer(tok_dir)
    teacher = build_tiny_llava_phi(os.path.join(root, "teacher"), hidden_size=64, num_layers=4, num_heads=2,
                                   vocab=tok_dir, seed=0)
    data = prepare(os.path.join(root, "data"), turns=2, max_train_images=TRAIN_IMAGES, max_test_images=2)
    return {"teacher": teacher, "data": data["train"], "images": data["image_folder"],
            "test": data["test"], "root": root}


def base_argv(assets: dict, output_dir: str, *extra: str) -> list:
    return ["--model_name_or_path", assets["teacher"], "--data_path", assets["data"],
            "--image_folder", assets["images"], "--output_dir", output_dir, "--mm_hybrid_ratio", "0.5",
            "--use_cpu", "True", "--report_to", "none", *extra]


@pytest.fixture(scope="module")
def assets(tmp_path_factory):
    return build_assets(str(tmp_path_factory.mktemp("distill_args")))


def _fails(argv, match):
    from llava_hybrid.distill.trainer import main

    with pytest.raises(ValueError, match=match):
        main(argv)


def test_good_arguments_validate(assets, tmp_path):
    m, d, t = parse_args(base_argv(assets, str(tmp_path / "out")))
    plan = validate(m, d, t)
    assert plan.mamba_layers == [0, 2] and plan.num_layers == 4
    assert plan.trainable == ["mamba", "mm_projector"]
    assert (t.learning_rate, t.weight_decay, t.adam_beta1, t.adam_beta2) == (2e-4, 0.01, 0.9, 0.95)
    assert (t.distill_alpha, t.distill_beta, t.distill_gamma, t.distill_temperature) == (1.0, 1.0, 0.0, 1.0)
    m, d, t = parse_args(base_argv(assets, str(tmp_path / "o")) + ["--mm_hybrid_layers", "1,3",
                                                                        "--mm_hybrid_ratio", "0.5"])
    assert validate(m, d, t).mamba_layers == [1, 3]


def test_no_mamba_layer(assets, tmp_path):
    argv = base_argv(assets, str(tmp_path / "out"))
    i = argv.index("--mm_hybrid_ratio")
    _fails(argv[:i] + argv[i + 2:], "--mm_hybrid_ratio")
    _fails(argv[:i] + argv[i + 2:] + ["--mm_hybrid_layers", ""], "no Mamba layer")


def test_missing_teacher_and_model(assets, tmp_path):
    _fails(base_argv(assets, str(tmp_path / "o"), "--teacher_model_name_or_path", str(tmp_path / "nope")),
           "--teacher_model_name_or_path")
    empty = tmp_path / "empty"
    empty.mkdir()
    _fails(base_argv(assets, str(tmp_path / "o"), "--teacher_model_name_or_path", str(empty)),
           "--teacher_model_name_or_path .*config.json")


def test_bad_data(assets, tmp_path):
    argv = base_argv(assets, str(tmp_path / "o"))
    i = argv.index("--data_path") + 1
    _fails(argv[:i] + [str(tmp_path / "missing.json")] + argv[i + 1:], "--data_path .*no such file")
    bad = tmp_path / "bad.json"
    bad.write_text("[{not json")
    _fails(argv[:i] + [str(bad)] + argv[i + 1:], "--data_path .*malformed JSON")
    noconv = tmp_path / "noconv.json"
    noconv.write_text(json.dumps([{"id": 1, "image": "train/0.png"}]))
    _fails(argv[:i] + [str(noconv)] + argv[i + 1:], "--data_path .*conversations")


def test_missing_image(assets, tmp_path):
    with open(assets["data"]) as f:
        records = json.load(f)
    records[1]["image"] = "train/does_not_exist.png"
    path = tmp_path / "train.json"
    path.write_text(json.dumps(records))
    argv = base_argv(assets, str(tmp_path / "o"))
    i = argv.index("--data_path") + 1
    _fails(argv[:i] + [str(path)] + argv[i + 1:], "--image_folder .*does_not_exist.png")


def test_all_loss_weights_zero_and_bad_choices(assets, tmp_path):
    argv = base_argv(assets, str(tmp_path / "o"))
    _fails(argv + ["--distill_alpha", "0", "--distill_beta", "0", "--distill_gamma", "0"], "--distill_alpha")
    _fails(argv + ["--distill_layer_norm", "l1"], "--distill_layer_norm")
    _fails(argv + ["--distill_tokens", "prompt"], "--distill_tokens")
    _fails(argv + ["--trainable", "mamba,everything"], "--trainable")


def test_tokenizers_differ(assets, tmp_path):
    from llava_hybrid.host.tiny import build_tiny_llava_phi

    other = build_tiny_llava_phi(str(tmp_path / "gpt2_teacher"), hidden_size=64, num_layers=4, num_heads=2,
                                 vocab="gpt2")
    _fails(base_argv(assets, str(tmp_path / "o"), "--teacher_model_name_or_path", other),
           "--teacher_model_name_or_path .*different tokenizer")
    # same tokenizer files in another directory: accepted
    same = str(tmp_path / "copy")
    shutil.copytree(assets["teacher"], same)
    m, d, t = parse_args(base_argv(assets, str(tmp_path / "o"), "--teacher_model_name_or_path", same))
    assert validate(m, d, t).teacher_path == same


def test_trainable_parts_and_weight_decay_groups(assets):
    """Default --trainable: only Mamba layers and the projector train; no decay on SSM scalars/norms/biases."""
    import llava_hybrid
    from llava_hybrid.distill.trainer import build_distill_student, optimizer_groups

    llava_hybrid.activate()
    from llava.model.builder import load_pretrained_model

    _, teacher, _, _ = load_pretrained_model(assets["teacher"], None, "teacher", device="cpu")
    m, d, t = parse_args(base_argv(assets, "unused") + ["--mamba_chunk_size", "8"])
    student = build_distill_student(teacher, validate(m, d, t), m)
    mixers = [layer.mamba for layer in student.get_model().layers if layer.is_mamba]
    assert student.config.mamba_chunk_size == 8 and mixers and all(x.chunk_size == 8 for x in mixers)
    trained = {n for n, p in student.named_parameters() if p.requires_grad}
    assert trained and all((".mamba." in n and n.startswith(("model.layers.0.", "model.layers.2."))) or
                           "mm_projector" in n for n in trained)
    assert any("mm_projector" in n for n in trained) and not any("vision_tower" in n for n in trained)
    names = {id(p): n for n, p in student.named_parameters()}
    decay, no_decay = optimizer_groups(student, 0.01)
    assert decay["weight_decay"] == 0.01 and no_decay["weight_decay"] == 0.0
    decayed = {names[id(p)] for p in decay["params"]}
    assert {n.rsplit(".", 1)[-1] for n in decayed} == {"weight"} and not any("norm" in n for n in decayed)
    kept = {names[id(p)] for p in no_decay["params"]}
    assert {"model.layers.0.mamba.A_log", "model.layers.0.mamba.D", "model.layers.0.mamba.dt_bias",
            "model.layers.0.mamba.norm.weight"} <= kept
    # the rule is mamba_ssm's marker and the tensor's rank, not its name
    marked = student.get_model().layers[0].mamba.in_proj.weight
    marked._no_weight_decay = True
    assert any(p is marked for p in optimizer_groups(student, 0.01)[1]["params"])
