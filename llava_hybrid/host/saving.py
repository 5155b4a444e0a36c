"""The one save path: every checkpoint this project writes goes through here.

    save_llava_checkpoint(model, out_dir, tokenizer)   a LLaVA model of ours -> a self-contained checkpoint
                                                       (`save_pretrained` of every LLaVA class of ours, the
                                                       converters, hence the Trainer's saves of our models)
    AtomicCheckpointMixin                              the SFT and distillation trainers' `checkpoint-N`
    save_final_model(trainer, model, tokenizer, dir)   their final save into --output_dir

What every one of them guarantees:
  1. atomic: files are written into a temporary directory (`.tmp-*`, never read as a checkpoint) and
     moved into place only when all of them are there. A new directory is renamed into place in one
     step; into an existing one (--output_dir with trainer files) every file is moved with config.json
     last, so a directory holding config.json is complete (checkpoint_files reads it that way).
  2. lane-portable: the SigLIP tower's weights keep the hub names `vision_model.*` (transformers 4.x reads
     only those, 5.x reads both), and tokenizer.json's BPE merges are written in the string form that
     tokenizers 0.15 (lane 4) and >= 0.20 (lane 5) both read. A checkpoint written on either lane loads
     on the other with the same weights.

Layout written: <out_dir>/config.json (mm_vision_tower "vision_tower", resolved against the checkpoint),
weights without `model.vision_tower.*`, tokenizer files, <out_dir>/vision_tower/ (tower config, weights,
preprocessor_config.json).
"""
from __future__ import annotations

import json
import os
import shutil
from contextlib import contextmanager
from typing import Dict, Optional, Tuple

from llava_hybrid.checkpoint_files import CONFIG_NAME, CheckpointError, is_weight_file
from llava_hybrid.compat import rotate_checkpoints

TOWER_SUBDIR = "vision_tower"
TOWER_PREFIX = "model.vision_tower.vision_tower."
SIGLIP_HUB_PREFIX = "vision_model."
TMP_PREFIX = ".tmp-"  # unfinished saves: never a checkpoint, removed by the next save of the same directory


# ---------------------------------------------------------------------------------------------------------
# atomic directories


@contextmanager
def atomic_directory(dst: str, *, replace: bool = False):
    """Yield a temporary directory to write checkpoint `dst` into; publish it when the block ends cleanly.

    dst missing or empty (or `replace`: an old dst is dropped): the temporary directory is a sibling
    `.tmp-<name>`, renamed to dst in one step. dst an existing non-empty directory: the temporary
    directory is `<dst>/.tmp-save` and its files are moved into dst with config.json last (dst's old
    config.json is removed first). On an exception the temporary directory is removed and dst is left
    as it was.
    """
    dst = os.path.abspath(dst)
    if os.path.exists(dst) and not os.path.isdir(dst):
        raise CheckpointError(f"{dst}: exists and is not a directory")
    inside = not replace and os.path.isdir(dst) and any(not n.startswith(TMP_PREFIX) for n in os.listdir(dst))
    tmp = os.path.join(dst, TMP_PREFIX + "save") if inside else \
        os.path.join(os.path.dirname(dst), TMP_PREFIX + os.path.basename(dst))
    shutil.rmtree(tmp, ignore_errors=True)  # a killed earlier save of the same directory
    os.makedirs(tmp)
    try:
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    publish(tmp, dst)


def publish(tmp: str, dst: str) -> None:
    """Make tokenizer files portable, flush every file, and move finished `tmp` into place as `dst`.

    tmp inside dst: each entry replaces dst's, config.json last. Otherwise tmp replaces dst whole (an
    existing dst is first renamed aside and removed after the rename).
    """
    make_tokenizer_json_portable(tmp)
    _fsync_tree(tmp)
    if os.path.dirname(tmp) == dst:
        config = os.path.join(dst, CONFIG_NAME)
        if os.path.exists(config):
            os.remove(config)  # from here until the last move dst reads as incomplete
        new = set(os.listdir(tmp))
        for name in os.listdir(dst):  # weights of an older save in another layout (shards vs one file)
            if name not in new and is_weight_file(name):
                os.remove(os.path.join(dst, name))
        names = sorted(os.listdir(tmp), key=lambda n: n == CONFIG_NAME)
        for name in names:
            target = os.path.join(dst, name)
            if os.path.isdir(target) and not os.path.islink(target):
                shutil.rmtree(target)
            os.replace(os.path.join(tmp, name), target)
        os.rmdir(tmp)
        return
    old = None
    if os.path.isdir(dst):
        if os.listdir(dst):
            old = os.path.join(os.path.dirname(dst), TMP_PREFIX + "old-" + os.path.basename(dst))
            shutil.rmtree(old, ignore_errors=True)
            os.replace(dst, old)
        else:
            os.rmdir(dst)
    os.replace(tmp, dst)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def _fsync_tree(root: str) -> None:
    # the data is on disk before the rename that makes it visible (a power cut cannot expose a hole)
    for folder, _, names in os.walk(root):
        for name in names:
            fd = os.open(os.path.join(folder, name), os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)


