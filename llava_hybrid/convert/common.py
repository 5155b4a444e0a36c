"""What both converters of released checkpoints share (TinyLLaVA_Factory layout -> this project's layout).

The releases (the teacher tinyllava/TinyLLaVA-Phi-2-SigLIP-3.1B, the MaTVLM release
hustvl/MaTVLM_*_Mamba2) are written by TinyLLaVA_Factory's `save_pretrained` under transformers 4.43:
config.json (model_type "tinyllava", sparse text_config / vision_config, auto_map naming remote code),
safetensors shards + model.safetensors.index.json, Phi-2's slow tokenizer files, no
preprocessor_config.json. A conversion is:

  1. read_factory_config: the source's config.json (one checked reader);
  2. load_state_dict (checkpoint_files): every shard the index names, each checked whole, before
     anything is built;
  3. map every key (FACTORY_PREFIXES) and check names and shapes against our model built on the meta
     device (check_mapped_state): nothing is written unless every tensor has exactly one place;
  4. the tensors are assigned into that model (no copy) and it is saved through the one save path
     (host/saving.save_llava_checkpoint: atomic, lane-portable tower names and tokenizer files).
"""
from __future__ import annotations

import os
import re
from typing import Dict, Optional, Tuple

import torch

from llava_hybrid.checkpoint_files import CheckpointError, read_config
from llava_hybrid.host.saving import SIGLIP_HUB_PREFIX, TOWER_PREFIX, TOWER_SUBDIR, hub_tower_names

# The Factory key map, as data: (Factory prefix, our prefix). A key is renamed by the longest prefix it
# starts with; `factory_key` applies the same pairs backwards (fixtures write the Factory layout with it).
FACTORY_PREFIXES: Tuple[Tuple[str, str], ...] = (
    ("language_model.model.", "model."),
    ("language_model.lm_head.", "lm_head."),
    ("vision_tower._vision_tower.vision_model.", TOWER_PREFIX + SIGLIP_HUB_PREFIX),  # as 4.x names SigLIP
    ("connector._connector.", "model.mm_projector."),
)
# Read but never written: the tower of a Factory checkpoint re-saved by transformers 5 (no vision_model.)
FACTORY_READ_ALIASES: Tuple[Tuple[str, str], ...] = (
    ("vision_tower._vision_tower.", TOWER_PREFIX + SIGLIP_HUB_PREFIX),
)
# Factory `vision_feature_select_strategy` -> our `mm_vision_select_feature` (see host/siglip.py)
FACTORY_SELECT_FEATURE = {"patch": "patch_drop_first", "cls_patch": "patch"}
FACTORY_MODEL_TYPE = "tinyllava"


def _rename(key: str, pairs) -> Optional[str]:
    matches = [(src, dst) for src, dst in pairs if key.startswith(src)]
    if not matches:
        return None
    src, dst = max(matches, key=lambda pair: len(pair[0]))
    return dst + key[len(src):]


def map_factory_key(key: str) -> Optional[str]:
    """Our name for a TinyLLaVA_Factory weight name (4.x or 5.x tower names), or None when no prefix matches."""
    return _rename(key, FACTORY_PREFIXES + FACTORY_READ_ALIASES)


def factory_key(ours: str) -> str:
    """The TinyLLaVA_Factory name of one of our weight names (tower names with `vision_model.`)."""
    name = _rename(ours, tuple((dst, src) for src, dst in FACTORY_PREFIXES))
    if name is None:
        raise KeyError(f"{ours}: no TinyLLaVA_Factory name (FACTORY_PREFIXES)")
    return name


def read_factory_config(src: str, what: str) -> Dict:
    """<src>/config.json of a TinyLLaVA_Factory-layout checkpoint (model_type 'tinyllava'), checked.

    CheckpointError naming --src when the directory or config.json is missing or unreadable, or when it
    is another kind of checkpoint.
    """
    config = read_config(src, "--src", expect=what)
    if config.get("model_type") != FACTORY_MODEL_TYPE:
        raise CheckpointError(f"--src {os.path.join(src, 'config.json')}: model_type="
                              f"{config.get('model_type')!r}, expected {FACTORY_MODEL_TYPE!r} ({what})")
    return config


