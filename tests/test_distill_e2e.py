"""The real entry point under the deepspeed launcher (2 CPU ranks, ZeRO-2, gloo) on a tiny teacher and
real easy-VQA samples: the distillation loss falls on a fixed batch, and the checkpoint loads through
LLaVA's load_pretrained_model and answers through llava.eval.model_vqa."""
import json
import os
import shutil
import signal
import socket
import subprocess
import sys

import pytest
import torch

from test_distill_args import base_argv, build_assets

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
VENV_BIN = os.path.dirname(sys.executable)
MAMBA_LAYERS = [0, 2]


def free_port() -> str:
    """A TCP port nobody listens on now (the machine is shared: a fixed port collides with other runs)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return str(s.getsockname()[1])


def run_launcher(cmd, timeout, **kwargs):
    """subprocess.run for the deepspeed launcher: on a timeout the whole process group goes (the launcher and
    its ranks), where subprocess.run would kill only the launcher and leave the ranks running."""
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True,
                            **kwargs)
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, err = proc.communicate()
        raise AssertionError(f"deepspeed launcher still running after {timeout} s:\n{out[-3000:]}\n{err[-3000:]}")
    return subprocess.CompletedProcess(cmd, proc.returncode, out, err)


def _fixed_batch(tokenizer, processor, data_path, image_folder, n=4):
    """The first n training records through LLaVA's data module (phi template), collated."""
    from llava import conversation as conversation_lib
    from llava.train import train as llava_train

    conversation_lib.default_conversation = conversation_lib.conv_templates["phi"]
    data_args = llava_train.DataArguments(data_path=data_path, image_folder=image_folder,
                                          image_aspect_ratio="pad")
    data_args.image_processor, data_args.is_multimodal, data_args.mm_use_im_start_end = processor, True, False
    module = llava_train.make_supervised_data_module(tokenizer=tokenizer, data_args=data_args)
    return module["data_collator"]([module["train_dataset"][i] for i in range(n)])


@pytest.mark.skipif(shutil.which("deepspeed", path=VENV_BIN) is None, reason="deepspeed launcher not installed")
def test_deepspeed_two_ranks_distil_then_eval(tmp_path):
    import llava_hybrid
    from llava_hybrid.distill.trainer import distill_losses
    from llava_hybrid.host.hybrid_models import build_llava_student

    assets = build_assets(str(tmp_path))
    out = str(tmp_path / "hybrid")
    argv = base_argv(assets, out, "--deepspeed", os.path.join(REPO, "scripts", "zero2.json"),
                     "--max_steps", "8", "--per_device_train_batch_size", "2", "--learning_rate", "3e-3",
                     "--logging_steps", "1", "--save_strategy", "steps", "--save_steps", "4",
                     "--image_aspect_ratio", "pad", "--model_max_length", "256",
                     "--dataloader_num_workers", "0", "--seed", "0")
    port = free_port()
    env = dict(os.environ, OMP_NUM_THREADS="1", MASTER_PORT=port, PYTHONPATH=os.path.join(REPO, "tests"))
    cmd = [os.path.join(VENV_BIN, "deepspeed"), "--num_gpus", "2", "--master_port", port,
           os.path.join(REPO, "scripts", "distill_hybrid.py"), *argv]
    run = run_launcher(cmd, timeout=600, cwd=REPO, env=env)
    assert run.returncode == 0, run.stdout[-4000:] + run.stderr[-4000:]
    assert os.path.isfile(os.path.join(out, "config.json"))
    assert os.path.isdir(os.path.join(out, "checkpoint-8")) and not any(
        d.startswith(".tmp-") for d in os.listdir(out))
    with open(os.path.join(out, "checkpoint-8", "trainer_state.json")) as f:
        logged = [h for h in json.load(f)["log_history"] if "loss_total" in h]
    assert len(logged) == 8 and all({"loss_layer", "loss_prob", "loss_ce"} <= set(h) for h in logged)
    for saved in (out, os.path.join(out, "checkpoint-8")):  # tokenizers readable on both transformers lanes
        with open(os.path.join(saved, "tokenizer.json")) as f:
            merges = json.load(f)["model"]["merges"]
        assert merges and all(isinstance(m, str) for m in merges), saved

    # 1. the checkpoint loads through LLaVA's (patched) loader; the loss falls on a fixed batch
    llava_hybrid.activate()
    from llava.model.builder import load_pretrained_model

    tok, teacher, processor, _ = load_pretrained_model(assets["teacher"], None, "teacher", device="cpu")
    _, trained, _, _ = load_pretrained_model(out, None, "hybrid", device="cpu")
    assert trained.config.mamba_layers == MAMBA_LAYERS
    initial = build_llava_student(teacher, MAMBA_LAYERS, init_from_attention=True, seed=0)
    batch = _fixed_batch(tok, processor, assets["data"], assets["images"])
    with torch.no_grad():
        before = distill_losses(initial, teacher, batch, MAMBA_LAYERS)
        after = distill_losses(trained.eval(), teacher, batch, MAMBA_LAYERS)
    print("fixed-batch loss before/after:", before.as_floats(), after.as_floats())
    assert after.total.item() < 0.9 * before.total.item()
    # frozen parts are unchanged: an attention layer and the lm_head equal the teacher's
    assert torch.equal(trained.lm_head.weight, teacher.lm_head.weight)
    assert torch.equal(trained.model.layers[1].self_attn.q_proj.weight, teacher.model.layers[1].self_attn.q_proj.weight)

    # 2. it answers through LLaVA's own eval script, unchanged, via the run wrapper. One question:
    #    model_vqa always generates up to 1024 tokens and the tiny random teacher never says eos.
    qfile = tmp_path / "q.jsonl"
    with open(assets["test"]) as f:
        qfile.write_text(f.readline())
    answers = tmp_path / "answers.jsonl"
    ev = subprocess.run([sys.executable, "-m", "llava_hybrid.run", "llava.eval.model_vqa", "--model-path", out,
                         "--question-file", str(qfile), "--image-folder", assets["images"],
                         "--answers-file", str(answers), "--conv-mode", "phi", "--temperature", "0"],
                        cwd=REPO, capture_output=True, text=True, timeout=900)  # 1024 tokens; 2 loaded cores
    assert ev.returncode == 0, ev.stdout[-3000:] + ev.stderr[-3000:]
    rows = [json.loads(line) for line in answers.read_text().splitlines()]
    assert len(rows) == 1 and isinstance(rows[0]["text"], str) and rows[0]["text"]