def remove_unfinished_saves(directory: str) -> None:
    """Delete the `.tmp-*` leftovers of saves killed half-way in `directory` (a run's output dir)."""
    if os.path.isdir(directory):
        for name in os.listdir(directory):
            if name.startswith(TMP_PREFIX):
                shutil.rmtree(os.path.join(directory, name), ignore_errors=True)


# ---------------------------------------------------------------------------------------------------------
# lane-portable files


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


def hub_tower_names(state: Dict) -> Dict:
    """A SigLIP vision model's state dict with the hub's `vision_model.*` names (5.x leaves that level out)."""
    return {k if k.startswith(SIGLIP_HUB_PREFIX) else SIGLIP_HUB_PREFIX + k: v for k, v in state.items()}


def save_siglip_model(model, tower_dir: str, state_dict=None) -> None:
    """SiglipVisionModel.save_pretrained with the hub's `vision_model.*` weight names on every lane.

    transformers 5 names the weights `embeddings.*` / `encoder.*` and reads both layouts; 4.x knows only
    `vision_model.*` and would silently start a 5.x-saved tower from random weights.
    """
    if getattr(model.config, "model_type", "") != "siglip_vision_model":
        model.save_pretrained(tower_dir, state_dict=state_dict)  # e.g. LLaVA's CLIP tower: as it is
        return
    model.save_pretrained(tower_dir, state_dict=hub_tower_names(state_dict if state_dict is not None
                                                                 else model.state_dict()))


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


# ---------------------------------------------------------------------------------------------------------
# the one save path


def save_llava_checkpoint(model, out_dir: str, tokenizer=None, *, state_dict=None, is_main_process: bool = True,
                          tower: Optional[Tuple] = None, extra_files: Optional[Dict[str, str]] = None,
                          **save_kwargs) -> str:
    """The one way to save a LLaVA model of ours: a checkpoint directory that loads on its own, on both lanes.

    1. the tower -> `<out_dir>/vision_tower`: the model's own (save_vision_tower), or `tower` = (a
       SiglipVisionModel, its image processor) for a model built without one (the converters);
    2. weights without `model.vision_tower.*` (LLaVA delay-loads the tower from `mm_vision_tower`) and
       the config with mm_vision_tower = "vision_tower" (the in-memory config is left as it was), by
       transformers' PreTrainedModel.save_pretrained (`save_kwargs` go to it);
    3. the tokenizer when given, and `extra_files` (name in the checkpoint -> source file) copied;
    4. all of it published atomically (atomic_directory), tokenizer.json made portable.
    Only the main process writes (`is_main_process`). Every LLaVA class of ours calls this from
    `save_pretrained` (LlavaLMMixin), so `model.save_pretrained(d)` reloads through load_pretrained_model.
    """
    from transformers import PreTrainedModel

    if not is_main_process:
        return out_dir
    own_tower = model.get_vision_tower()
    with atomic_directory(out_dir) as tmp:
        if own_tower is None and tower is None:
            PreTrainedModel.save_pretrained(model, tmp, state_dict=state_dict, **save_kwargs)
        else:
            if tower is not None:
                tower_model, processor = tower
                save_siglip_model(tower_model, os.path.join(tmp, TOWER_SUBDIR))
                processor.save_pretrained(os.path.join(tmp, TOWER_SUBDIR))
            else:
                save_vision_tower(own_tower, model.config, tmp, state_dict)
            state_dict = model.state_dict() if state_dict is None else state_dict
            state_dict = {k: v for k, v in state_dict.items() if not k.startswith("model.vision_tower.")}
            original = getattr(model.config, "mm_vision_tower", None)
            model.config.mm_vision_tower = TOWER_SUBDIR
            try:
                PreTrainedModel.save_pretrained(model, tmp, state_dict=state_dict, **save_kwargs)
            finally:
                model.config.mm_vision_tower = original
        if tokenizer is not None:
            tokenizer.save_pretrained(tmp)
        for name, source in (extra_files or {}).items():
            shutil.copyfile(source, os.path.join(tmp, name))
    return out_dir


