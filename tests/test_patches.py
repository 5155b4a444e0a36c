"""Each upstream patch fixes its breakage on the installed transformers (real LLaVA code paths)."""
import importlib
import os
import subprocess
import sys

import pytest
import torch

import llava_hybrid.patches as patches
from llava_hybrid import _patching, compat

ALL = ["layernorm_alias", "cache_position", "train_sampler_arity", "create_optimizer_arity",
       "processing_class", "cuda_synchronize", "save_checkpoint_metrics", "loss_kwargs", "image_dtype",
       "training_args_flags", "rng_state_numpy", "deepspeed_use_cpu", "tokenizer_backend_name", "grayscale_pad",
       "image_token_bos"]


def _needed(name):
    """The patch's own version guard: does the installed transformers have this breakage?"""
    return importlib.import_module(f"llava_hybrid.patches.{name}").PATCH.needed()


def _expected_names():
    v = compat.transformers_version()
    guards = {"layernorm_alias": v >= (4, 53), "cache_position": v >= (4, 38),
              "train_sampler_arity": v >= (4, 52), "create_optimizer_arity": v >= (5, 0),
              "processing_class": v >= (5, 0), "cuda_synchronize": not torch.cuda.is_available(),
              "save_checkpoint_metrics": v >= (4, 47), "loss_kwargs": v >= (4, 46), "image_dtype": True,
              "training_args_flags": v >= (4, 51),
              "rng_state_numpy": v < (4, 50) and compat.parse_version(torch.__version__) >= (2, 6),
              "deepspeed_use_cpu": v < (5, 0), "tokenizer_backend_name": v < (5, 0), "grayscale_pad": True,
              "image_token_bos": True}
    return [name for name in ALL if guards[name]]


@pytest.fixture(scope="module", autouse=True)
def applied():
    names = patches.apply_all()
    import llava.train.train  # noqa: F401  (fires the patches waiting for llava.train / transformers.trainer)
    import transformers.hf_argparser  # noqa: F401
    return names


def test_apply_all_is_version_guarded_and_idempotent(applied):
    assert sorted(applied) == sorted(_expected_names())
    assert patches.apply_all() == applied
    assert set(patches.status().values()) == {"applied"}
    assert compat.parse_version("4.37.2") == (4, 37, 2) and compat.parse_version("5.0.0rc1") == (5, 0, 0)


def _py(code, **env):
    full = dict(os.environ, LLAVA_HYBRID_DISABLE="1", **env)
    return subprocess.run([sys.executable, "-c", code], env=full, capture_output=True, text=True, timeout=120)


def test_layernorm_alias_makes_llava_train_importable():
    # one fresh process (startup hook off): the bare import fails, then succeeds after apply_all()
    code = ("try:\n import llava.train.train\nexcept ImportError as e:\n print('BARE', e)\n"
            "import llava_hybrid.patches as p; p.apply_all(); import llava.train.train\n"
            "import transformers.trainer as tt, transformers.pytorch_utils as pu\n"
            "assert tt.ALL_LAYERNORM_LAYERS is pu.ALL_LAYERNORM_LAYERS\nprint('FIXED')")
    proc = _py(code)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "FIXED" in proc.stdout
    if _needed("layernorm_alias"):
        assert "BARE" in proc.stdout and "ALL_LAYERNORM_LAYERS" in proc.stdout
    else:  # transformers < 4.53 still re-exports the name: the bare import works
        assert "BARE" not in proc.stdout


def _tiny_llava_llama():
    from llava.model.language_model.llava_llama import LlavaConfig, LlavaLlamaForCausalLM

    cfg = LlavaConfig(vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=4, max_position_embeddings=64,
                      pad_token_id=0, eos_token_id=63, bos_token_id=1)
    return LlavaLlamaForCausalLM(cfg).eval()


