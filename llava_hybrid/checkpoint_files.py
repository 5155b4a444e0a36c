"""Checkpoint directories as files: the one config.json reader, the weight files, completeness.

Every reader of a checkpoint directory (the converters, `load_pretrained_model`, the SFT and
distillation entries, resume) goes through these functions, so a bad directory fails the same way
everywhere: a `CheckpointError` (a ValueError) whose message names the flag and the file, raised before
anything is loaded or written. This module imports nothing from `llava` and nothing else of this package.

    read_config(path, flag)              config.json as a dict (missing directory / file / bad JSON named)
    refuse_remote_code(config, ...)      a config that only loads with remote code -> what to pass instead
    weight_files(path, flag)             the weight files, index-driven: every file the index names must
                                         exist and be whole (safetensors header + length, pickle zip
                                         directory); a shard that does not is named
    load_state_dict(path, flag)          all tensors of a checkpoint, after every file passed the check
    last_complete_checkpoint(run_dir)    the newest whole `checkpoint-N` of a run (a broken newer one is
                                         named, set aside as `.incomplete-checkpoint-N`, and skipped)

A directory written by this project is complete once its config.json exists: the save path
(host/saving.py) writes config.json last, after every other file is in place.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import struct
import zipfile
from typing import Dict, List, Optional, Tuple

CONFIG_NAME = "config.json"
SAFE_WEIGHTS = "model.safetensors"
SAFE_INDEX = "model.safetensors.index.json"
BIN_WEIGHTS = "pytorch_model.bin"
BIN_INDEX = "pytorch_model.bin.index.json"
CHECKPOINT_PREFIX = "checkpoint-"          # transformers' PREFIX_CHECKPOINT_DIR + "-"
INCOMPLETE_PREFIX = ".incomplete-"         # a broken checkpoint-N set aside by last_complete_checkpoint
SHARD_PATTERN = re.compile(r"^model-\d{5}-of-\d{5}\.safetensors$")
WEIGHT_FILE = re.compile(r"^(model(-\d{5}-of-\d{5})?\.safetensors|pytorch_model(-\d{5}-of-\d{5})?\.bin|"
                         r"(model\.safetensors|pytorch_model\.bin)\.index\.json)$")


def is_weight_file(name: str) -> bool:
    """A file name transformers reads weights from (one file, a shard, or an index)."""
    return bool(WEIGHT_FILE.match(name))


class CheckpointError(ValueError):
    """A checkpoint directory or file that cannot be used; the message names the flag and the file."""


def read_config(path: str, flag: str, *, expect: Optional[str] = None) -> Dict:
    """`<path>/config.json` as a dict.

    flag: the command-line flag (or role) that named `path`, quoted in every error. expect: what the
    directory should be (e.g. "a TinyLLaVA_Factory checkpoint"), added to the errors.
    Raises CheckpointError for a missing directory, a missing or unparsable config.json, or a
    config.json that is not a JSON object.
    """
    wanted = f" (expected {expect})" if expect else ""
    if not os.path.isdir(path):
        raise CheckpointError(f"{flag} {path!r}: no such directory{wanted}; models are loaded from local "
                              "directories only (no model hub is reachable here)")
    config_file = os.path.join(path, CONFIG_NAME)
    if not os.path.isfile(config_file):
        raise CheckpointError(f"{flag} {path!r}: no {CONFIG_NAME} in that directory{wanted}")
    try:
        with open(config_file, encoding="utf-8") as f:
            config = json.load(f)
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise CheckpointError(f"{flag} {config_file}: unreadable ({err})") from err
    if not isinstance(config, dict):
        raise CheckpointError(f"{flag} {config_file}: expected a JSON object, got {type(config).__name__}")
    return config


# model_type -> the converter that turns such a remote-code checkpoint into one that loads without it
REMOTE_CODE_CONVERTERS = {
    "tinyllava": ("a TinyLLaVA_Factory checkpoint", "scripts/convert_tinyllava_factory.py",
                  "scripts/convert_matvlm.py (when it has mamba_config.json: the MaTVLM release)"),
}


def refuse_remote_code(config: Dict, path: str, flag: str, known_model_types=()) -> None:
    """Raise CheckpointError when `config` only loads by running the checkpoint's own Python code.

    That is a config whose model_type is none of `known_model_types` (this project's and transformers'
    own) and which names remote code in `auto_map`. This project never runs remote code; the error says
    which converter to run and what to pass instead.
    """
    model_type = config.get("model_type")
    if model_type in known_model_types or not config.get("auto_map"):
        return
    modules = sorted({str(v).split(".")[0] for v in config["auto_map"].values()})
    if model_type in REMOTE_CODE_CONVERTERS:
        what, converter, alternative = REMOTE_CODE_CONVERTERS[model_type]
        raise CheckpointError(
            f"{flag} {path!r} is {what} (model_type {model_type!r}); it loads only by running its own code "
            f"({', '.join(m + '.py' for m in modules)}), which this project never does. Convert it once: "
            f"`python {converter} --src {path} --dst <new dir>` (or {alternative}), then pass "
            f"{flag} <new dir>.")
    raise CheckpointError(
        f"{flag} {path!r}: model_type {model_type!r} loads only by running the checkpoint's own code "
        f"({', '.join(m + '.py' for m in modules)}), which this project never does; pass a checkpoint "
        "of a registered model type instead (see docs/design.md)")


def safetensors_header(file: str) -> Dict[str, Dict]:
    """The tensor entries of a .safetensors file's header, after checking the file is whole.

    A file shorter than its header says (a truncated download or copy), or one whose header does not
    parse, raises CheckpointError naming the file and both sizes.
    """
    size = os.path.getsize(file)
    try:
        with open(file, "rb") as f:
            (header_len,) = struct.unpack("<Q", f.read(8))
            if header_len > size - 8:
                raise CheckpointError(f"{file}: truncated ({size:,} bytes, but its header alone claims "
                                      f"{header_len + 8:,}); copy or download it again")
            header = json.loads(f.read(header_len))
    except (struct.error, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise CheckpointError(f"{file}: not a readable safetensors file ({err})") from err
    header.pop("__metadata__", None)
    end = max((entry["data_offsets"][1] for entry in header.values()), default=0)
    if size < 8 + header_len + end:
        raise CheckpointError(f"{file}: truncated ({size:,} of {8 + header_len + end:,} bytes); "
                              "copy or download it again")
    return header


def check_zip_file(file: str) -> None:
    """A torch.save file (zip format) whose central directory reads; CheckpointError naming it otherwise."""
    try:
        with zipfile.ZipFile(file) as archive:
            archive.namelist()
    except (zipfile.BadZipFile, OSError, EOFError) as err:
        raise CheckpointError(f"{file}: truncated or not a torch.save file ({err}); "
                              "copy or download it again") from err


def _read_index(index_file: str, flag: str) -> Dict[str, str]:
    try:
        with open(index_file, encoding="utf-8") as f:
            weight_map = json.load(f)["weight_map"]
    except (OSError, KeyError, TypeError, json.JSONDecodeError) as err:
        raise CheckpointError(f"{flag} {index_file}: unreadable weight index ({err!r})") from err
    if not isinstance(weight_map, dict) or not weight_map:
        raise CheckpointError(f"{flag} {index_file}: its weight_map is empty")
    return weight_map


def weight_files(path: str, flag: str) -> List[str]:
    """The weight files of checkpoint directory `path`, each checked whole before it is returned.

    Order of precedence, as transformers reads them: model.safetensors, model.safetensors.index.json
    (every shard it names), pytorch_model.bin, pytorch_model.bin.index.json. A shard the index names
    that is missing, truncated, or lacks a tensor the index puts in it raises CheckpointError naming
    every such file; so do shards without an index and a directory without weights.
    """
    def exists(name):
        return os.path.isfile(os.path.join(path, name))

    if exists(SAFE_WEIGHTS):
        safetensors_header(os.path.join(path, SAFE_WEIGHTS))
        return [os.path.join(path, SAFE_WEIGHTS)]
    if exists(SAFE_INDEX):
        return _indexed_files(path, SAFE_INDEX, flag)
    shards = sorted(n for n in os.listdir(path) if SHARD_PATTERN.match(n)) if os.path.isdir(path) else []
    if shards:
        raise CheckpointError(f"{flag} {path!r}: has shards {shards} but no {SAFE_INDEX} to say which "
                              "tensors each holds; copy the index file too")
    if exists(BIN_WEIGHTS):
        check_zip_file(os.path.join(path, BIN_WEIGHTS))
        return [os.path.join(path, BIN_WEIGHTS)]
    if exists(BIN_INDEX):
        return _indexed_files(path, BIN_INDEX, flag)
    raise CheckpointError(f"{flag} {path!r}: no weights ({SAFE_WEIGHTS}, {SAFE_INDEX}, {BIN_WEIGHTS} or "
                          f"{BIN_INDEX})")


def _indexed_files(path: str, index_name: str, flag: str) -> List[str]:
    """Every file an index names: all present (else every missing one named), each whole, each holding
    the tensors the index puts in it (safetensors: read from its header)."""
    weight_map = _read_index(os.path.join(path, index_name), flag)
    by_file: Dict[str, List[str]] = {}
    for key, name in weight_map.items():
        by_file.setdefault(name, []).append(key)
    missing = sorted(name for name in by_file if not os.path.isfile(os.path.join(path, name)))
    if missing:
        raise CheckpointError(f"{flag} {path!r}: {len(missing)} of the {len(by_file)} weight files that "
                              f"{index_name} names are missing: {missing}")
    files = [os.path.join(path, name) for name in sorted(by_file)]
    for file in files:
        if index_name == SAFE_INDEX:
            lacking = sorted(set(by_file[os.path.basename(file)]) - set(safetensors_header(file)))
            if lacking:
                raise CheckpointError(f"{flag} {file}: lacks {len(lacking)} tensor(s) that {index_name} "
                                      f"puts in it, e.g. {lacking[:5]}")
        else:
            check_zip_file(file)
    return files


def load_state_dict(path: str, flag: str) -> Tuple[Dict, List[str]]:
    """(every tensor of checkpoint directory `path`, the files they came from), after weight_files' checks."""
    import torch
    from safetensors.torch import load_file

    files = weight_files(path, flag)
    state: Dict = {}
    for file in files:
        try:
            part = load_file(file) if file.endswith(".safetensors") else \
                torch.load(file, map_location="cpu", weights_only=True)
        except Exception as err:  # noqa: BLE001 - any reader failure is reported with the file's name
            raise CheckpointError(f"{flag} {file}: unreadable ({type(err).__name__}: {err})") from err
        state.update(part)
    return state, files


