"""Every checkpoint is written atomically, and a broken one is named and passed over.

- SFT (like distillation) writes checkpoint-N into `.tmp-checkpoint-N` and renames it when whole, and its
  final save into --output_dir moves config.json in last: a run killed at any moment of a save leaves no
  directory that reads as a complete checkpoint, and the same command run again finishes (issue 12, item 7).
- A truncated newest checkpoint is named and the run resumes from the previous complete one, saying so
  (item 8).
- save_llava_checkpoint into an existing directory replaces what was there, config.json last.
"""
import os
import signal
import subprocess
import sys
import time

import pytest

from llava_hybrid.checkpoint_files import CheckpointError, check_checkpoint_files, last_complete_checkpoint
from test_sft import _argv, data, task_ckpt  # noqa: F401  (module fixtures)

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _sft(task_ckpt, data, out, steps):
    argv = _argv(task_ckpt, data, out, "--max_steps", str(steps), "--save_strategy", "steps", "--save_steps", "1")
    return [sys.executable, os.path.join(REPO, "scripts", "train_sft.py"), *argv]


def _kill_when(cmd, out, seen, timeout=240):
    """Start `cmd`, SIGKILL it the moment an entry of `out` satisfies `seen(name)`; True if it was killed."""
    env = dict(os.environ, OMP_NUM_THREADS="1")
    proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + timeout
    while proc.poll() is None and time.time() < deadline:
        if os.path.isdir(out) and any(seen(n) for n in os.listdir(out)):
            proc.send_signal(signal.SIGKILL)
            proc.wait()
            return True
        time.sleep(0.002)
    proc.kill()
    proc.wait()
    return False


def _checkpoints(out):
    return sorted(n for n in os.listdir(out) if n.startswith("checkpoint-"))


@pytest.mark.slow
def test_sft_killed_during_its_saves_leaves_nothing_that_reads_complete(task_ckpt, data, tmp_path):  # noqa: F811
    from llava_hybrid.host.builder import load_pretrained_model

    out = str(tmp_path / "out")
    cmd = _sft(task_ckpt, data, out, steps=3)
    # 1. killed as soon as the first checkpoint's directory (or its temporary one) appears
    assert _kill_when(cmd, out, lambda n: n.startswith(("checkpoint-", ".tmp-checkpoint-")))
    for name in _checkpoints(out):
        check_checkpoint_files(os.path.join(out, name))  # whatever is named checkpoint-N is whole
    # 2. the same command, killed when its final save into --output_dir has begun
    assert _kill_when(cmd, out, lambda n: n == ".tmp-save"), "the final save never went through .tmp-save"
    assert _checkpoints(out) and not os.path.exists(os.path.join(out, "config.json"))
    with pytest.raises(CheckpointError, match="no config.json"):
        load_pretrained_model(out, None, "out", device="cpu")
    # 3. and again: it resumes from its last checkpoint and finishes
    done = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=300,
                          env=dict(os.environ, OMP_NUM_THREADS="1"))
    assert done.returncode == 0, done.stderr[-3000:]
    assert "sft: resuming from" in done.stdout or os.path.isdir(os.path.join(out, "checkpoint-3"))
    assert not any(n.startswith(".tmp-") for n in os.listdir(out))
    for name in _checkpoints(out):
        check_checkpoint_files(os.path.join(out, name))
    load_pretrained_model(out, None, "out", device="cpu")


def test_a_truncated_newest_checkpoint_is_named_and_the_previous_one_resumes(task_ckpt, data, tmp_path,  # noqa: F811
                                                                          capsys):
    from llava_hybrid.host.sft import main

    out = tmp_path / "out"
    main(_argv(task_ckpt, data, out, "--max_steps", "2", "--save_strategy", "steps", "--save_steps", "1"))
    weights = out / "checkpoint-2" / "model.safetensors"
    with open(weights, "r+b") as f:
        f.truncate(weights.stat().st_size - 100)
    capsys.readouterr()
    trainer = main(_argv(task_ckpt, data, out, "--max_steps", "3", "--save_strategy", "steps", "--save_steps", "1"))
    said = capsys.readouterr().out
    assert f"{weights}: truncated" in said
    assert f"resuming from {out / 'checkpoint-1'}" in said
    assert trainer.state.global_step == 3
    assert last_complete_checkpoint(str(out), log=lambda msg: None) == str(out / "checkpoint-3")
    check_checkpoint_files(str(out / "checkpoint-2"))  # rewritten whole by the resumed run


def test_saving_into_an_existing_directory_replaces_it_with_config_last(tmp_path):
    import llava_hybrid
    from llava.model.builder import load_pretrained_model

    from llava_hybrid.host.tiny import build_tiny_llava_phi

    llava_hybrid.activate()
    ckpt = build_tiny_llava_phi(str(tmp_path / "ckpt"), num_layers=1)
    tokenizer, model, _, _ = load_pretrained_model(ckpt, None, "x", device="cpu")
    out = tmp_path / "out"
    out.mkdir()
    (out / "model-00001-of-00002.safetensors").write_bytes(b"stale shard of an older save")
    (out / "model.safetensors.index.json").write_text("{}")
    (out / "notes.txt").write_text("kept")
    model.save_pretrained(str(out))
    tokenizer.save_pretrained(str(out))
    names = set(os.listdir(out))
    assert "notes.txt" in names and "model.safetensors.index.json" not in names
    assert not any(n.startswith(".tmp") for n in names)
    check_checkpoint_files(str(out))
    load_pretrained_model(str(out), None, "x", device="cpu")