@contextmanager
def final_save(trainer, output_dir: str):
    """A trainer's final save into --output_dir, atomic: yields the directory to write into (all ranks).

    Every rank writes into `<output_dir>/.tmp-save` (ZeRO-3 gathers need all of them); the main process
    then publishes it into output_dir with config.json last.
    """
    tmp = os.path.join(os.path.abspath(output_dir), TMP_PREFIX + "save")
    if trainer.args.should_save:
        shutil.rmtree(tmp, ignore_errors=True)
        os.makedirs(tmp)
    trainer.accelerator.wait_for_everyone()
    try:
        yield tmp
    except BaseException:
        if trainer.args.should_save:
            shutil.rmtree(tmp, ignore_errors=True)
        raise
    trainer.accelerator.wait_for_everyone()
    if trainer.args.should_save:
        publish(tmp, os.path.abspath(output_dir))
    trainer.accelerator.wait_for_everyone()


def save_final_model(trainer, model, tokenizer, output_dir: str) -> None:
    """A trained model's final save into --output_dir (SFT and distillation; call on every rank).

    LLaVA's own trainer save (`safe_save_model_for_hf_trainer`: the projector alone for
    --tune_mm_mlp_adapter, ZeRO-3 weights gathered, else the model through its `save_pretrained`, which
    for our classes is save_llava_checkpoint) and the tokenizer, inside `final_save` (atomic). A model
    whose `save_pretrained` is not ours (LLaVA's LlavaLlamaForCausalLM) gets its tower written the same
    way (save_vision_tower) when it was trained or is named relative to the checkpoint, and its saved
    config points at it.
    """
    import copy

    from llava.train.train import safe_save_model_for_hf_trainer

    model.config.use_cache = True
    with final_save(trainer, output_dir) as tmp:
        safe_save_model_for_hf_trainer(trainer=trainer, output_dir=tmp)
        if not trainer.args.should_save:
            return
        tokenizer.save_pretrained(tmp)
        config = model.config
        tower_name = getattr(config, "mm_vision_tower", None)
        written = os.path.isfile(os.path.join(tmp, TOWER_SUBDIR, CONFIG_NAME))
        if tower_name and not written and (getattr(config, "unfreeze_mm_vision_tower", False)
                                           or not os.path.isabs(str(tower_name))):
            save_vision_tower(model.get_vision_tower(), config, tmp)
            saved = copy.deepcopy(config)
            saved.mm_vision_tower = TOWER_SUBDIR
            saved.save_pretrained(tmp)


class AtomicCheckpointMixin:
    """Trainer mixin (listed before the Trainer class): `checkpoint-N` directories appear only when whole.

    The Trainer writes checkpoint-N (model, tokenizer, optimizer, scheduler, RNG and trainer state) into
    `<run_dir>/.tmp-checkpoint-N/` on every rank; the main process then publishes it as
    `<run_dir>/checkpoint-N` and applies --save_total_limit. `_write_checkpoint` is the Trainer's own
    checkpoint writer (override it to pick a different base's).
    """

    def _get_output_dir(self, trial) -> str:
        return getattr(self, "_tmp_run_dir", None) or super()._get_output_dir(trial)

    def _write_checkpoint(self, model, trial) -> None:
        super()._save_checkpoint(model, trial)

    def _save_checkpoint(self, model, trial, *args, **kwargs) -> None:
        from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR

        run_dir = super()._get_output_dir(trial)
        name = f"{PREFIX_CHECKPOINT_DIR}-{self.state.global_step}"
        tmp_root = os.path.join(run_dir, TMP_PREFIX + name)
        self._tmp_run_dir = tmp_root
        try:
            self._write_checkpoint(model, trial)
        finally:
            self._tmp_run_dir = None
        self.accelerator.wait_for_everyone()
        if self.args.should_save:
            publish(os.path.join(tmp_root, name), os.path.join(run_dir, name))
            shutil.rmtree(tmp_root, ignore_errors=True)
            rotate_checkpoints(self, run_dir)  # --save_total_limit
        self.accelerator.wait_for_everyone()


_ATOMIC_CLASSES: Dict[type, type] = {}


def atomic_trainer_class(base: type) -> type:
    """`base` (a Trainer class) with AtomicCheckpointMixin in front, made once per base."""
    if base not in _ATOMIC_CLASSES:
        _ATOMIC_CLASSES[base] = type(f"Atomic{base.__name__}", (AtomicCheckpointMixin, base), {})
    return _ATOMIC_CLASSES[base]
