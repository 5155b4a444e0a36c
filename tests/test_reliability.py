"""The careless user's probes of docs/reliability.md, each a test: every bad input fails early and named
(most before any weights load), and no run exits 0 while doing the wrong thing."""
import json
import os

import pytest

from llava_hybrid.distill.arguments import parse_args, validate
from test_distill_args import base_argv, build_assets


@pytest.fixture(scope="module")
def assets(tmp_path_factory):
    return build_assets(str(tmp_path_factory.mktemp("reliability")))


def _records(assets):
    with open(assets["data"]) as f:
        return json.load(f)


def _with_data(assets, tmp_path, records, *extra, image_folder=None):
    path = tmp_path / "train.json"
    path.write_text(json.dumps(records))
    argv = base_argv(assets, str(tmp_path / "out"), *extra)
    argv[argv.index("--data_path") + 1] = str(path)
    if image_folder:
        argv[argv.index("--image_folder") + 1] = image_folder
    return argv


def _validation_fails(argv, match):
    with pytest.raises(ValueError, match=match):
        validate(*parse_args(argv))


# ------------------------------------------------------------------------------------------- data (item 9)


def test_a_truncated_image_is_named_with_its_sample_before_training(assets, tmp_path):
    import shutil

    records = _records(assets)
    folder = str(tmp_path / "images")
    shutil.copytree(assets["images"], folder)
    victim = os.path.join(folder, records[3]["image"])
    with open(victim, "rb") as f:
        data = f.read()
    with open(victim, "wb") as f:
        f.write(data[:len(data) // 3])
    _validation_fails(_with_data(assets, tmp_path, records, image_folder=folder),
                      rf"--image_folder .*1 of \d+ images .*do not read whole: {victim} \(sample 3 "
                      rf"\(id '{records[3]['id']}'\)\)")
    with open(victim, "wb") as f:
        f.write(b"not an image at all")
    _validation_fails(_with_data(assets, tmp_path, records, image_folder=folder), "cannot identify image file")


def test_a_non_string_turn_or_image_is_named_with_its_sample(assets, tmp_path):
    records = _records(assets)
    records[5]["conversations"][1]["value"] = 3
    _validation_fails(_with_data(assets, tmp_path, records),
                      rf"--data_path .*1 of \d+ samples .*sample 5 \(id '{records[5]['id']}'\) turn 1 has a "
                      r"non-string 'value' \(int: 3\)")
    records = _records(assets)
    records[2]["image"] = ["a.png", "b.png"]
    records[4]["conversations"][0]["value"] = records[4]["conversations"][0]["value"].replace("<image>", "")
    _validation_fails(_with_data(assets, tmp_path, records),
                      r"2 of \d+ samples .*sample 2 .*non-string 'image' \(list\).*sample 4 .*0 <image> placeholders")


# ------------------------------------------------------------------------ non-finite losses (item 1)


def _finite(path):
    import torch
    from safetensors.torch import load_file

    return all(bool(torch.isfinite(t.float()).all()) for t in load_file(path).values())


def test_a_nan_loss_stops_distillation_at_its_step_naming_the_last_good_checkpoint(assets, tmp_path):
    """--learning_rate 1e10: step 1 is finite, step 2's loss is NaN. Before: exit 0, `loss` logged as 0 (the
    Trainer's nan filter), weights full of NaN saved."""
    from llava_hybrid.distill.trainer import main
    from llava_hybrid.guards import NonFiniteError

    out = tmp_path / "out"
    argv = base_argv(assets, str(out), "--max_steps", "4", "--save_strategy", "steps", "--save_steps", "1",
                     "--learning_rate", "1e10", "--per_device_train_batch_size", "2", "--model_max_length", "256",
                     "--dataloader_num_workers", "0", "--logging_steps", "1")
    with pytest.raises(NonFiniteError, match=rf"step 2: non-finite loss \(layer, prob.*\): layer = nan.*nothing after "
                                             rf"step 1 is saved. Last good checkpoint .*: {out}/checkpoint-1\."):
        main(argv)
    assert sorted(os.listdir(out)) == ["checkpoint-1"]  # no checkpoint-2, no final model
    assert _finite(str(out / "checkpoint-1" / "model.safetensors"))


def test_a_nan_loss_stops_sft_too(assets, tmp_path):
    from llava_hybrid.guards import NonFiniteError
    from llava_hybrid.host.sft import main

    out = tmp_path / "sft"
    argv = ["--model_name_or_path", assets["teacher"], "--version", "phi", "--data_path", assets["data"],
            "--image_folder", assets["images"], "--output_dir", str(out), "--max_steps", "3",
            "--learning_rate", "1e10", "--per_device_train_batch_size", "2", "--save_strategy", "no",
            "--use_cpu", "True", "--report_to", "none", "--dataloader_num_workers", "0", "--model_max_length", "256"]
    with pytest.raises(NonFiniteError, match=r"step \d: non-finite loss \(loss\): loss = nan.*Last good checkpoint "
                                             r".*: none"):
        main(argv)
    assert not os.path.exists(out / "model.safetensors")


# ------------------------------------------------------------------------------- templates (item 2)


@pytest.mark.parametrize("version", ["v0", "mpt", "v1", "no_such_template"])
def test_distillation_refuses_a_template_that_does_not_fit_the_teacher_before_loading(assets, tmp_path, version):
    """Before: v0 and mpt trained with exit 0, v1 crashed at the first batch, an unknown name failed after
    both models loaded."""
    _validation_fails(base_argv(assets, str(tmp_path / "o"), "--version", version), rf"--version '{version}'")


def test_a_template_that_does_not_end_answers_in_the_teachers_eos_is_refused(tmp_path):
    """A Phi-2 (GPT-2 BPE) teacher: '###' (v0) is one token of its vocabulary, so the SFT check alone passes
    it; the teacher ends its answers with <|endoftext|>, so only phi fits."""
    from llava_hybrid.easyvqa.data import prepare
    from llava_hybrid.host.tiny import build_tiny_llava_phi

    teacher = build_tiny_llava_phi(str(tmp_path / "gpt2_teacher"), hidden_size=32, num_layers=2, num_heads=2,
                                   vocab="gpt2")
    data = prepare(str(tmp_path / "data"), turns=1, max_train_images=2, max_test_images=1)
    gpt2 = {"teacher": teacher, "data": data["train"], "images": data["image_folder"]}
    _validation_fails(base_argv(gpt2, str(tmp_path / "o"), "--version", "v0"),
                      r"--version 'v0' ends answers with '###', but .* ends them with its eos '<\|endoftext\|>'.*use phi")
    assert validate(*parse_args(base_argv(gpt2, str(tmp_path / "o")))).mamba_layers == [0]


# ---------------------------------------------------------------------------------- resuming (item 3)


def test_resuming_with_a_changed_layer_plan_or_trained_parts_is_refused_before_loading(assets, tmp_path):
    """Before: a [0, 2] checkpoint resumed into a [0, 1] student with exit 0 (layer 2 dropped with an
    'unexpected keys' warning among the usual ones)."""
    from llava_hybrid.distill.trainer import main

    out = str(tmp_path / "out")
    common = ("--max_steps", "1", "--save_strategy", "steps", "--save_steps", "1", "--model_max_length", "256",
              "--per_device_train_batch_size", "2", "--dataloader_num_workers", "0")
    main(base_argv(assets, out, "--mm_hybrid_layers", "0,2", *common))
    checkpoint = os.path.join(out, "checkpoint-1")
    with open(os.path.join(checkpoint, "run_plan.json")) as f:
        assert json.load(f)["mamba_layers"] == [0, 2]
    # the free-space estimate of validation (item 4) is this checkpoint's size
    written = sum(os.path.getsize(os.path.join(checkpoint, f))
                  for f in ("model.safetensors", "vision_tower/model.safetensors", "optimizer.pt"))
    estimate = validate(*parse_args(base_argv(assets, str(tmp_path / "o"), "--mm_hybrid_layers", "0,2"))).checkpoint_bytes
    assert 0.8 * written < estimate < 1.25 * written, (estimate, written)
    _fails = lambda argv, match: pytest.raises(ValueError, match=match)  # noqa: E731
    with _fails(None, rf"--output_dir holds {out}/checkpoint-1, written by a different model \(mamba_layers: "
                      r"checkpoint \[0, 2\] \(M\*M\*\), this run \[0, 1\] \(MM\*\*\)\)"):
        main(base_argv(assets, out, "--mm_hybrid_layers", "0,1", *common[:1], "2", *common[2:]))
    with _fails(None, r"trainable: checkpoint \['mamba', 'mm_projector'\], this run \['mamba'\]"):
        main(base_argv(assets, out, "--mm_hybrid_layers", "0,2", "--trainable", "mamba", *common[:1], "2",
                       *common[2:]))


# ------------------------------------------------------------------------------ output dir (item 4)


def _writable(directory) -> bool:
    import tempfile

    try:
        with tempfile.NamedTemporaryFile(dir=directory):
            return True
    except OSError:
        return False


def test_an_unwritable_output_dir_fails_before_any_model_loads(assets, tmp_path):
    """Before: an existing read-only --output_dir with --save_strategy no trained every step, then failed
    in save_state, keeping nothing. Root writes through a 0o555 mode: then sysfs stands in (no one writes
    files there)."""
    readonly = tmp_path / "readonly"
    readonly.mkdir()
    readonly.chmod(0o555)
    try:
        if not _writable(readonly):
            _validation_fails(base_argv(assets, str(readonly), "--save_strategy", "no"),
                              rf"--output_dir '{readonly}' cannot be written \(PermissionError")
        elif os.path.isdir("/sys/kernel") and not _writable("/sys/kernel"):
            _validation_fails(base_argv(assets, "/sys/kernel", "--save_strategy", "no"),
                              r"--output_dir '/sys/kernel' cannot be written")
        else:
            pytest.fail("no read-only directory to try on this machine")
    finally:
        readonly.chmod(0o755)
    a_file = tmp_path / "a_file"
    a_file.write_text("")
    _validation_fails(base_argv(assets, str(a_file / "out")), r"--output_dir .*a_file/out' cannot be written")


def test_an_output_dir_without_room_for_one_checkpoint_is_refused(assets, tmp_path):
    import shutil

    from llava_hybrid.guards import check_output_dir

    free = shutil.disk_usage(tmp_path).free
    with pytest.raises(ValueError, match=r"--output_dir .* GiB free, but one checkpoint of this run needs about"):
        check_output_dir(str(tmp_path / "o"), free + 2 ** 40)


# ---------------------------------------------------------------------------- sample lengths (item 5)


def test_samples_longer_than_model_max_length_are_listed_before_training(assets, tmp_path):
    """Before: a bare shape AssertionError at whatever step reached the sample (the teacher kept its own
    max length), forever on every resume; below the image's position, the image was silently cut off."""
    from llava_hybrid.distill.trainer import main

    for max_length in ("40", "24"):
        with pytest.raises(ValueError, match=rf"--model_max_length {max_length}: \d+ of \d+ samples are longer once "
                                             r"each image's 16 tokens are spliced in \(sample 0 \(id .*\): \d+.*"
                                             r"Pass --model_max_length \d+ or more"):
            main(base_argv(assets, str(tmp_path / "o"), "--model_max_length", max_length, "--max_steps", "1",
                           "--save_strategy", "no", "--dataloader_num_workers", "0"))
    assert not os.path.exists(tmp_path / "o" / "model.safetensors")


def test_the_measured_sample_lengths_are_the_spliced_lengths_the_model_sees(assets):
    import torch

    import llava_hybrid
    from llava_hybrid.host.data import sample_lengths, tokens_per_image, validate_data

    llava_hybrid.activate()
    from llava import conversation as conversation_lib
    from llava.model.builder import load_pretrained_model
    from llava.train import train as llava_train

    tokenizer, teacher, processor, _ = load_pretrained_model(assets["teacher"], None, "teacher", device="cpu")
    conversation_lib.default_conversation = conversation_lib.conv_templates["phi"]
    data_args = llava_train.DataArguments(data_path=assets["data"], image_folder=assets["images"],
                                          image_aspect_ratio="pad")
    data_args.image_processor, data_args.is_multimodal, data_args.mm_use_im_start_end = processor, True, False
    samples = validate_data(assets["data"], assets["images"])[:6]
    measured = sample_lengths(samples, tokenizer, data_args, tokens_per_image(teacher))
    module = llava_train.make_supervised_data_module(tokenizer=tokenizer, data_args=data_args)
    spliced = []
    for i in range(len(samples)):
        batch = module["data_collator"]([module["train_dataset"][i]])
        with torch.no_grad():
            embeds = teacher.prepare_inputs_labels_for_multimodal(
                batch["input_ids"], None, batch["attention_mask"], None, batch["labels"], batch["images"], None)[4]
        spliced.append(embeds.shape[1])
    assert measured == spliced


# -------------------------------------------------------------------------- model checks (item 6)


def test_teachers_and_students_that_cannot_be_distilled_are_named_in_validation(assets, tmp_path):
    """Before: "'NoneType' object has no attribute 'preprocess'" (plain Llama teacher), "'LlamaForCausalLM'
    object has no attribute 'get_model'" (plain student), IndexError at step 1 (6-layer student, 4-layer
    teacher), a '--model-path' error after loading the student (teacher without weights)."""
    import shutil

    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    from llava_hybrid.host.tiny import build_tiny_llava_phi

    llama = str(tmp_path / "llama")
    LlamaForCausalLM(LlamaConfig(vocab_size=512, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                 num_attention_heads=2)).save_pretrained(llama)
    AutoTokenizer.from_pretrained(assets["teacher"]).save_pretrained(llama)
    not_vlm = r"is not a LLaVA vision-language model \(model_type 'llama', no mm_vision_tower\)"
    _validation_fails(base_argv(assets, str(tmp_path / "o"), "--teacher_model_name_or_path", llama),
                      "--teacher_model_name_or_path .*" + not_vlm)
    argv = base_argv(assets, str(tmp_path / "o"), "--teacher_model_name_or_path", assets["teacher"])
    argv[argv.index("--model_name_or_path") + 1] = llama
    _validation_fails(argv, "--model_name_or_path .*" + not_vlm)

    deeper = build_tiny_llava_phi(str(tmp_path / "deeper"), hidden_size=64, num_layers=6, num_heads=2,
                                  vocab=os.path.join(assets["root"], "tok"), seed=1)
    argv[argv.index("--model_name_or_path") + 1] = deeper
    _validation_fails(argv, r"--model_name_or_path has 6 decoder layers but --teacher_model_name_or_path 4")

    no_weights = str(tmp_path / "no_weights")
    shutil.copytree(assets["teacher"], no_weights)
    os.remove(os.path.join(no_weights, "model.safetensors"))
    _validation_fails(base_argv(assets, str(tmp_path / "o"), "--teacher_model_name_or_path", no_weights),
                      rf"--teacher_model_name_or_path '{no_weights}': no weights")


# --------------------------------------------------- a killed JIT build of DeepSpeed's comm op (lead, CI)

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_the_build_lock_is_where_torch_builds_deepspeeds_comm_op(tmp_path, monkeypatch):
    import sys

    import torch.utils.cpp_extension as cpp

    from llava_hybrid.guards import deepspeed_cpu_ops, extension_lock

    assert deepspeed_cpu_ops() == ("deepspeed_shm_comm",)
    monkeypatch.setenv("TORCH_EXTENSIONS_DIR", str(tmp_path))
    assert extension_lock("deepspeed_shm_comm") == str(tmp_path / "deepspeed_shm_comm" / "lock")
    monkeypatch.delenv("TORCH_EXTENSIONS_DIR")
    folder = f"py{sys.version_info.major}{sys.version_info.minor}{sys.abiflags}_cpu"
    assert extension_lock("deepspeed_shm_comm") == os.path.join(cpp.get_default_build_root(), folder,
                                                                "deepspeed_shm_comm", "lock")


def test_only_a_deepspeed_run_on_cpu_checks_the_lock_and_only_a_stale_lock_fails(tmp_path, monkeypatch):
    import time

    from llava_hybrid.guards import StaleBuildLockError, check_build_locks, deepspeed_on_cpu, extension_lock

    assert not deepspeed_on_cpu(["--output_dir", "o", "--use_cpu", "True"])
    assert deepspeed_on_cpu(["--deepspeed", "scripts/zero2.json", "--use_cpu", "True"])
    assert deepspeed_on_cpu(["--deepspeed=scripts/zero2.json", "--use_cpu"])
    monkeypatch.setenv("TORCH_EXTENSIONS_DIR", str(tmp_path))
    lock = extension_lock("deepspeed_shm_comm")
    check_build_locks(["deepspeed_shm_comm"])  # no lock
    with open(lock, "w"):
        pass
    os.utime(lock, (time.time() - 60, time.time() - 60))
    check_build_locks(["deepspeed_shm_comm"])  # a build in progress: torch waits for it
    os.utime(lock, (time.time() - 25 * 60, time.time() - 25 * 60))
    with pytest.raises(StaleBuildLockError, match=rf"{lock} is 25 min old: .* rm {lock}"):
        check_build_locks(["deepspeed_shm_comm"])


@pytest.mark.parametrize("entry", ["distill_hybrid.py", "train_sft.py"])
def test_a_stale_deepspeed_build_lock_fails_the_entry_at_once_naming_it(assets, tmp_path, entry):
    """Before: a DeepSpeed run on CPU JIT-built the comm op and waited forever on the lock a killed build had
    left (CI hung 600 s); on transformers 4.37 already while parsing the flags (TrainingArguments starts
    DeepSpeed's backend under the launcher), which is why the entries check before they parse."""
    import subprocess
    import sys
    import time

    extensions = tmp_path / "torch_extensions"
    lock = extensions / "deepspeed_shm_comm" / "lock"
    lock.parent.mkdir(parents=True)
    lock.write_text("")
    os.utime(lock, (time.time() - 30 * 60, time.time() - 30 * 60))
    argv = base_argv(assets, str(tmp_path / "out"), "--deepspeed", os.path.join(REPO, "scripts", "zero2.json"),
                     "--max_steps", "1", "--save_strategy", "no")
    if entry == "train_sft.py":
        argv += ["--version", "phi"]
        cut = argv.index("--mm_hybrid_ratio")
        del argv[cut:cut + 2]
    env = dict(os.environ, TORCH_EXTENSIONS_DIR=str(extensions), LOCAL_RANK="0", RANK="0", WORLD_SIZE="1",
               LOCAL_WORLD_SIZE="1", MASTER_ADDR="127.0.0.1", MASTER_PORT="29731")  # as the deepspeed launcher
    done = subprocess.run([sys.executable, os.path.join(REPO, "scripts", entry), *argv], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode != 0
    assert f"StaleBuildLockError: {lock} is 30 min old" in done.stderr, done.stderr[-3000:]
    assert lock.exists() and not (tmp_path / "out").exists()  # nothing deleted, nothing started