def check_destination(src: str, dst: str) -> None:
    """--dst must be a new (or empty) directory that is not --src: checked before anything is read."""
    if os.path.realpath(src) == os.path.realpath(dst):
        raise CheckpointError(f"--dst {dst!r} is --src: the conversion writes a new checkpoint beside the "
                              "original; pass another --dst")
    if os.path.exists(dst) and (not os.path.isdir(dst) or os.listdir(dst)):
        raise CheckpointError(f"--dst {dst!r} exists and is not an empty directory; remove it or pass a new "
                              "--dst (nothing was written)")


def translate_factory_config(src_config: Dict) -> Dict:
    """TinyLLaVA_Factory config.json (text_config / vision_config) -> our llava_phi config dict.

    text_config is sparse (4.x leaves out values equal to the class defaults); what it leaves out is
    PhiConfig's default, so it is filled in the same way by our config class on either lane.
    """
    text = dict(src_config.get("text_config") or {})
    vision = src_config.get("vision_config") or {}
    if text.get("model_type") != "phi":
        raise CheckpointError(f"Factory config text_config.model_type={text.get('model_type')!r}: only Phi "
                              "LMs convert")
    if vision.get("model_type") not in ("siglip_vision_model", "siglip"):
        raise CheckpointError(f"Factory config vision_config.model_type={vision.get('model_type')!r}: only "
                              "SigLIP converts")
    connector = src_config.get("connector_type", "mlp2x_gelu")
    if connector != "linear" and not re.match(r"^mlp\d+x_gelu$", connector):
        raise CheckpointError(f"Factory config connector_type={connector!r}: only linear / mlpNx_gelu map "
                              "to LLaVA")
    strategy = src_config.get("vision_feature_select_strategy", "patch")
    if strategy not in FACTORY_SELECT_FEATURE:
        raise CheckpointError(f"Factory config vision_feature_select_strategy={strategy!r}: "
                              f"expected one of {sorted(FACTORY_SELECT_FEATURE)}")
    for k in ("_name_or_path", "architectures", "transformers_version", "auto_map", "model_type"):
        text.pop(k, None)
    text.update(
        architectures=["LlavaPhiForCausalLM"],
        pad_token_id=src_config.get("pad_token_id", text.get("pad_token_id")),
        mm_hidden_size=vision.get("hidden_size", src_config.get("vision_hidden_size")),
        mm_projector_type=connector,
        mm_vision_select_layer=src_config.get("vision_feature_layer", -2),
        mm_vision_select_feature=FACTORY_SELECT_FEATURE[strategy],
        mm_patch_merge_type="flat", mm_use_im_start_end=False, mm_use_im_patch_token=False, use_mm_proj=True,
        image_aspect_ratio=src_config.get("image_aspect_ratio", "square"),
        tokenizer_padding_side=src_config.get("tokenizer_padding_side", "right"),
        tokenizer_model_max_length=src_config.get("tokenizer_model_max_length", 2048))
    return text


def factory_tower_config(src_config: Dict):
    """The SigLIP vision config of a Factory config.json (TinyLLaVA's own bookkeeping fields dropped)."""
    from transformers import SiglipVisionConfig

    fields = {k: v for k, v in (src_config.get("vision_config") or {}).items()
              if k not in ("transformers_version", "model_type", "model_name_or_path", "model_name_or_path2")}
    return SiglipVisionConfig(**fields)


def build_on_meta(model_cls, config_cls, config: Dict, tower_config):
    """(our LLaVA model without a tower but with its projector, a SiglipVisionModel), on the meta device.

    No memory is taken: the shapes are checked against them and the source tensors are then assigned
    into them (`assign_weights`).
    """
    from llava.model.multimodal_projector.builder import build_vision_projector
    from transformers import SiglipVisionModel

    lm_config = config_cls(**{k: v for k, v in config.items() if k != "model_type"})
    with torch.device("meta"):
        model = model_cls(lm_config)  # no mm_vision_tower: LLaVA builds neither tower nor projector
        model.get_model().mm_projector = build_vision_projector(lm_config)
        tower = SiglipVisionModel(tower_config)
    return model, tower


