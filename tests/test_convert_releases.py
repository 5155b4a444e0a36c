"""The released checkpoints convert and load on this lane, laid out exactly as the releases are.

Sources (llava_hybrid.host.tiny, tiny sizes but Phi-2's 32 layers and 32 heads): the TinyLLaVA_Factory
teacher (tinyllava/TinyLLaVA-Phi-2-SigLIP-3.1B layout) and the MaTVLM release (hustvl/MaTVLM_*_Mamba2
layout) at its three layer plans, written as transformers 4.43 writes them whatever is installed: 4.x
weight names (tower with `vision_model.`), two safetensors shards + model.safetensors.index.json, sparse
sub-configs, auto_map naming remote code (stand-in files that raise if ever run), Phi-2's slow tokenizer
files, the release's mamba_config.json. Each converts (scripts/convert_*.py) with every tensor bit-exact,
loads through load_pretrained_model with the source model's logits, and answers through LLaVA's unchanged
`python -m llava.eval.model_vqa`. The random models answer " Yes" and stop (tiny.set_fixed_answer).
Error paths name the file and write nothing. A conversion made here loads on the other transformers lane
(the one `.ci/run` also installs) with the same logits and every tower tensor.
"""
import json
import os
import shutil
import subprocess
import sys

import easy_vqa
import pytest
import torch
import transformers
from PIL import Image
from safetensors.torch import load_file

import llava_hybrid
from llava_hybrid.checkpoint_files import CheckpointError, load_state_dict, weight_files
from llava_hybrid.convert.common import map_factory_key
from llava_hybrid.host.saving import TOWER_PREFIX, save_llava_checkpoint
from llava_hybrid.host.tiny import (RELEASE_PLANS, build_matvlm_release, build_tiny_llava_phi,
                                    rewrite_factory_weights, round_parameters)

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(REPO, "scripts"))
import convert_matvlm  # noqa: E402
import convert_tinyllava_factory  # noqa: E402

SIZES = dict(hidden_size=128, num_layers=32, num_heads=32, siglip_tokens=728, image_aspect_ratio="square",
             seed=0, answer=" Yes")
LAYOUTS = ["teacher"] + list(RELEASE_PLANS)
PROMPT = torch.tensor([[1000, 2000, -200, 318, 257, 3797, 30]])  # -200: the image placeholder
RELEASE_FILES = {"config.json", "generation_config.json", "model-00001-of-00002.safetensors",
                 "model-00002-of-00002.safetensors", "model.safetensors.index.json", "vocab.json", "merges.txt",
                 "added_tokens.json", "special_tokens_map.json", "tokenizer_config.json", "configuration.py",
                 "modeling_tinyllava_phi.py"}


@pytest.fixture(scope="module")
def sources(tmp_path_factory):
    """layout -> (release directory, the model it holds, in fp32 with the release's rounding)."""
    llava_hybrid.activate()
    from llava_hybrid.host.phi import LlavaPhiForCausalLM

    root = tmp_path_factory.mktemp("releases")
    teacher_dir = build_tiny_llava_phi(str(root / "teacher-llava"), **SIZES)
    out = {"teacher": (build_tiny_llava_phi(str(root / "teacher"), layout="factory", **SIZES), None)}
    teacher = LlavaPhiForCausalLM.from_pretrained(teacher_dir).eval()
    teacher.get_model().get_vision_tower().load_model()
    out["teacher"] = (out["teacher"][0], round_parameters(teacher, torch.float16))
    for plan in RELEASE_PLANS:
        out[plan] = build_matvlm_release(str(root / f"matvlm-{plan}"), teacher_dir, plan, seed=1)
    return out


@pytest.fixture(scope="module")
def converted(sources, tmp_path_factory):
    """layout -> converted directory (through the scripts, as a user runs them)."""
    root = tmp_path_factory.mktemp("converted")
    dst = {}
    for layout, (src, _) in sources.items():
        script = convert_tinyllava_factory if layout == "teacher" else convert_matvlm
        dst[layout] = script.main(["--src", src, "--dst", str(root / layout)])
    return dst


def pixels(processor):
    _, path = sorted(easy_vqa.get_test_image_paths().items())[0]
    return processor(images=Image.open(path).convert("RGB"), return_tensors="pt")["pixel_values"]


