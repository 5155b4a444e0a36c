"""Teacher checkpoints: the `tinyllava` alias and the TinyLLaVA_Factory -> LLaVA-layout conversion.

No machine here reaches a model hub, so a name is either an existing local directory or the alias
`tinyllava` found on disk (env LLAVA_HYBRID_TINYLLAVA_PATH, or a Hugging Face cache snapshot of
bczhou/TinyLLaVA-3.1B).

TinyLLaVA_Factory (tinyllava/TinyLLaVA-Phi-2-SigLIP-3.1B, the MaTVLM teacher) ships a remote-code
model; `convert_factory_checkpoint` rewrites it as our `llava_phi` checkpoint:
    <dst>/config.json, model.safetensors (LM + projector), tokenizer files,
    <dst>/vision_tower/ (SiglipVisionModel + preprocessor_config.json; config mm_vision_tower points here).

Saving a model: `save_llava_checkpoint` writes the same layout from a model object; every LLaVA class
of ours calls it from `save_pretrained`, and the SFT entry calls its tower step `save_vision_tower`.
"""
from __future__ import annotations

import glob
import json
import os
import re
import shutil
from typing import Dict, List, Optional, Tuple

import torch
from safetensors.torch import load_file, save_file

TINYLLAVA_ALIAS = "tinyllava"
TINYLLAVA_REPO = "bczhou/TinyLLaVA-3.1B"
TINYLLAVA_ENV = "LLAVA_HYBRID_TINYLLAVA_PATH"
TOWER_SUBDIR = "vision_tower"
TOWER_PREFIX = "model.vision_tower.vision_tower."

# TinyLLaVA_Factory key -> ours (first match wins; a key matching no rule is unexpected)
FACTORY_KEY_MAP: List[Tuple[str, str]] = [
    (r"^language_model\.model\.(.+)$", r"model.\1"),
    (r"^language_model\.lm_head\.(.+)$", r"lm_head.\1"),
    (r"^vision_tower\._vision_tower\.(.+)$", r"model.vision_tower.vision_tower.\1"),
    (r"^connector\._connector\.([02])\.(.+)$", r"model.mm_projector.\1.\2"),
]
# Factory `vision_feature_select_strategy` -> our `mm_vision_select_feature` (see host/siglip.py)
FACTORY_SELECT_FEATURE = {"patch": "patch_drop_first", "cls_patch": "patch"}


def resolve_model_path(name_or_path: str, flag: str = "--model_name_or_path") -> str:
    """An existing directory -> itself; the alias 'tinyllava' -> the local TinyLLaVA-3.1B directory."""
    if os.path.isdir(name_or_path):
        return name_or_path
    if name_or_path == TINYLLAVA_ALIAS:
        found = _find_tinyllava()
        if found is not None:
            return found
        raise ValueError(
            f"{flag} {TINYLLAVA_ALIAS!r}: {TINYLLAVA_REPO} is not on this machine and no machine here can "
            f"download it. On a connected machine run `huggingface-cli download {TINYLLAVA_REPO} "
            "--local-dir TinyLLaVA-3.1B` (or download tinyllava/TinyLLaVA-Phi-2-SigLIP-3.1B and run "
            "`python scripts/convert_tinyllava_factory.py --src <it> --dst TinyLLaVA-3.1B`), copy the "
            f"directory here, then pass {flag} <that directory> or set {TINYLLAVA_ENV}=<that directory>. "
            "For tests and recipes, llava_hybrid.host.tiny.build_tiny_llava_phi writes a tiny local teacher.")
    raise ValueError(f"{flag} {name_or_path!r}: not a local directory and not the alias {TINYLLAVA_ALIAS!r} "
                     "(no model hub is reachable from this machine)")