def expected_shapes(model, tower) -> Dict[str, torch.Size]:
    """Our name -> shape for every tensor the converted checkpoint must hold (tower names as the hub's)."""
    shapes = {k: v.shape for k, v in model.state_dict().items()}
    shapes.update({TOWER_PREFIX + k: v.shape for k, v in hub_tower_names(tower.state_dict()).items()})
    return shapes


def source_name(src: str, files) -> str:
    """How errors name the source's weights: the one file, or the directory and its shards."""
    if len(files) == 1:
        return files[0]
    return f"{src} ({', '.join(os.path.basename(f) for f in files)})"


def check_mapped_state(state: Dict[str, torch.Tensor], mapped: Dict[str, Optional[str]],
                       expected: Dict[str, tuple], source_name: str, what: str) -> None:
    """Check a renamed source state dict against our model's names and shapes, before anything is written.

    state: source key -> tensor; mapped: source key -> our key (None = no mapping); expected: our key ->
    shape. Raises CheckpointError naming `source_name` for unexpected keys, two source keys with one
    destination, shape mismatches, missing weights.
    """
    unexpected = sorted(k for k, ours in mapped.items() if ours is None or ours not in expected)
    if unexpected:
        raise CheckpointError(f"{source_name}: {len(unexpected)} unexpected key(s) for {what}: {unexpected[:20]}")
    seen: Dict[str, str] = {}
    twice = [f"{seen[o]} and {k} -> {o}" for k, o in mapped.items() if seen.setdefault(o, k) != k]
    if twice:
        raise CheckpointError(f"{source_name}: source keys that map onto the same weight: {twice[:10]}")
    bad_shape = [f"{k}: {tuple(state[k].shape)} vs {tuple(expected[o])}" for k, o in mapped.items()
                 if tuple(state[k].shape) != tuple(expected[o])]
    if bad_shape:
        raise CheckpointError(f"{source_name}: shape mismatch against the checkpoint's config: {bad_shape[:20]}")
    missing = sorted(set(expected) - set(mapped.values()))
    if missing:
        raise CheckpointError(f"{source_name}: missing weights for our model: {missing[:20]}")


def assign_weights(model, tower, ours: Dict[str, torch.Tensor]) -> None:
    """Put the checked tensors (our names) into the meta-built model and tower, without copying them."""
    own = set(tower.state_dict())
    tower_state = {}
    for key, value in ours.items():
        if key.startswith(TOWER_PREFIX):
            name = key[len(TOWER_PREFIX):]
            tower_state[name if name in own else name[len(SIGLIP_HUB_PREFIX):]] = value
    model.load_state_dict({k: v for k, v in ours.items() if not k.startswith(TOWER_PREFIX)}, strict=True,
                          assign=True)
    tower.load_state_dict(tower_state, strict=True, assign=True)


def image_processor_for(src: str, tower_config):
    """The source's preprocessor_config.json when it ships one; else SigLIP's defaults at the tower size
    (the releases ship none: theirs is google/siglip-so400m-patch14-384's, which those defaults equal)."""
    from transformers import SiglipImageProcessor

    if os.path.isfile(os.path.join(src, "preprocessor_config.json")):
        return SiglipImageProcessor.from_pretrained(src)
    size = tower_config.image_size
    return SiglipImageProcessor(size={"height": size, "width": size})


def load_source_tokenizer(src: str, src_config: Dict):
    """The source's tokenizer (Phi-2's slow files), never running remote code, with the Factory's pad token."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(src, trust_remote_code=False)
    if tokenizer.pad_token is None and src_config.get("pad_token"):
        tokenizer.pad_token = src_config["pad_token"]
    return tokenizer


def write_converted(src: str, dst: str, src_config: Dict, model, tower, tower_config,
                    extra_files: Tuple[str, ...] = ()) -> str:
    """Save the converted model through the one save path: tower + processor, weights, the source's
    tokenizer, `extra_files` copied from `src`; atomically (renamed into place when complete)."""
    from llava_hybrid.host.saving import save_llava_checkpoint

    tokenizer = load_source_tokenizer(src, src_config)
    extras = {name: os.path.join(src, name) for name in extra_files}
    save_llava_checkpoint(model, dst, tokenizer, tower=(tower, image_processor_for(src, tower_config)),
                          extra_files=extras)
    return dst