def check_checkpoint_files(path: str) -> None:
    """Every file of a saved directory (recursively) that can be checked cheaply is whole.

    Weight files through weight_files when the directory has any, every other .safetensors by its
    header, every torch.save file (.pt / .pth / .bin) by its zip directory, every .json by parsing.
    CheckpointError naming the first broken file.
    """
    if not os.path.isfile(os.path.join(path, CONFIG_NAME)) and \
            not os.path.isfile(os.path.join(path, "trainer_state.json")):
        raise CheckpointError(f"{path}: no {CONFIG_NAME} or trainer_state.json (an unfinished save)")
    if any(os.path.isfile(os.path.join(path, n)) for n in (SAFE_INDEX, SAFE_WEIGHTS, BIN_INDEX, BIN_WEIGHTS)):
        weight_files(path, "checkpoint")  # index-driven: a shard the index names but that is missing
    for root, _, names in os.walk(path):
        for name in sorted(names):
            file = os.path.join(root, name)
            if name.endswith(".safetensors"):
                safetensors_header(file)
            elif name.endswith((".pt", ".pth", ".bin")):
                check_zip_file(file)
            elif name.endswith(".json"):
                try:
                    with open(file, encoding="utf-8") as f:
                        json.load(f)
                except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
                    raise CheckpointError(f"{file}: unreadable ({err})") from err