def _find_tinyllava():
    env = os.environ.get(TINYLLAVA_ENV)
    if env:
        if not os.path.isfile(os.path.join(env, "config.json")):
            raise ValueError(f"{TINYLLAVA_ENV}={env!r}: no config.json there")
        return env
    hub = os.environ.get("HF_HUB_CACHE") or os.path.join(
        os.environ.get("HF_HOME", os.path.expanduser("~/.cache/huggingface")), "hub")
    repo_dir = os.path.join(hub, "models--" + TINYLLAVA_REPO.replace("/", "--"))
    snapshots = sorted(glob.glob(os.path.join(repo_dir, "snapshots", "*", "config.json")), key=os.path.getmtime)
    return os.path.dirname(snapshots[-1]) if snapshots else None


def map_factory_key(key: str) -> str | None:
    """Our name for a TinyLLaVA_Factory weight name, or None when no rule matches."""
    for pattern, replacement in FACTORY_KEY_MAP:
        if re.match(pattern, key):
            return re.sub(pattern, replacement, key)
    return None


def translate_factory_config(src_config: Dict) -> Dict:
    """TinyLLaVA_Factory config.json (text_config / vision_config) -> our llava_phi config dict."""
    text = dict(src_config.get("text_config") or {})
    vision = src_config.get("vision_config") or {}
    if text.get("model_type") != "phi":
        raise ValueError(f"Factory config text_config.model_type={text.get('model_type')!r}: only Phi LMs convert")
    if vision.get("model_type") not in ("siglip_vision_model", "siglip"):
        raise ValueError(f"Factory config vision_config.model_type={vision.get('model_type')!r}: only SigLIP converts")
    connector = src_config.get("connector_type", "mlp2x_gelu")
    if connector != "linear" and not re.match(r"^mlp\d+x_gelu$", connector):
        raise ValueError(f"Factory config connector_type={connector!r}: only linear / mlpNx_gelu map to LLaVA")
    strategy = src_config.get("vision_feature_select_strategy", "patch")
    if strategy not in FACTORY_SELECT_FEATURE:
        raise ValueError(f"Factory config vision_feature_select_strategy={strategy!r}: "
                         f"expected one of {sorted(FACTORY_SELECT_FEATURE)}")
    for k in ("_name_or_path", "architectures", "transformers_version", "auto_map"):
        text.pop(k, None)
    text.update(
        model_type="llava_phi", architectures=["LlavaPhiForCausalLM"],
        pad_token_id=src_config.get("pad_token_id", text.get("pad_token_id")),
        mm_vision_tower=TOWER_SUBDIR,
        mm_hidden_size=vision.get("hidden_size", src_config.get("vision_hidden_size")),
        mm_projector_type=connector,
        mm_vision_select_layer=src_config.get("vision_feature_layer", -2),
        mm_vision_select_feature=FACTORY_SELECT_FEATURE[strategy],
        mm_patch_merge_type="flat", mm_use_im_start_end=False, mm_use_im_patch_token=False, use_mm_proj=True,
        image_aspect_ratio=src_config.get("image_aspect_ratio", "square"),
        tokenizer_padding_side=src_config.get("tokenizer_padding_side", "right"),
        tokenizer_model_max_length=src_config.get("tokenizer_model_max_length", 2048))
    return text


def load_factory_state_dict(src: str) -> Tuple[Dict[str, torch.Tensor], str]:
    """All tensors of a Factory checkpoint directory and the file name(s) they came from."""
    single = os.path.join(src, "model.safetensors")
    shards = sorted(glob.glob(os.path.join(src, "model-*-of-*.safetensors")))
    if os.path.isfile(single):
        return load_file(single), single
    if shards:
        state = {}
        for shard in shards:
            state.update(load_file(shard))
        return state, os.path.join(src, "model-*-of-*.safetensors")
    bin_file = os.path.join(src, "pytorch_model.bin")
    if os.path.isfile(bin_file):
        return torch.load(bin_file, map_location="cpu", weights_only=True), bin_file
    raise FileNotFoundError(f"--src {src!r}: no model.safetensors, model-*-of-*.safetensors or pytorch_model.bin")