def test_sources_are_the_released_layout(sources):
    for layout, (src, _) in sources.items():
        files = set(os.listdir(src))
        assert files == RELEASE_FILES | ({"mamba_config.json"} if layout != "teacher" else set()), layout
        config = json.loads(open(os.path.join(src, "config.json")).read())
        assert config["model_type"] == "tinyllava" and config["transformers_version"] == "4.43.1"
        assert config["auto_map"]["AutoModelForCausalLM"].startswith("modeling_tinyllava_phi.")
        text, vision = config["text_config"], config["vision_config"]
        # sparse, as 4.43's to_diff_dict leaves them: Phi-2's 32 heads, 2048 positions, rope 1e4 left out
        assert not {"num_attention_heads", "num_key_value_heads", "max_position_embeddings", "rope_theta"} & set(text)
        assert text["num_hidden_layers"] == 32 and text["model_type"] == "phi"
        assert vision["model_name_or_path"] == "google/siglip-so400m-patch14-384" and "num_channels" not in vision
        index = json.loads(open(os.path.join(src, "model.safetensors.index.json")).read())
        assert set(index["weight_map"].values()) == {"model-00001-of-00002.safetensors",
                                                     "model-00002-of-00002.safetensors"}
        tower = [k for k in index["weight_map"] if k.startswith("vision_tower.")]
        assert tower and all(k.startswith("vision_tower._vision_tower.vision_model.") for k in tower)
        dtype = torch.float16 if layout == "teacher" else torch.bfloat16
        state, _ = load_state_dict(src, "--src")
        assert {v.dtype for v in state.values()} == {dtype}
        assert index["metadata"]["total_size"] == sum(v.numel() * v.element_size() for v in state.values())
    text = open(os.path.join(sources["12.5"][0], "mamba_config.json")).read()
    mamba = json.loads(text)
    assert list(mamba) == ["d_model", "ssm_cfg", "layer_norm_eps", "vocab_size", "d_inner", "d_xb",
                           "intermediate_size", "hidden_act", "n_layer", "attn_layers", "resid_pdrop",
                           "bidirectional", "is_bias"]
    assert text == json.dumps(mamba, indent=4)  # json.dump(PhiMambaConfig.__dict__, f, indent=4)
    for plan, layers in RELEASE_PLANS.items():
        attn = json.loads(open(os.path.join(sources[plan][0], "mamba_config.json")).read())["attn_layers"]
        assert attn == [i for i in range(32) if i not in layers]


@pytest.mark.parametrize("layout", LAYOUTS)
def test_every_tensor_converts_bit_exact(sources, converted, layout):
    src_state, _ = load_state_dict(sources[layout][0], "--src")
    dst = converted[layout]
    ours, _ = load_state_dict(dst, "--dst")
    tower, _ = load_state_dict(os.path.join(dst, "vision_tower"), "--dst")
    assert len(ours) + len(tower) == len(src_state)
    for key, value in src_state.items():
        name = map_factory_key(key)
        got = tower[name[len(TOWER_PREFIX):]] if name.startswith(TOWER_PREFIX) else ours[name]
        assert got.dtype == value.dtype and torch.equal(got, value), key
    config = json.loads(open(os.path.join(dst, "config.json")).read())
    assert config["mm_vision_tower"] == "vision_tower" and config["mm_vision_select_feature"] == "patch_drop_first"
    if layout != "teacher":
        assert config["model_type"] == "llava_hybrid_phi" and config["mamba_layers"] == RELEASE_PLANS[layout]
        assert os.path.isfile(os.path.join(dst, "mamba_config.json"))
    assert not os.path.exists(os.path.join(dst, "tokenizer.json")) or \
        all(isinstance(m, str) for m in json.load(open(os.path.join(dst, "tokenizer.json")))["model"]["merges"])