def test_llava_llama_forward_accepts_cache_position_by_name():
    import inspect

    model = _tiny_llava_llama()
    params = inspect.signature(model.forward).parameters
    assert not any(p.kind == p.VAR_KEYWORD for p in params.values())
    assert ("cache_position" in params) == _needed("cache_position")  # < 4.38: generate never passes it
    ids = torch.tensor([[5, 6, 7, 8]])
    if _needed("cache_position"):
        with torch.no_grad():
            plain = model(input_ids=ids).logits
            with_pos = model(input_ids=ids, cache_position=torch.arange(4)).logits
        torch.testing.assert_close(plain, with_pos)
    # generate validates attention_mask against the named signature and stops at max_new_tokens
    out = model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=3, do_sample=False)
    # LLaVA's own generate passes only inputs_embeds: transformers 4.37 seeds its output with a bos column
    assert out.shape == (1, 3) or (out.shape == (1, 4) and out[0, 0] == model.config.bos_token_id)


class _TextDataset(torch.utils.data.Dataset):
    """Token sequences with LLaVA's `modality_lengths` (negative = text-only)."""

    def __init__(self, n=8, length=6):
        g = torch.Generator().manual_seed(0)
        self.items = [torch.randint(2, 60, (length,), generator=g) for _ in range(n)]
        self.modality_lengths = [-length] * n

    def __len__(self):
        return len(self.items)

    def __getitem__(self, i):
        return {"input_ids": self.items[i], "labels": self.items[i].clone()}


def _trainer(tmp_path, **args):
    from llava.train.llava_trainer import LengthGroupedSampler, LLaVATrainer  # noqa: F401
    from llava.train.train import TrainingArguments
    from transformers import PreTrainedTokenizerFast
    from tokenizers import Tokenizer, models

    tok = PreTrainedTokenizerFast(tokenizer_object=Tokenizer(models.WordLevel({"<unk>": 0}, "<unk>")))
    targs = TrainingArguments(output_dir=str(tmp_path), use_cpu=True, report_to=[], per_device_train_batch_size=2,
                              learning_rate=1e-3, logging_steps=1, save_strategy="steps", **args)
    trainer = LLaVATrainer(model=_tiny_llava_llama().train(), tokenizer=tok, args=targs,
                           train_dataset=_TextDataset(), data_collator=_stack)
    return trainer, tok


def _train_sampler(trainer, dataset):
    """The installed Trainer's sampler hook: (dataset) from 4.52 (patched), () before."""
    if _needed("train_sampler_arity"):
        return trainer._get_train_sampler(dataset)
    assert dataset is trainer.train_dataset
    return trainer._get_train_sampler()


def _stack(features):
    return {key: torch.stack([f[key] for f in features]) for key in features[0]}


def test_llava_trainer_constructs_samples_trains_and_checkpoints(tmp_path):
    from llava.train.llava_trainer import LengthGroupedSampler

    trainer, tok = _trainer(tmp_path, group_by_modality_length=True, max_steps=2, save_steps=2,
                            gradient_accumulation_steps=2)
    tokenizer_attr = "processing_class" if _needed("processing_class") else "tokenizer"
    assert getattr(trainer, tokenizer_attr) is tok  # (d) tokenizer= mapped to processing_class= (5.x)
    assert isinstance(_train_sampler(trainer, trainer.train_dataset), LengthGroupedSampler)  # (c)
    if _needed("loss_kwargs"):
        assert trainer.model_accepts_loss_kwargs is False  # (g) LLaVA returns a mean loss
    if _needed("create_optimizer_arity"):
        trainer.create_optimizer(trainer.model)  # delayed-creation arity
    else:
        trainer.create_optimizer()
    trainer.optimizer = None
    result = trainer.train()  # LLaVA's optimizer groups (ALL_LAYERNORM_LAYERS), sampler, checkpoint (f)
    assert result.global_step == 2 and torch.isfinite(torch.tensor(result.training_loss))
    assert (tmp_path / "checkpoint-2" / "model.safetensors").exists()
    # (h) resuming restores the RNG state the Trainer saved (numpy arrays inside, weights_only loading)
    ckpt = str(tmp_path / "checkpoint-2")
    draws = []
    for seed in (1, 2):
        torch.manual_seed(seed)
        trainer._load_rng_state(ckpt)
        draws.append(torch.rand(3))
    torch.testing.assert_close(draws[0], draws[1])
    if _needed("rng_state_numpy"):
        from transformers import Trainer

        with pytest.raises(Exception, match="numpy"):
            _patching.original_of(Trainer._load_rng_state)(trainer, ckpt)  # what 4.37 + torch 2.6+ does