def _expected_shapes(config_dict: Dict, tower_config) -> Dict[str, torch.Size]:
    """Parameter shapes of our model for this config, built on the meta device (no memory)."""
    from transformers import SiglipVisionModel
    from llava_hybrid.host.phi import LlavaPhiConfig, LlavaPhiForCausalLM

    lm_config = LlavaPhiConfig(**{k: v for k, v in config_dict.items() if k != "mm_vision_tower"})
    with torch.device("meta"):
        model = LlavaPhiForCausalLM(lm_config)  # no mm_vision_tower: LM + projector built without a tower
        if not hasattr(model.get_model(), "mm_projector"):
            from llava.model.multimodal_projector.builder import build_vision_projector
            model.get_model().mm_projector = build_vision_projector(lm_config)
        tower = SiglipVisionModel(tower_config)
    shapes = {k: v.shape for k, v in model.state_dict().items()}
    shapes.update({TOWER_PREFIX + k: v.shape for k, v in tower.state_dict().items()})
    return shapes


def read_factory_config(src: str, what: str) -> dict:
    """<src>/config.json of a TinyLLaVA_Factory-layout checkpoint (model_type 'tinyllava'), checked.

    FileNotFoundError naming --src when it is missing; ValueError when it is another kind of checkpoint.
    """
    config_file = os.path.join(src, "config.json")
    if not os.path.isfile(config_file):
        raise FileNotFoundError(f"--src {src!r}: no config.json (expected {what})")
    with open(config_file) as f:
        src_config = json.load(f)
    if src_config.get("model_type") != "tinyllava":
        raise ValueError(f"--src {config_file}: model_type={src_config.get('model_type')!r}, expected 'tinyllava' "
                         f"({what})")
    return src_config


def make_tokenizer_json_portable(checkpoint_dir: str) -> bool:
    """Rewrite <checkpoint_dir>/tokenizer.json's BPE merges from pairs to "a b" strings; True if changed.

    tokenizers >= 0.20 (the transformers 5 lane) writes merges as [a, b] pairs, which tokenizers 0.15 (the
    transformers 4.37 lane) cannot parse; the string form is read by both. Refuses merges whose tokens
    contain a space (the string form could not represent them; byte-level BPE never has one).
    A directory without tokenizer.json (a slow tokenizer) is left as it is.
    """
    path = os.path.join(checkpoint_dir, "tokenizer.json")
    if not os.path.isfile(path):
        return False
    with open(path, encoding="utf-8") as f:
        tok = json.load(f)
    merges = tok.get("model", {}).get("merges") or []
    if not merges or all(isinstance(m, str) for m in merges):
        return False
    if any(" " in part for m in merges for part in m):
        raise ValueError(f"{path}: a BPE merge contains a space; its string form would be ambiguous")
    tok["model"]["merges"] = [f"{a} {b}" for a, b in merges]
    tmp = path + ".tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(tok, f, ensure_ascii=False, indent=2)
    os.replace(tmp, path)
    return True


def check_mapped_state(state: Dict[str, torch.Tensor], mapped: Dict[str, Optional[str]],
                       expected: Dict[str, tuple], source_name: str, what: str) -> None:
    """Check a renamed source state dict against our model's names and shapes, before anything is written.

    state: source key -> tensor; mapped: source key -> our key (None = no mapping); expected: our key ->
    shape. Raises ValueError naming `source_name` for unexpected keys, shape mismatches, missing weights.
    """
    unexpected = sorted(k for k, ours in mapped.items() if ours is None or ours not in expected)
    if unexpected:
        raise ValueError(f"{source_name}: {len(unexpected)} unexpected key(s) for {what}: {unexpected[:20]}")
    bad_shape = [f"{k}: {tuple(state[k].shape)} vs {tuple(expected[o])}" for k, o in mapped.items()
                 if tuple(state[k].shape) != tuple(expected[o])]
    if bad_shape:
        raise ValueError(f"{source_name}: shape mismatch against the checkpoint's config: {bad_shape[:20]}")
    missing = sorted(set(expected) - set(mapped.values()))
    if missing:
        raise ValueError(f"{source_name}: missing weights for our model: {missing[:20]}")