@pytest.mark.parametrize("layout", LAYOUTS)
def test_converted_checkpoint_loads_with_the_source_logits(sources, converted, layout):
    from llava.model.builder import load_pretrained_model

    tokenizer, model, processor, _ = load_pretrained_model(converted[layout], None, layout, device="cpu")
    reference = sources[layout][1]
    images = pixels(processor)
    with torch.no_grad():
        got = model(input_ids=PROMPT, images=images).logits
        want = reference(input_ids=PROMPT, images=images).logits
    assert got.shape == want.shape and got.shape[1] == PROMPT.shape[1] - 1 + 15  # 16 patches, first dropped
    assert (got - want).abs().max().item() <= 1e-5
    assert len(tokenizer) == 50295  # Phi-2's 50,257 + 38 whitespace tokens survive the conversion
    new = model.generate(PROMPT, images=images, max_new_tokens=4, do_sample=False)
    assert tokenizer.decode(new[0], skip_special_tokens=True) == " Yes"


@pytest.mark.slow
@pytest.mark.parametrize("layout", LAYOUTS)
def test_unchanged_model_vqa_answers_through_the_converted_checkpoint(converted, layout, tmp_path):
    texts, _answers, image_ids = easy_vqa.get_test_questions()
    paths = easy_vqa.get_test_image_paths()
    questions = []
    for i in (0, 7):
        shutil.copy(paths[image_ids[i]], tmp_path / f"{image_ids[i]}.png")
        questions.append({"question_id": i, "image": f"{image_ids[i]}.png", "text": texts[i]})
    (tmp_path / "q.jsonl").write_text("".join(json.dumps(q) + "\n" for q in questions))
    answers = tmp_path / "answers.jsonl"
    cmd = [sys.executable, "-m", "llava.eval.model_vqa", "--model-path", converted[layout], "--question-file",
           str(tmp_path / "q.jsonl"), "--image-folder", str(tmp_path), "--answers-file", str(answers),
           "--conv-mode", "phi", "--temperature", "0"]
    env = {k: v for k, v in os.environ.items() if k != "LLAVA_HYBRID_DISABLE"}
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = [json.loads(line) for line in answers.read_text().splitlines()]
    assert [r["question_id"] for r in rows] == [0, 7] and [r["text"] for r in rows] == ["Yes", "Yes"]


def test_a_tower_re_saved_by_transformers_5_converts_the_same(sources, converted, tmp_path):
    """A Factory checkpoint re-saved by a newer transformers names its tower without `vision_model.`."""
    src = str(tmp_path / "resaved")
    shutil.copytree(sources["25"][0], src)

    def drop_level(state):
        for key in [k for k in state if k.startswith("vision_tower._vision_tower.vision_model.")]:
            state[key.replace("vision_tower._vision_tower.vision_model.", "vision_tower._vision_tower.")] = \
                state.pop(key)

    rewrite_factory_weights(src, drop_level)
    dst = convert_matvlm.main(["--src", src, "--dst", str(tmp_path / "out")])
    for part in ("", "vision_tower"):
        a, _ = load_state_dict(os.path.join(dst, part), "a")
        b, _ = load_state_dict(os.path.join(converted["25"], part), "b")
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


# ---------------------------------------------------------------------------------------------------------
# error paths: each a clear error naming the file, nothing written


def _listing(path):
    return sorted((os.path.relpath(os.path.join(d, n), path), os.path.getsize(os.path.join(d, n)))
                  for d, _, names in os.walk(path) for n in names)


def test_a_missing_shard_is_named_and_nothing_is_written(sources, tmp_path):
    src = str(tmp_path / "src")
    shutil.copytree(sources["teacher"][0], src)
    os.remove(os.path.join(src, "model-00002-of-00002.safetensors"))
    with pytest.raises(CheckpointError, match=r"missing: \['model-00002-of-00002.safetensors'\]"):
        convert_tinyllava_factory.main(["--src", src, "--dst", str(tmp_path / "out")])
    assert not os.path.exists(tmp_path / "out") and not any(n.startswith(".tmp") for n in os.listdir(tmp_path))