def last_complete_checkpoint(run_dir: str, log=print) -> Optional[str]:
    """The newest `checkpoint-N` in `run_dir` whose files are all whole, or None.

    A newer one that is not (a save killed by a full disk, a truncated copy) is named in one `log` line,
    renamed to `.incomplete-checkpoint-N` (kept for inspection, out of the way of resuming and of
    --save_total_limit) and the previous one is taken, saying so.
    """
    if not os.path.isdir(run_dir):
        return None
    steps = sorted((int(m.group(1)), name) for name in os.listdir(run_dir)
                   if (m := re.fullmatch(CHECKPOINT_PREFIX + r"(\d+)", name))
                   and os.path.isdir(os.path.join(run_dir, name)))
    broken = []
    for _, name in reversed(steps):
        path = os.path.join(run_dir, name)
        try:
            check_checkpoint_files(path)
        except CheckpointError as err:
            aside = os.path.join(run_dir, INCOMPLETE_PREFIX + name)
            if os.path.isdir(aside):  # set aside by an earlier resume: the newer broken copy replaces it
                shutil.rmtree(aside)
            os.replace(path, aside)
            log(f"checkpoint {path} is incomplete and is skipped ({err}); it is kept as {aside}")
            broken.append(name)
            continue
        if broken:
            log(f"resuming from {path}, the newest complete checkpoint (not {', '.join(broken)})")
        return path
    return None