def convert_factory_checkpoint(src: str, dst: str) -> str:
    """Rewrite a TinyLLaVA_Factory checkpoint `src` as our llava_phi checkpoint in `dst`; return dst.

    Every source tensor must map through FACTORY_KEY_MAP onto a parameter of our model with the same
    shape; unexpected keys, missing keys or shape mismatches raise ValueError naming the source file.
    """
    from transformers import SiglipVisionConfig

    src_config = read_factory_config(src, "a TinyLLaVA_Factory checkpoint")
    config = translate_factory_config(src_config)
    tower_dict = {k: v for k, v in src_config["vision_config"].items() if k not in ("transformers_version",)}
    tower_dict["model_type"] = "siglip_vision_model"
    tower_config = SiglipVisionConfig(**{k: v for k, v in tower_dict.items() if k != "model_type"})

    # 1. rename and check every tensor
    state, source_name = load_factory_state_dict(src)
    mapped = {k: map_factory_key(k) for k in state}
    expected = _expected_shapes(config, tower_config)
    check_mapped_state(state, mapped, expected, source_name, "a TinyLLaVA_Factory Phi + SigLIP checkpoint")

    # 2. write LM + projector, the tower directory, the tokenizer
    write_converted_checkpoint(src, dst, config, {mapped[k]: v for k, v in state.items()}, tower_config, src_config)
    return dst


def write_converted_checkpoint(src: str, dst: str, config: Dict, ours: Dict[str, torch.Tensor], tower_config,
                               src_config: Dict, extra_files: Tuple[str, ...] = ()) -> None:
    """Write a converted checkpoint in our layout from its tensors (our names, tower included).

    <dst>/config.json (`config`, mm_vision_tower "vision_tower"), model.safetensors (LM + projector),
    <dst>/vision_tower/ (tower config, weights, image processor: the source's if it ships one, else
    SigLIP defaults at the tower resolution), the tokenizer (with the Factory's pad token), and
    generation_config.json plus `extra_files` copied from `src` when present.
    """
    from transformers import AutoTokenizer
    from llava_hybrid.host.siglip import load_siglip_image_processor

    os.makedirs(dst, exist_ok=True)
    lm_state = {k: v.contiguous() for k, v in ours.items() if not k.startswith(TOWER_PREFIX)}
    tower_state = {k[len(TOWER_PREFIX):]: v.contiguous() for k, v in ours.items() if k.startswith(TOWER_PREFIX)}
    save_file(lm_state, os.path.join(dst, "model.safetensors"), metadata={"format": "pt"})
    with open(os.path.join(dst, "config.json"), "w") as f:
        json.dump(config, f, indent=2)
    tower_dir = os.path.join(dst, TOWER_SUBDIR)
    os.makedirs(tower_dir, exist_ok=True)
    tower_config.save_pretrained(tower_dir)
    save_file(tower_state, os.path.join(tower_dir, "model.safetensors"), metadata={"format": "pt"})
    processor_src = src if os.path.isfile(os.path.join(src, "preprocessor_config.json")) else tower_dir
    load_siglip_image_processor(processor_src).save_pretrained(tower_dir)
    tokenizer = AutoTokenizer.from_pretrained(src)
    if tokenizer.pad_token is None and src_config.get("pad_token"):
        tokenizer.pad_token = src_config["pad_token"]
    tokenizer.save_pretrained(dst)
    for extra in ("generation_config.json",) + tuple(extra_files):
        if os.path.isfile(os.path.join(src, extra)):
            shutil.copyfile(os.path.join(src, extra), os.path.join(dst, extra))


SIGLIP_HUB_PREFIX = "vision_model."


def save_siglip_model(model, tower_dir: str, state_dict=None) -> None:
    """SiglipVisionModel.save_pretrained with the hub's `vision_model.*` weight names on every lane.

    transformers 5 names the weights `embeddings.*` / `encoder.*` and reads both layouts; 4.x knows only
    `vision_model.*` and would silently start a 5.x-saved tower from random weights.
    """
    if getattr(model.config, "model_type", "") != "siglip_vision_model":
        model.save_pretrained(tower_dir, state_dict=state_dict)  # e.g. LLaVA's CLIP tower: as it is
        return
    state = state_dict if state_dict is not None else model.state_dict()
    state = {k if k.startswith(SIGLIP_HUB_PREFIX) else SIGLIP_HUB_PREFIX + k: v for k, v in state.items()}
    model.save_pretrained(tower_dir, state_dict=state)