def test_a_truncated_shard_is_named_and_nothing_is_written(sources, tmp_path):
    src = str(tmp_path / "src")
    shutil.copytree(sources["50"][0], src)
    shard = os.path.join(src, "model-00001-of-00002.safetensors")
    with open(shard, "r+b") as f:
        f.truncate(os.path.getsize(shard) // 2)
    with pytest.raises(CheckpointError, match=r"model-00001-of-00002\.safetensors: truncated"):
        convert_matvlm.main(["--src", src, "--dst", str(tmp_path / "out")])
    assert not os.path.exists(tmp_path / "out") and not any(n.startswith(".tmp") for n in os.listdir(tmp_path))


def test_dst_equal_to_src_or_not_empty_is_refused(sources, tmp_path):
    src = sources["teacher"][0]
    before = _listing(src)
    with pytest.raises(CheckpointError, match="--dst .* is --src"):
        convert_tinyllava_factory.main(["--src", src, "--dst", src])
    with pytest.raises(CheckpointError, match="--dst .* is --src"):
        convert_tinyllava_factory.main(["--src", src, "--dst", src + "/"])
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "keep.txt").write_text("mine")
    with pytest.raises(CheckpointError, match="not an empty directory"):
        convert_matvlm.main(["--src", sources["25"][0], "--dst", str(tmp_path / "full")])
    assert _listing(src) == before and os.listdir(tmp_path / "full") == ["keep.txt"]


def test_a_remote_code_only_checkpoint_is_refused_with_what_to_pass(sources):
    """load_pretrained_model (hence every LLaVA eval script) never runs the release's own code."""
    from llava.model.builder import load_pretrained_model

    for layout in ("teacher", "25"):
        src = sources[layout][0]
        with pytest.raises(CheckpointError) as err:
            load_pretrained_model(src, None, "x", device="cpu")
        message = str(err.value)
        assert src in message and "model_type 'tinyllava'" in message and "configuration.py" in message
        assert "scripts/convert_tinyllava_factory.py" in message and "scripts/convert_matvlm.py" in message
        assert "--model-path <new dir>" in message


# ---------------------------------------------------------------------------------------------------------
# the other transformers lane


def _other_lane_python():
    name = ".venv4" if int(transformers.__version__.split(".")[0]) >= 5 else ".venv"
    python = os.path.join(REPO, name, "bin", "python")
    if os.path.exists(python):
        return python
    if os.environ.get("LLAVA_HYBRID_BOTH_LANES") == "1":
        pytest.fail(f"LLAVA_HYBRID_BOTH_LANES=1 but the other lane's {python} is missing (.ci/run installs it)")
    pytest.skip(f"the other transformers lane ({name}) is not installed here; .ci/run installs both")


def test_checkpoints_written_on_this_lane_load_on_the_other(sources, converted, tmp_path):
    """Converted (teacher, 25 % release) and re-saved (the one save path, from a loaded hybrid) checkpoints:
    the other lane loads them with the same fp32 logits (<= 1e-5) and every tower tensor."""
    from llava.model.builder import load_pretrained_model

    other = _other_lane_python()
    tokenizer, model, processor, _ = load_pretrained_model(converted["25"], None, "x", device="cpu")
    resaved = save_llava_checkpoint(model, str(tmp_path / "resaved"), tokenizer)  # what the trainers call
    images = pixels(processor)
    torch.save({"input_ids": PROMPT, "images": images}, tmp_path / "inputs.pt")
    cases = []
    for name, path in (("teacher", converted["teacher"]), ("release-25", converted["25"]), ("resaved", resaved)):
        _, m, _, _ = load_pretrained_model(path, None, name, device="cpu")
        with torch.no_grad():
            logits = m(input_ids=PROMPT, images=images).logits
        torch.save(logits, tmp_path / f"{name}.pt")
        cases.append({"path": path, "logits": str(tmp_path / f"{name}.pt")})
    (tmp_path / "cases.json").write_text(json.dumps({"inputs": str(tmp_path / "inputs.pt"), "cases": cases}))
    proc = subprocess.run([other, os.path.join(REPO, "tests", "cross_lane_load.py"), str(tmp_path / "cases.json")],
                          capture_output=True, text=True, timeout=600,
                          env=dict(os.environ, HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1"))
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    results = json.loads(proc.stdout.strip().splitlines()[-1])
    assert results["transformers"].split(".")[0] != transformers.__version__.split(".")[0]
    for case in results["cases"]:
        assert case["tower_tensors"] == case["tower_tensors_in_file"] > 0, case
        assert case["max_logit_diff"] <= 1e-5, case