def test_llava_trainer_default_sampler_without_modality_grouping(tmp_path):
    trainer, _ = _trainer(tmp_path, max_steps=1)
    sampler = _train_sampler(trainer, trainer.train_dataset)
    assert isinstance(sampler, torch.utils.data.RandomSampler)
    if _needed("train_sampler_arity"):  # the dataset argument exists only from 4.52
        other = _TextDataset(n=4)
        assert len(trainer._get_train_sampler(other)) == 4


def test_cuda_synchronize_is_a_noop_without_cuda():
    if torch.cuda.is_available():
        pytest.skip("with CUDA the patch is not needed")
    original = _patching.original_of(torch.cuda.synchronize)
    with pytest.raises((AssertionError, RuntimeError)):
        original()  # what llava's safe_save_model_for_hf_trainer would hit under DeepSpeed on CPU
    assert torch.cuda.synchronize() is None


def test_renamed_training_flags_are_rewritten(tmp_path):
    from llava.train.train import TrainingArguments
    from transformers import HfArgumentParser

    parser = HfArgumentParser((TrainingArguments,))
    old = ["--output_dir", str(tmp_path), "--evaluation_strategy", "no", "--warmup_ratio=0.03"]
    (args,) = parser.parse_args_into_dataclasses(old)
    if not _needed("training_args_flags"):  # < 4.51: both old flags are the installed names
        assert args.evaluation_strategy == "no" and args.warmup_ratio == pytest.approx(0.03)
        return
    assert args.eval_strategy == "no" and args.warmup_steps == pytest.approx(0.03)
    original = _patching.original_of(HfArgumentParser.parse_args_into_dataclasses)
    with pytest.raises((ValueError, SystemExit)):
        original(parser, old)  # the installed transformers rejects the old names
    with pytest.raises(ValueError, match="--warmup_steps"):
        parser.parse_args_into_dataclasses(old + ["--warmup_steps", "5"])
    with pytest.raises(ValueError, match="--warmup_ratio"):
        parser.parse_args_into_dataclasses(["--output_dir", str(tmp_path), "--warmup_ratio", "3"])
    (spaced,) = parser.parse_args_into_dataclasses(["--output_dir", str(tmp_path), "--warmup_ratio", "0.1"])
    assert spaced.warmup_steps == pytest.approx(0.1)


@pytest.mark.skipif(torch.cuda.is_available() or not _needed("deepspeed_use_cpu"),
                    reason="transformers 5 keeps DeepSpeed under --use_cpu; the patch is for 4.x without CUDA")
def test_deepspeed_use_cpu_keeps_deepspeed(tmp_path):
    """LLaVA's TrainingArguments with --use_cpu and --deepspeed: DeepSpeed stays, --use_cpu goes. Fresh
    interpreter (the arguments set ACCELERATE_USE_DEEPSPEED for the process); the full 2-rank run is
    tests/test_distill_e2e.py."""
    zero2 = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "scripts", "zero2.json")
    code = (
        "import llava_hybrid.patches as p; p.apply_all()\n"
        "from llava.train.train import TrainingArguments\n"
        f"args = TrainingArguments(output_dir={str(tmp_path)!r}, use_cpu=True, deepspeed={zero2!r}, report_to=[])\n"
        "assert args.use_cpu is False and args.dataloader_pin_memory is False, args\n"
        "assert args.hf_deepspeed_config is not None and args.deepspeed_plugin is not None\n"
        "print('ok')\n"
    )
    proc = _py(code)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.strip().endswith("ok")


