"""The careless user's probes behind docs/reliability.md, run through the real command lines.

Each probe is a bad flag, bad data or an unlucky event (a kill, a truncated file, a NaN) given to
`scripts/distill_hybrid.py`, `scripts/train_sft.py` or `python -m llava_hybrid.run llava.eval.model_vqa`
exactly as a user would type it, on the tiny models the project builds (host/tiny.py) and real easy-VQA
samples. Recorded per probe: the exit status, the wall time until the command exited, and what the user
sees (the exception line, or the line that says what happened). A probe that must fail and exits 0, or one
that must finish and does not, is marked REGRESSION and makes this script exit 1.

    python playground/reliability/probes.py                # all probes, rewrites docs/reliability.md
    python playground/reliability/probes.py --only nan,ok  # some of them (the doc is not rewritten)
    python playground/reliability/probes.py --doc-only     # the doc again from docs/reliability/probes.json
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from typing import Callable, List, Optional

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
DISTILL = os.path.join(REPO, "scripts", "distill_hybrid.py")
SFT = os.path.join(REPO, "scripts", "train_sft.py")
DOC = os.path.join(REPO, "docs", "reliability.md")
RESULTS = os.path.join(REPO, "docs", "reliability", "probes.json")


@dataclass
class Probe:
    """One probe: `argv(work)` is the command (after `setup(work)`); `fails` says whether it must exit non-zero;
    `expect` is a regex its output must contain (the named error, or the line saying what was done)."""

    id: str
    item: str
    what: str
    before: str
    argv: Callable[[dict], List[str]]
    expect: str
    fails: bool = True
    setup: Optional[Callable[[dict], None]] = None
    env: Optional[Callable[[dict], dict]] = None
    result: dict = field(default_factory=dict)


# ------------------------------------------------------------------------------------------------ assets


def build_assets(root: str) -> dict:
    """Tiny teachers (task tokenizer: 4 and 6 layers; GPT-2 BPE), a plain Llama, a teacher without weights,
    and a small real easy-VQA split with a broken copy of its images."""
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    from llava_hybrid.easyvqa.data import prepare
    from llava_hybrid.easyvqa.tokenizer import build_easyvqa_tokenizer
    from llava_hybrid.host.tiny import build_tiny_llava_phi

    a = {"root": root}
    tok = os.path.join(root, "tok")
    build_easyvqa_tokenizer(tok)
    a["teacher"] = build_tiny_llava_phi(os.path.join(root, "teacher"), hidden_size=64, num_layers=4, num_heads=2,
                                        vocab=tok, seed=0)
    a["teacher6"] = build_tiny_llava_phi(os.path.join(root, "teacher6"), hidden_size=64, num_layers=6,
                                         num_heads=2, vocab=tok, seed=1)
    a["gpt2"] = build_tiny_llava_phi(os.path.join(root, "gpt2"), hidden_size=32, num_layers=2, num_heads=2,
                                     vocab="gpt2")
    a["llama"] = os.path.join(root, "llama")
    LlamaForCausalLM(LlamaConfig(vocab_size=512, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                 num_attention_heads=2)).save_pretrained(a["llama"])
    AutoTokenizer.from_pretrained(tok).save_pretrained(a["llama"])
    a["no_weights"] = os.path.join(root, "no_weights")
    shutil.copytree(a["teacher"], a["no_weights"])
    os.remove(os.path.join(a["no_weights"], "model.safetensors"))
    data = prepare(os.path.join(root, "data"), turns=2, max_train_images=8, max_test_images=2)
    a.update(data=data["train"], images=data["image_folder"], test=data["test"])
    with open(a["data"]) as f:
        records = json.load(f)
    a["bad_images"] = os.path.join(root, "bad_images")
    shutil.copytree(a["images"], a["bad_images"])
    victim = os.path.join(a["bad_images"], records[3]["image"])
    with open(victim, "rb") as f:
        head = f.read()
    with open(victim, "wb") as f:
        f.write(head[:len(head) // 3])
    a["truncated_image"] = victim

    def variant(name, edit):
        recs = json.loads(json.dumps(records))
        edit(recs)
        path = os.path.join(root, f"{name}.json")
        with open(path, "w") as f:
            json.dump(recs, f)
        a[name] = path

    variant("non_string_turn", lambda r: r[5]["conversations"][1].__setitem__("value", 3))
    variant("not_an_image", lambda r: r[2].__setitem__("image", os.path.relpath(
        os.path.join(a["teacher"], "config.json"), a["images"])))
    variant("missing_image", lambda r: r[1].__setitem__("image", "train/does_not_exist.png"))
    return a


def distill(a: dict, out: str, *extra: str, model: Optional[str] = None, data: Optional[str] = None,
            images: Optional[str] = None) -> List[str]:
    return [sys.executable, DISTILL, "--model_name_or_path", model or a["teacher"], "--data_path", data or a["data"],
            "--image_folder", images or a["images"], "--output_dir", out, "--mm_hybrid_ratio", "0.5",
            "--use_cpu", "True", "--report_to", "none", "--per_device_train_batch_size", "2",
            "--model_max_length", "256", "--dataloader_num_workers", "0", "--logging_steps", "1",
            "--max_steps", "2", "--save_strategy", "no", *extra]


def sft(a: dict, out: str, *extra: str) -> List[str]:
    return [sys.executable, SFT, "--model_name_or_path", a["teacher"], "--version", "phi", "--data_path", a["data"],
            "--image_folder", a["images"], "--output_dir", out, "--use_cpu", "True", "--report_to", "none",
            "--per_device_train_batch_size", "2", "--model_max_length", "256", "--dataloader_num_workers", "0",
            "--max_steps", "3", "--save_strategy", "no", *extra]


def run_quiet(argv: List[str]) -> None:
    done = subprocess.run(argv, cwd=REPO, env=_env(), capture_output=True, text=True)
    if done.returncode:
        raise RuntimeError(f"probe setup failed: {' '.join(argv)}\n{done.stderr[-3000:]}")


def _env() -> dict:
    return dict(os.environ, OMP_NUM_THREADS="1", HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1",
                TOKENIZERS_PARALLELISM="false")


def out_of(a: dict, name: str) -> str:
    return os.path.join(a["root"], "runs", name)


def stale_build_lock(a: dict) -> dict:
    """A TORCH_EXTENSIONS_DIR holding the lock of a killed build of DeepSpeed's comm op (30 min old), and the
    environment the deepspeed launcher gives its one rank."""
    root = os.path.join(a["root"], "torch_extensions")
    lock = os.path.join(root, "deepspeed_shm_comm", "lock")
    os.makedirs(os.path.dirname(lock), exist_ok=True)
    open(lock, "w").close()
    os.utime(lock, (time.time() - 1800, time.time() - 1800))
    return {"TORCH_EXTENSIONS_DIR": root, "LOCAL_RANK": "0", "RANK": "0", "WORLD_SIZE": "1", "LOCAL_WORLD_SIZE": "1",
            "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": "29733"}


def readonly_dir(a: dict) -> str:
    """An existing directory this user cannot write: mode 0o555, or for root (who writes through modes) sysfs."""
    path = os.path.join(a["root"], "readonly")
    os.makedirs(path, exist_ok=True)
    os.chmod(path, 0o555)
    return path if not os.access(path, os.W_OK) else "/sys/kernel"


def killed_mid_save(a: dict) -> None:
    """SFT with a checkpoint every step, SIGKILLed the moment a save's temporary directory appears."""
    out = out_of(a, "sft_killed")
    proc = subprocess.Popen(sft(a, out, "--max_steps", "6", "--save_strategy", "steps", "--save_steps", "1"),
                            cwd=REPO, env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 600
    while proc.poll() is None and time.time() < deadline:
        if os.path.isdir(out) and any(n.startswith(".tmp-checkpoint-") for n in os.listdir(out)):
            proc.send_signal(signal.SIGKILL)
            break
        time.sleep(0.002)
    proc.wait()
    if proc.returncode != -signal.SIGKILL:
        raise RuntimeError("the SFT run was not killed during a save")


def truncated_newest_checkpoint(a: dict) -> None:
    out = out_of(a, "truncated_checkpoint")
    run_quiet(distill(a, out, "--save_strategy", "steps", "--save_steps", "1"))
    weights = os.path.join(out, "checkpoint-2", "model.safetensors")
    with open(weights, "r+b") as f:
        f.truncate(os.path.getsize(weights) // 2)


def truncated_final_model(a: dict) -> None:
    out = out_of(a, "truncated_model")
    run_quiet(distill(a, out))
    weights = os.path.join(out, "model.safetensors")
    with open(weights, "r+b") as f:
        f.truncate(os.path.getsize(weights) - 1000)
    with open(a["test"]) as f, open(os.path.join(a["root"], "one_question.jsonl"), "w") as g:
        g.write(f.readline())


# ------------------------------------------------------------------------------------------------ probes

NAN = r"NonFiniteError: step \d+: non-finite loss"
PROBES = [
    Probe("help", "-", "`scripts/distill_hybrid.py --help` (control: the imports alone)", "the same",
          lambda a: [sys.executable, DISTILL, "--help"], r"usage:", fails=False),
    Probe("ok", "12", "a good distillation run (control)", "exit 0; the layer plan was an INFO line",
          lambda a: distill(a, out_of(a, "ok")), r"^layer plan: M\*M\* ", fails=False),
    Probe("nan", "1", "distillation, `--learning_rate 1e10` (loss NaN from step 2), checkpoint every step",
          "exit 0 after every step; `loss` logged as 0 (the Trainer's nan filter), 49,548 NaN weights saved",
          lambda a: distill(a, out_of(a, "nan"), "--learning_rate", "1e10", "--max_steps", "4",
                            "--save_strategy", "steps", "--save_steps", "1"), NAN + r".*checkpoint-1\."),
    Probe("nan_sft", "1", "SFT, `--learning_rate 1e10`", "exit 0, NaN weights saved",
          lambda a: sft(a, out_of(a, "nan_sft"), "--learning_rate", "1e10"), NAN),
    Probe("version_v0", "2", "distillation, `--version v0` (phi-template teacher)",
          "exit 0, trained on the wrong template", lambda a: distill(a, out_of(a, "v0"), "--version", "v0"),
          r"ValueError: --conv-mode/--version 'v0'"),
    Probe("version_mpt", "2", "distillation, `--version mpt`", "exit 0, trained on the wrong template",
          lambda a: distill(a, out_of(a, "mpt"), "--version", "mpt"), r"ValueError: --conv-mode/--version 'mpt'"),
    Probe("version_v1", "2", "distillation, `--version v1`",
          "AttributeError ('TokenizersBackend has no attribute legacy') at the first batch, inside LLaVA",
          lambda a: distill(a, out_of(a, "v1"), "--version", "v1"), r"ValueError: --conv-mode/--version 'v1'"),
    Probe("version_unknown", "2", "distillation, `--version nosuch`", "ValueError only after both models loaded",
          lambda a: distill(a, out_of(a, "nosuch"), "--version", "nosuch"),
          r"ValueError: --conv-mode/--version 'nosuch' is not a known"),
    Probe("version_v0_gpt2", "2", "distillation of a GPT-2-BPE (Phi-2 style) teacher, `--version v0` ('###' is "
          "one token there, so the SFT check alone passes it)", "exit 0, trained on the wrong template",
          lambda a: distill(a, out_of(a, "v0_gpt2"), "--version", "v0", model=a["gpt2"]),
          r"ValueError: --conv-mode/--version 'v0' ends answers with '###'"),
    Probe("resume_plan", "3", "resume a Mamba [0, 2] run's checkpoint with `--mm_hybrid_layers 0,1`",
          "exit 0; layer 2's weights dropped with an 'unexpected keys' warning among the usual ones",
          lambda a: distill(a, out_of(a, "resume"), "--mm_hybrid_layers", "0,1", "--max_steps", "2"),
          r"ValueError: --output_dir holds .*checkpoint-1, written by a different model \(mamba_layers: checkpoint "
          r"\[0, 2\] \(M\*M\*\), this run \[0, 1\] \(MM\*\*\)\)",
          setup=lambda a: run_quiet(distill(a, out_of(a, "resume"), "--mm_hybrid_layers", "0,2", "--max_steps", "1",
                                            "--save_strategy", "steps", "--save_steps", "1"))),
    Probe("resume_trainable", "3", "resume the same checkpoint with `--trainable mamba` (was mamba,mm_projector)",
          "exit 0 or an optimizer-state error from inside torch at resume",
          lambda a: distill(a, out_of(a, "resume"), "--mm_hybrid_layers", "0,2", "--trainable", "mamba"),
          r"ValueError: --output_dir holds .* \(trainable: checkpoint \['mamba', 'mm_projector'\], this run "
          r"\['mamba'\]\)"),
    Probe("readonly_output_dir", "4", "an existing read-only `--output_dir`, `--save_strategy no` (the easy-VQA "
          "pipeline's setting)", "trained every step, then PermissionError in save_state: nothing kept",
          lambda a: distill(a, readonly_dir(a)), r"ValueError: --output_dir '.*' cannot be written"),
    Probe("output_dir_through_a_file", "4", "`--output_dir` below a regular file", "NotADirectoryError at the save",
          lambda a: distill(a, os.path.join(a["teacher"], "config.json", "out")),
          r"ValueError: --output_dir '.*config.json/out' cannot be written"),
    Probe("max_length_40", "5", "`--model_max_length 40` (text fits, text + 16 image tokens does not)",
          "AssertionError (torch.Size([2, 40, 448]), torch.Size([2, 55, 448])) at the first step, again on every "
          "resume", lambda a: distill(a, out_of(a, "ml40"), "--model_max_length", "40"),
          r"ValueError: --model_max_length 40: \d+ of \d+ samples are longer"),
    Probe("max_length_24", "5", "`--model_max_length 24` (shorter than the prompt before the image)",
          "exit 0: every sample's image silently cut off with the text",
          lambda a: distill(a, out_of(a, "ml24"), "--model_max_length", "24"),
          r"ValueError: --model_max_length 24: \d+ of \d+ samples are longer"),
    Probe("teacher_plain_llama", "6", "`--teacher_model_name_or_path` a plain Llama directory",
          "AttributeError: 'NoneType' object has no attribute 'preprocess' at step 1",
          lambda a: distill(a, out_of(a, "x"), "--teacher_model_name_or_path", a["llama"]),
          r"ValueError: --teacher_model_name_or_path .* is not a LLaVA vision-language model \(model_type 'llama'"),
    Probe("student_plain_llama", "6", "`--model_name_or_path` a plain Llama directory",
          "AttributeError: 'LlamaForCausalLM' object has no attribute 'get_model' after both loads",
          lambda a: distill(a, out_of(a, "x"), "--teacher_model_name_or_path", a["teacher"], model=a["llama"]),
          r"ValueError: --model_name_or_path .* is not a LLaVA vision-language model"),
    Probe("student_deeper", "6", "a 6-layer student for a 4-layer teacher", "IndexError: index 4 is out of range "
          "at step 1", lambda a: distill(a, out_of(a, "x"), "--teacher_model_name_or_path", a["teacher"],
                                         model=a["teacher6"]),
          r"ValueError: --model_name_or_path has 6 decoder layers but --teacher_model_name_or_path 4"),
    Probe("teacher_without_weights", "6", "a teacher directory with config.json but no weights",
          "CheckpointError naming '--model-path', after the student loaded",
          lambda a: distill(a, out_of(a, "x"), "--teacher_model_name_or_path", a["no_weights"]),
          r"CheckpointError: --teacher_model_name_or_path .*no_weights': no weights"),
    Probe("sft_killed_mid_save", "7", "SFT SIGKILLed while writing a checkpoint, then the same command again",
          "a half-written checkpoint-N that failed every rerun until deleted by hand",
          lambda a: sft(a, out_of(a, "sft_killed"), "--max_steps", "6", "--save_strategy", "steps",
                        "--save_steps", "1"), r"'train_runtime'", fails=False,
          setup=killed_mid_save),
    Probe("truncated_newest_checkpoint", "8", "distillation rerun after its newest checkpoint-2's weights were cut "
          "in half", "a bare SafetensorError at resume",
          lambda a: distill(a, out_of(a, "truncated_checkpoint"), "--max_steps", "3", "--save_strategy", "steps",
                            "--save_steps", "1"),
          r"checkpoint .*checkpoint-2 is incomplete and is skipped \(.*model.safetensors: truncated", fails=False,
          setup=truncated_newest_checkpoint),
    Probe("truncated_model_eval", "10a", "`llava.eval.model_vqa` on a checkpoint whose model.safetensors lost "
          "1,000 bytes", "a bare SafetensorError from inside from_pretrained",
          lambda a: [sys.executable, "-m", "llava_hybrid.run", "llava.eval.model_vqa", "--model-path",
                     out_of(a, "truncated_model"), "--question-file", os.path.join(a["root"], "one_question.jsonl"),
                     "--image-folder", a["images"], "--answers-file", os.path.join(a["root"], "answers.jsonl"),
                     "--conv-mode", "phi", "--temperature", "0"],
          r"CheckpointError: .*model.safetensors: truncated", setup=truncated_final_model),
    Probe("truncated_image", "9", "one training image cut to a third of its bytes",
          "OSError: image file is truncated, at the batch that reached it, no file named",
          lambda a: distill(a, out_of(a, "x"), images=a["bad_images"]),
          r"ValueError: --image_folder .*1 of \d+ images .*do not read whole: .*\(sample 3 "),
    Probe("non_string_turn", "9", "a turn whose value is the number 3", "TypeError inside the tokenizer at its batch",
          lambda a: distill(a, out_of(a, "x"), data=a["non_string_turn"]),
          r"ValueError: --data_path .*sample 5 \(id .*\) turn 1 has a non-string 'value'"),
    Probe("not_an_image", "9", "an image entry pointing at a JSON file", "PIL UnidentifiedImageError at its batch",
          lambda a: distill(a, out_of(a, "x"), data=a["not_an_image"]),
          r"ValueError: --image_folder .*cannot identify"),
    Probe("missing_image", "9", "an image entry naming a file that does not exist", "(already held) ValueError "
          "before loading", lambda a: distill(a, out_of(a, "x"), data=a["missing_image"]),
          r"ValueError: --image_folder .*are missing, e.g. \['train/does_not_exist.png'\]"),
    Probe("stale_build_lock", "14", "distillation with `--deepspeed scripts/zero2.json` on CPU after a killed build "
          "of DeepSpeed's comm op left its lock", "waits forever on the lock (CI hung 600 s)",
          lambda a: distill(a, out_of(a, "x"), "--deepspeed", os.path.join(REPO, "scripts", "zero2.json")),
          r"StaleBuildLockError: .*deepspeed_shm_comm/lock is 30 min old", env=stale_build_lock),
]


def seen_line(output: str, probe: Probe) -> str:
    """What the user sees: the line the probe expects (the exception line, or the line saying what was done)."""
    lines = [line.strip() for line in output.splitlines() if line.strip()]
    hits = [line for line in lines if re.search(probe.expect, line)]
    if hits:
        return hits[-1]
    errors = [line for line in lines if re.match(r"^[\w.]+(Error|Exception)\b", line)]
    return (errors or lines or [""])[-1]


def run_probe(probe: Probe, assets: dict) -> dict:
    if probe.setup:
        probe.setup(assets)
    argv = probe.argv(assets)
    env = dict(_env(), **(probe.env(assets) if probe.env else {}))
    t0 = time.time()
    done = subprocess.run(argv, cwd=REPO, env=env, capture_output=True, text=True, timeout=1200)
    seconds = time.time() - t0
    output = done.stdout + "\n" + done.stderr
    matched = re.search(probe.expect, output, flags=re.MULTILINE) is not None
    ok = matched and ((done.returncode != 0) if probe.fails else (done.returncode == 0))
    return {"rc": done.returncode, "seconds": round(seconds, 1), "seen": seen_line(output, probe)[:400],
            "as_expected": ok, "command": " ".join(os.path.relpath(x, REPO) if x.startswith(REPO) else x
                                                   for x in argv[1:])}


# ---------------------------------------------------------------------------------------------- the doc

# every item of issue 12 (and the lead's stale-lock item, 14): what it is, and the tests that failed before its fix
ITEMS = {
    "1": ("a non-finite loss term or weight", "tests/test_reliability.py `test_a_nan_loss_stops_*`"),
    "2": ("`--version` against the teacher's template", "tests/test_reliability.py `test_distillation_refuses_a_"
          "template_*`, `test_a_template_that_does_not_end_answers_in_the_teachers_eos_is_refused`"),
    "3": ("resuming with another layer plan or trained parts", "tests/test_reliability.py `test_resuming_with_a_"
          "changed_layer_plan_or_trained_parts_is_refused_before_loading`"),
    "4": ("`--output_dir` unwritable or without room", "tests/test_reliability.py `test_an_unwritable_output_dir_*`,"
          " `test_an_output_dir_without_room_for_one_checkpoint_is_refused`"),
    "5": ("samples longer than `--model_max_length` once spliced", "tests/test_reliability.py `test_samples_longer_"
          "than_model_max_length_*`, `test_the_measured_sample_lengths_are_the_spliced_lengths_the_model_sees`"),
    "6": ("teacher / student that cannot be distilled", "tests/test_reliability.py `test_teachers_and_students_that_"
          "cannot_be_distilled_are_named_in_validation`"),
    "7": ("SFT killed during a save", "tests/test_checkpoint_saving.py `test_sft_killed_during_its_saves_leaves_"
          "nothing_that_reads_complete`, `test_saving_into_an_existing_directory_replaces_it_with_config_last` "
          "(commit 5ed0dfb)"),
    "8": ("a truncated newest checkpoint", "tests/test_checkpoint_saving.py `test_a_truncated_newest_checkpoint_is_"
          "named_and_the_previous_one_resumes` (commit 5ed0dfb)"),
    "9": ("truncated / undecodable images, non-string turns", "tests/test_reliability.py `test_a_truncated_image_*`,"
          " `test_a_non_string_turn_or_image_is_named_with_its_sample`"),
    "10a": ("eval: a truncated `model.safetensors`", "tests/test_builder.py `test_a_truncated_weight_file_is_named_"
            "before_loading` (commit 5ed0dfb)"),
    "10b": ("`ssd_chunked`, `causal_conv1d` and `Mamba2Mixer` on a zero-length sequence", "tests/test_ssd.py "
            "`test_a_zero_length_sequence_gives_an_empty_output_and_keeps_the_state`, tests/test_mixer.py "
            "`test_a_zero_length_sequence_mixes_to_nothing_and_keeps_the_state`"),
    "10c": ("the bf16 / fp16 decode conv step against the prefill conv", "tests/test_mixer.py `test_the_half_"
            "precision_decode_conv_step_rounds_once_like_the_prefill`"),
    "11": ("`python -m llava_hybrid.easyvqa` run twice without `--full`", "tests/test_easyvqa_pipeline.py "
           "`test_ablations_carried_twice_keep_the_full_runs_provenance`"),
    "12": ("the layer plan at the start of every run", "tests/test_distill_resume.py, tests/test_sft.py (the "
           "`layer plan:` line; commit 7bacf36)"),
    "13": ("the warmup-stable-decay schedule's last step", "tests/test_schedule.py `test_every_step_of_a_wsd_run_"
           "trains` (commit 258129e)"),
    "14": ("DeepSpeed on CPU after a killed JIT build of its comm op", "tests/test_reliability.py `test_a_stale_"
           "deepspeed_build_lock_fails_the_entry_at_once_naming_it` (both entries), `test_the_build_lock_is_where_"
           "torch_builds_deepspeeds_comm_op`, `test_only_a_deepspeed_run_on_cpu_checks_the_lock_*`"),
}

# the items a command line cannot reach: (before, now), checked by their tests
LIBRARY_ONLY = {
    "10b": ("RuntimeError (stack expects a non-empty TensorList; kernel larger than input)",
            "an empty output; the state is left as it was"),
    "10c": ("1 ulp off the prefill on 28 % (bf16) / 30 % (fp16) of the elements: dot product and bias rounded "
            "separately", "bit-equal to the prefill: summed in fp32, rounded once"),
    "11": ("the carried ablation sections labelled with the first plain run's date and runtime",
           "they keep the `--full` run's provenance through any number of plain runs"),
    "13": ("learning rate 0 on the last step: that step did nothing",
           "every step trains; the decay reaches its floor only after the last step"),
}


def write_doc(probes: List[Probe], machine: str, date: Optional[str] = None) -> None:
    date = date or time.strftime("%Y-%m-%d")
    os.makedirs(os.path.dirname(RESULTS), exist_ok=True)
    with open(RESULTS, "w") as f:
        json.dump({"machine": machine, "date": date,
                   "probes": [{"id": p.id, "item": p.item, "what": p.what, "before": p.before, **p.result}
                              for p in probes]}, f, indent=1)
    esc = lambda s: s.replace("|", "\\|")  # noqa: E731
    rows = []
    for item, (title, tests) in ITEMS.items():
        mine = [p for p in probes if p.item == item]
        if mine:
            before = "<br>".join(f"{esc(p.what)}: {esc(p.before)}" for p in mine)
            now = "<br>".join(f"exit {p.result['rc']}{'' if p.result['as_expected'] else ' **REGRESSION**'}: "
                              f"`{esc(p.result['seen'])}`" for p in mine)
            seconds = "<br>".join(f"{p.result['seconds']:.1f}" for p in mine)
        else:
            before, now = (esc(x) for x in LIBRARY_ONLY[item])
            seconds = "(library; see the test)"
        rows.append(f"| {item} | {esc(title)} | {before} | {now} | {seconds} | {tests} |")
    controls = [p for p in probes if p.item == "-"]
    text = f"""# Reliability: what a careless or unlucky user sees

One row per item of issue 12 (and 14: a stale DeepSpeed build lock, found in CI). The rows with probes are
regenerated by `python playground/reliability/probes.py`: {len(probes)} probes through the real command lines
`scripts/distill_hybrid.py`, `scripts/train_sft.py` and `python -m llava_hybrid.run llava.eval.model_vqa`, on the
tiny models of `llava_hybrid/host/tiny.py` and real easy-VQA samples (raw results:
[reliability/probes.json](reliability/probes.json)). Machine: {machine}; {date}.

The rule: a run never exits 0 after doing the wrong thing, and every failure comes early and names the flag,
the file or the sample. Every probe that must fail exits non-zero with a named error; the ones that must finish
(the reruns of items 7 and 8, the good run of item 12) exit 0 and say what they did. A probe that breaks the rule
is marked **REGRESSION**; the script then exits 1. Every item has a test that failed before its fix.

"Seconds" is the wall time from the command's start to its exit on this shared 2-core machine; most of it is
Python importing torch, transformers, DeepSpeed and LLaVA (`--help` alone: {', '.join(f"{p.result['seconds']:.1f}"
for p in controls) or '?'} s), so a check that fails "before any model loads" shows up as the import time plus under
a second; other jobs (test suites) ran during the probes, so the same kind of failure took 17-50 s at different
moments. Sample lengths (item 5) need the loaded teacher (an image's token count is measured on its tower): they
fail after the load, before the first step.

| item | what | before (probe: what the user saw) | now: exit, what the user sees | seconds | test (fails before) |
|---|---|---|---|---|---|
""" + "\n".join(rows) + """

## What the guards are

- Non-finite losses (`llava_hybrid/guards.py`, `FiniteGuardMixin`, SFT and distillation): every loss term
  (distillation: layer, prob and ce separately) is checked at every step before the backward pass, with one
  all-reduce so every rank stops together; the trained weights are checked before every checkpoint-N and before
  the final save. The Trainer's own `loss` column cannot be trusted for this: with `--logging_nan_inf_filter`
  (on by default) it replaces a non-finite value by the running mean, which is how a NaN run used to log 0.
- Validation before any model loads (`distill/arguments.py::validate`, `host/data.py::validate_data`): flags,
  both checkpoints (a LLaVA VLM of a supported type, with a tower and whole weight files; the teacher's depth and
  width when L_layer is on), the data (every sample, turn and placeholder; every image read whole, in parallel,
  with a progress bar from 200 images), the template against the teacher's tokenizer, and `--output_dir`
  (written to for real; free space for one checkpoint, estimated from the weight headers and what trains).
- Resume (`guards.check_resume`): each distillation checkpoint-N carries `run_plan.json` (layer plan, depth,
  width, vocabulary, trained parts, Mamba biases); a rerun compares it, and the checkpoint's config.json, with
  its own plan before loading anything.
- Sample lengths (`host/data.py::check_sample_lengths`, SFT and distillation, after the teacher loads and before
  the first step): each sample's length once its image tokens are spliced in, measured with LLaVA's own rendering
  and tokenization (tested equal to the lengths the model sees); both models truncate to `--model_max_length`.
- DeepSpeed on CPU (`guards.preflight_deepspeed_cpu`, both entries, before the flags are parsed: on transformers
  4.37 parsing them under the launcher already starts DeepSpeed's backend, which JIT-builds its `deepspeed_shm_comm`
  op through torch.utils.cpp_extension): a lock file of that build older than 20 minutes (builds take 1-4) is a
  killed build's, on which torch would wait forever; the run fails naming it
  (`$TORCH_EXTENSIONS_DIR/deepspeed_shm_comm/lock`, or `<torch's default build root>/py311_cpu/...` without it).
- Atomic checkpoints, truncated checkpoints and weight files (items 7, 8 and 10a) are the save path's
  (`host/saving.py`, `checkpoint_files.py`); items 12 and 13 are the plan's and the schedule's.
"""
    with open(DOC, "w") as f:
        f.write(text)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--work", default="/tmp/llava_hybrid_probes", help="scratch directory (rebuilt)")
    p.add_argument("--only", default="", help="comma list of probe ids (the doc is then not rewritten)")
    p.add_argument("--doc-only", action="store_true", help=f"rewrite the doc from the results of the last full run "
                   f"({os.path.relpath(RESULTS, REPO)}) without running anything")
    args = p.parse_args(argv)
    if args.doc_only:
        with open(RESULTS) as f:
            recorded = json.load(f)
        results = {r["id"]: r for r in recorded["probes"]}
        missing = [pr.id for pr in PROBES if pr.id not in results]
        if missing:
            p.error(f"--doc-only: {os.path.relpath(RESULTS, REPO)} has no result for {missing}: run all probes")
        for probe in PROBES:
            probe.result = {k: results[probe.id][k] for k in ("rc", "seconds", "seen", "as_expected", "command")}
        write_doc(PROBES, recorded["machine"], recorded["date"])
        return 0 if all(pr.result["as_expected"] for pr in PROBES) else 1
    chosen = [x for x in args.only.split(",") if x]
    unknown = sorted(set(chosen) - {pr.id for pr in PROBES})
    if unknown:
        p.error(f"--only: unknown probe ids {unknown}; choose from {[pr.id for pr in PROBES]}")
    shutil.rmtree(args.work, ignore_errors=True)
    assets = build_assets(args.work)
    probes = [pr for pr in PROBES if not chosen or pr.id in chosen]
    for probe in probes:
        probe.result = run_probe(probe, assets)
        r = probe.result
        print(f"{probe.id:<28} exit {r['rc']:>3}  {r['seconds']:6.1f} s  {'ok' if r['as_expected'] else 'REGRESSION'}"
              f"  {r['seen'][:150]}", flush=True)
    if os.path.isdir(os.path.join(args.work, "readonly")):
        os.chmod(os.path.join(args.work, "readonly"), 0o755)
    if not chosen:
        write_doc(probes, f"{platform.machine()}, {os.cpu_count()} cores, shared with other jobs")
    return 0 if all(pr.result["as_expected"] for pr in probes) else 1


if __name__ == "__main__":
    sys.exit(main())
