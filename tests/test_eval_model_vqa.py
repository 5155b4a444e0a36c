"""The unchanged `python -m llava.eval.model_vqa` runs a tiny Phi + SigLIP checkpoint on easy-VQA images.

The plain run works only because the installed startup hook activates the plugin (phi template,
SigLIP tower, llava_phi loader, CPU mapping); LLAVA_HYBRID_DISABLE=1 makes the same command fail.
The tiny model is random, so its lm_head bias is set to favour <|endoftext|>: generation stops at
once instead of running model_vqa's max_new_tokens=1024 (the pipeline, not the answers, is tested).
"""
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

N_QUESTIONS = 3
KEYS = {"question_id", "prompt", "text", "answer_id", "model_id", "metadata"}


@pytest.fixture(scope="module")
def vqa_case(tmp_path_factory):
    """A tiny llava_phi checkpoint (stops at once), easy-VQA images and a question JSONL."""
    import easy_vqa
    from safetensors.torch import load_file, save_file

    from llava_hybrid.host.tiny import build_tiny_llava_phi

    root = tmp_path_factory.mktemp("vqa")
    ckpt = Path(build_tiny_llava_phi(str(root / "tiny-llava-phi")))
    config = json.loads((ckpt / "config.json").read_text())
    weights = load_file(str(ckpt / "model.safetensors"))
    weights["lm_head.bias"][config["eos_token_id"]] = 1e4
    save_file(weights, str(ckpt / "model.safetensors"), metadata={"format": "pt"})

    texts, _answers, image_ids = easy_vqa.get_test_questions()
    paths = easy_vqa.get_test_image_paths()
    images = root / "images"
    images.mkdir()
    questions = []
    for i in range(0, 40, 40 // N_QUESTIONS)[:N_QUESTIONS]:
        name = f"{image_ids[i]}.png"
        shutil.copy(paths[image_ids[i]], images / name)
        questions.append({"question_id": i, "image": name, "text": texts[i]})
    question_file = root / "questions.jsonl"
    question_file.write_text("".join(json.dumps(q) + "\n" for q in questions))
    return {"root": root, "ckpt": ckpt, "images": images, "questions": questions,
            "question_file": question_file}


def _run(case, prefix, answers_name, env_extra=None):
    answers = case["root"] / "out" / answers_name
    cmd = [sys.executable, "-m", *prefix, "--model-path", str(case["ckpt"]),
           "--question-file", str(case["question_file"]), "--image-folder", str(case["images"]),
           "--answers-file", str(answers), "--conv-mode", "phi", "--temperature", "0"]
    env = {k: v for k, v in os.environ.items() if k != "LLAVA_HYBRID_DISABLE"}
    env.update(env_extra or {})
    proc = subprocess.run(cmd, cwd=case["root"], env=env, capture_output=True, text=True, timeout=300)
    return proc, answers


def _check_answers(case, answers):
    lines = answers.read_text().splitlines()
    assert len(lines) == len(case["questions"])
    rows = [json.loads(line) for line in lines]
    for row, question in zip(rows, case["questions"]):
        assert set(row) == KEYS
        assert row["question_id"] == question["question_id"]
        assert row["prompt"] == question["text"]
        assert row["model_id"] == case["ckpt"].name
        assert isinstance(row["text"], str) and row["metadata"] == {}
    return rows


def test_startup_hook_is_installed():
    from llava_hybrid import startup

    assert startup.pth_path().exists(), (
        "the startup .pth is not installed in this interpreter's site-packages: "
        "run `python -m llava_hybrid.startup install` (scripts/setup.sh does)")


def test_unchanged_model_vqa_runs_through_the_startup_hook(vqa_case):
    proc, answers = _run(vqa_case, ["llava.eval.model_vqa"], "hook.jsonl")
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = _check_answers(vqa_case, answers)
    # eos is forced first, so every answer is the empty string after skip_special_tokens
    assert [row["text"] for row in rows] == [""] * len(rows)
    import torch

    if not torch.cuda.is_available():  # the hook said it mapped .cuda() to the CPU, once
        assert proc.stderr.count("no CUDA device") == 1


def test_model_vqa_through_the_run_wrapper(vqa_case):
    proc, answers = _run(vqa_case, ["llava_hybrid.run", "llava.eval.model_vqa"], "run.jsonl",
                         env_extra={"LLAVA_HYBRID_DISABLE": "1"})
    assert proc.returncode == 0, proc.stderr[-3000:]
    _check_answers(vqa_case, answers)


def test_disabling_the_hook_breaks_the_plain_run(vqa_case):
    proc, answers = _run(vqa_case, ["llava.eval.model_vqa"], "disabled.jsonl",
                         env_extra={"LLAVA_HYBRID_DISABLE": "1"})
    assert proc.returncode != 0
    # LLaVA's own builder got the call (and cannot build the SigLIP tower): the plugin never loaded
    assert os.path.join("llava", "model", "builder.py") in proc.stderr
    assert "llava_hybrid" not in proc.stderr
    assert not answers.exists() or answers.read_text() == ""