def save_vision_tower(tower, config, out_dir: str, state_dict=None) -> str:
    """Write a LLaVA vision tower (model config `config`) to `<out_dir>/vision_tower`; return that directory.

    A loaded tower: its model (weights from `state_dict`'s `model.vision_tower.vision_tower.*` when
    given, e.g. gathered under ZeRO-3) and image processor; a delay-loaded one: a copy of its local
    directory (`mm_vision_tower` resolved against the checkpoint).
    """
    from llava_hybrid.host.siglip import resolve_tower_path

    tower_dir = os.path.join(out_dir, TOWER_SUBDIR)
    if getattr(tower, "is_loaded", False):
        tower_state = {k[len(TOWER_PREFIX):]: v for k, v in (state_dict or {}).items() if k.startswith(TOWER_PREFIX)}
        save_siglip_model(tower.vision_tower, tower_dir, state_dict=tower_state or None)
        processor = getattr(tower, "image_processor", None)
        if processor is not None:
            processor.save_pretrained(tower_dir)
        return tower_dir
    source = resolve_tower_path(str(config.mm_vision_tower), config)
    if not os.path.isdir(source):
        raise ValueError(f"cannot save the vision tower: config mm_vision_tower={config.mm_vision_tower!r} is "
                         "not loaded and not a local directory")
    if os.path.abspath(source) != os.path.abspath(tower_dir):
        shutil.copytree(source, tower_dir, dirs_exist_ok=True)
    return tower_dir


def save_llava_checkpoint(model, out_dir: str, tokenizer=None, *, state_dict=None, is_main_process: bool = True,
                          **save_kwargs) -> str:
    """The one way to save a LLaVA model of ours: a checkpoint directory that loads on its own.

    1. the tower -> `<out_dir>/vision_tower` (save_vision_tower), on the main process;
    2. weights without `model.vision_tower.*` (LLaVA delay-loads the tower from `mm_vision_tower`) and
       the config with mm_vision_tower = "vision_tower" (resolved against the checkpoint directory;
       the in-memory config is left as it was), by transformers' PreTrainedModel.save_pretrained;
    3. the tokenizer, when given.
    Every LLaVA class of ours calls this from `save_pretrained` (LlavaLMMixin), so
    `model.save_pretrained(d); tokenizer.save_pretrained(d)` reloads through load_pretrained_model.
    """
    from transformers import PreTrainedModel

    os.makedirs(out_dir, exist_ok=True)
    if model.get_vision_tower() is None:
        PreTrainedModel.save_pretrained(model, out_dir, is_main_process=is_main_process, state_dict=state_dict,
                                        **save_kwargs)
    else:
        if is_main_process:
            save_vision_tower(model.get_vision_tower(), model.config, out_dir, state_dict)
        state_dict = model.state_dict() if state_dict is None else state_dict
        state_dict = {k: v for k, v in state_dict.items() if not k.startswith("model.vision_tower.")}
        original = model.config.mm_vision_tower
        model.config.mm_vision_tower = TOWER_SUBDIR
        try:
            PreTrainedModel.save_pretrained(model, out_dir, is_main_process=is_main_process, state_dict=state_dict,
                                            **save_kwargs)
        finally:
            model.config.mm_vision_tower = original
    if tokenizer is not None and is_main_process:
        tokenizer.save_pretrained(out_dir)
    return out_dir


def save_with_vision_tower(model, out_dir: str, tokenizer=None) -> str:
    """Former name of `save_llava_checkpoint(model, out_dir, tokenizer)` (kept for callers)."""
    return save_llava_checkpoint(model, out_dir, tokenizer)