def test_half_images_reach_a_float32_model(tmp_path):
    from llava_hybrid.host.builder import load_pretrained_model
    from llava_hybrid.host.tiny import build_tiny_llava_phi

    ckpt = build_tiny_llava_phi(str(tmp_path / "tiny"))
    _tok, model, processor, _ctx = load_pretrained_model(ckpt, None, "tiny", device="cpu")
    size = processor.crop_size["height"] if hasattr(processor, "crop_size") else processor.size["height"]
    images = torch.rand(1, 3, size, size).half()  # as llava.eval.model_vqa sends them
    with torch.no_grad():
        feats = model.encode_images(images)
    assert feats.dtype == torch.float32 and feats.shape[0] == 1


@pytest.mark.skipif(torch.cuda.is_available(), reason="the mapping only applies without CUDA")
def test_cuda_moves_map_to_cpu_in_a_cpu_only_process():
    """llava.eval.model_vqa_loader does `input_ids.to(device='cuda', non_blocking=True)` and
    `images.to(dtype=torch.float16, device='cuda')`; LLaVA's builder moves the tower with `.to(device=...)`.
    Run in a fresh interpreter with the hook off, so only the patch under test changes torch."""
    code = (
        "import torch\n"
        "from llava_hybrid.patches import cuda_to_cpu\n"
        "assert cuda_to_cpu.apply() and not cuda_to_cpu.apply()\n"
        "t = torch.ones(2)\n"
        "assert t.to(device='cuda', non_blocking=True).device.type == 'cpu'\n"
        "h = t.to(dtype=torch.float16, device='cuda:0')\n"
        "assert h.device.type == 'cpu' and h.dtype == torch.float16\n"
        "assert t.to('cuda', torch.float64).dtype == torch.float64\n"
        "assert t.to(torch.device('cuda')).device.type == 'cpu' and t.cuda().device.type == 'cpu'\n"
        "assert t.to(torch.bfloat16).dtype == torch.bfloat16\n"
        "m = torch.nn.Linear(2, 2).to(device='cuda', dtype=torch.float64)\n"
        "assert m.weight.device.type == 'cpu' and m.weight.dtype == torch.float64\n"
        "print('ok')\n"
    )
    env = {**os.environ, "LLAVA_HYBRID_DISABLE": "1"}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip().endswith("ok")


def test_tokenizer_saved_by_transformers_5_loads_on_this_lane(tmp_path):
    """transformers 5 writes tokenizer_class 'TokenizersBackend'; a checkpoint made on lane 5 (the shipped
    easy-VQA teacher) must load on lane 4 too: natively on 5.x, through `tokenizer_backend_name` on 4.x."""
    import json

    import transformers

    from llava_hybrid.host.tiny import write_phi2_style_tokenizer

    patches.apply_all()
    write_phi2_style_tokenizer(str(tmp_path))
    reference = transformers.AutoTokenizer.from_pretrained(str(tmp_path))
    cfg_path = tmp_path / "tokenizer_config.json"
    cfg = json.loads(cfg_path.read_text())
    cfg["tokenizer_class"] = "TokenizersBackend"
    cfg_path.write_text(json.dumps(cfg))
    loaded = transformers.AutoTokenizer.from_pretrained(str(tmp_path))
    text = "USER: <image>\nWhat color is the shape? ASSISTANT: red<|endoftext|>"
    assert loaded(text).input_ids == reference(text).input_ids
    assert loaded.eos_token == "<|endoftext|>"


def test_every_patch_module_declares_one_patch_with_a_version_range():
    import ast
    from pathlib import Path

    from packaging.specifiers import SpecifierSet

    files = sorted(p for p in Path(patches.__file__).parent.glob("*.py") if p.name != "__init__.py")
    assert {p.stem for p in files} == set(ALL) | {"cuda_to_cpu"}
    for path in files:
        patch = importlib.import_module(f"llava_hybrid.patches.{path.stem}").PATCH
        assert isinstance(patch, _patching.Patch) and patch.name == path.stem
        assert patch.reason and patch.upstream and patch.target and patch.sites
        for spec in patch.versions.values():
            SpecifierSet(spec)  # a declared range, parseable
        calls = [n.func.id for n in ast.walk(ast.parse(path.read_text()))
                 if isinstance(n, ast.Call) and isinstance(n.func, ast.Name)]
        assert "transformers_version" not in calls and "installed_version" not in calls, path.name
