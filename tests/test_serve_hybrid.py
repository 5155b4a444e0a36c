"""LLaVA's serving paths on a hybrid student: the unchanged `python -m llava.serve.cli` with piped input,
and the generate call that `llava.serve.model_worker.generate_stream` makes (a thread, a
TextIteratorStreamer, LLaVA's KeywordsStoppingCriteria, images)."""
import os
import subprocess
import sys
import threading
from pathlib import Path

import easy_vqa
import pytest
import torch
from PIL import Image

import llava_hybrid

pytestmark = pytest.mark.slow

TEACHER = Path(__file__).resolve().parents[1] / "playground" / "easyvqa" / "teacher"


@pytest.fixture(scope="module")
def student_dir(tmp_path_factory):
    """A 25 % hybrid student of the shipped teacher (attention-initialised Mamba layers), saved in LLaVA layout."""
    llava_hybrid.activate()
    from llava_hybrid.host.builder import load_pretrained_model
    from llava_hybrid.host.hybrid_models import build_llava_student
    from llava_hybrid.hybrid.plan import plan_mamba_layers

    tokenizer, teacher, _proc, _ = load_pretrained_model(str(TEACHER), None, "teacher", device="cpu")
    student = build_llava_student(teacher, plan_mamba_layers(teacher.config.num_hidden_layers, 0.25), seed=0)
    out = tmp_path_factory.mktemp("serve") / "student-25"
    student.save_pretrained(str(out))
    tokenizer.save_pretrained(str(out))
    return out


def _image():
    _id, path = sorted(easy_vqa.get_test_image_paths().items())[0]
    return path


def test_llava_serve_cli_answers_piped_questions_on_a_hybrid_student(student_dir):
    env = {k: v for k, v in os.environ.items() if k != "LLAVA_HYBRID_DISABLE"}
    proc = subprocess.run(
        [sys.executable, "-m", "llava.serve.cli", "--model-path", str(student_dir), "--image-file", _image(),
         "--conv-mode", "phi", "--device", "cpu", "--temperature", "0", "--max-new-tokens", "16"],
        input="What shape is in the image?\nWhat color is the shape?\n", env=env, capture_output=True, text=True,
        timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "llava_hybrid_phi" in (student_dir / "config.json").read_text()
    turns = [line for line in proc.stdout.splitlines() if "ASSISTANT:" in line]
    assert len(turns) == 2, proc.stdout
    answers = [line.split("ASSISTANT:", 1)[1].strip() for line in turns]
    assert all(answers), proc.stdout  # the student said something to both questions (streamed by TextStreamer)
    assert proc.stdout.rstrip().endswith("exit...")


def test_model_worker_generate_call_streams_on_a_hybrid_student(student_dir):
    from llava.constants import IMAGE_TOKEN_INDEX
    from llava.conversation import conv_templates
    from llava.mm_utils import KeywordsStoppingCriteria, process_images, tokenizer_image_token
    from llava.model.builder import load_pretrained_model
    from transformers import TextIteratorStreamer

    tokenizer, model, processor, _ = load_pretrained_model(str(student_dir), None, "student-25", device="cpu")
    conv = conv_templates["phi"].copy()
    conv.append_message(conv.roles[0], "<image>\nWhat shape is in the image?")
    conv.append_message(conv.roles[1], None)
    image = Image.open(_image()).convert("RGB")
    images = process_images([image], processor, model.config).to(model.device, dtype=torch.float16)
    input_ids = tokenizer_image_token(conv.get_prompt(), tokenizer, IMAGE_TOKEN_INDEX, return_tensors="pt")[None]
    stop_str = conv.sep2
    streamer = TextIteratorStreamer(tokenizer, skip_prompt=True, skip_special_tokens=True, timeout=60)
    result = {}
    kwargs = dict(inputs=input_ids, do_sample=True, temperature=0.2, top_p=0.7, max_new_tokens=16,
                  streamer=streamer, stopping_criteria=[KeywordsStoppingCriteria([stop_str], tokenizer, input_ids)],
                  use_cache=True, images=images, image_sizes=[image.size])
    thread = threading.Thread(target=lambda: result.update(out=model.generate(**kwargs)))
    thread.start()
    streamed = "".join(streamer)
    thread.join(timeout=60)
    assert streamed.strip()
    assert streamed == tokenizer.decode(result["out"][0], skip_special_tokens=True)
