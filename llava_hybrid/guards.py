"""Run guards of the training entries (SFT and distillation): a run that cannot finish fails before it
loads a model, and a run never goes on, or exits 0, after its numbers stopped meaning anything.

    check_output_dir(dir, need_bytes)     --output_dir can be written and has room for one checkpoint
    checkpoint_bytes(files, trained)      that room, estimated from the weight headers and what trains
    check_resume(checkpoint, run)         a checkpoint is resumed only into the model it was written by
    FiniteGuardMixin                      Trainer mixin: every loss term finite at every step, the
                                          weights finite before every save; else NonFiniteError naming
                                          the step, the terms and the last good checkpoint
    guarded_trainer_class(base)           base with FiniteGuardMixin in front (the SFT entry's trainer)
    preflight_deepspeed_cpu(argv)         DeepSpeed on CPU: no stale lock of a killed JIT build of its
                                          comm op (the build would wait on it forever)

Why the loss check cannot be left to the Trainer: its logged `loss` replaces a non-finite value by the
running mean (`--logging_nan_inf_filter`, on by default), so a NaN run logs plausible numbers, trains
every step and saves NaN weights with exit 0. This module imports nothing from `llava`.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import tempfile
import time
from typing import Callable, Dict, Iterable, Mapping, Optional, Sequence

import torch

from llava_hybrid.checkpoint_files import CHECKPOINT_PREFIX, CONFIG_NAME, safetensors_header
from llava_hybrid.hybrid.plan import layer_pattern

RUN_FILE = "run_plan.json"  # written into every checkpoint-N of a distillation run (DistillTrainer)
GIB = 1024 ** 3


# ---------------------------------------------------------------------------------------------------------
# the output directory


def checkpoint_bytes(files: Sequence[str], trained: Callable[[str], bool], extra_trained: int = 0,
                     width: int = 4, deepspeed: bool = False) -> int:
    """Bytes one checkpoint-N of a model built from weight `files` needs, estimated from their headers (no
    tensor is read): every weight once at `width` bytes, and the optimizer's state for each parameter whose
    name `trained` accepts, plus `extra_trained` parameters the base does not have (new Mamba mixers):
    AdamW's two moments (2 x width), or with DeepSpeed those and an fp32 master copy (12 bytes)."""
    counts: Dict[str, int] = {}
    for file in files:
        if file.endswith(".safetensors"):
            counts.update({k: math.prod(v["shape"]) for k, v in safetensors_header(file).items()})
        else:  # a pickle: its size in fp32 is the best estimate without loading it
            counts[file] = os.path.getsize(file) // 4
    n_trained = extra_trained + sum(n for k, n in counts.items() if trained(k))
    return sum(counts.values()) * width + n_trained * (12 if deepspeed else 2 * width)


def check_output_dir(output_dir: str, need_bytes: int = 0, flag: str = "--output_dir") -> None:
    """ValueError naming `flag` unless `output_dir` can be created, written to, and has `need_bytes` free.

    Written to for real (a temporary file is created and removed), so a read-only mount, a directory of
    another user or a path through a file fail here, and not in the first save after hours of training.
    """
    path = os.path.abspath(output_dir)
    try:
        os.makedirs(path, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=path, prefix=".write-test-"):
            pass
    except OSError as err:
        raise ValueError(f"{flag} {output_dir!r} cannot be written ({type(err).__name__}: {err.strerror or err}); "
                         "pass a directory this user can write to") from err
    free = shutil.disk_usage(path).free
    if free < need_bytes:
        raise ValueError(f"{flag} {output_dir!r} has {free / GIB:.2f} GiB free, but one checkpoint of this run needs "
                         f"about {need_bytes / GIB:.2f} GiB (weights + optimizer state); free some space or pass "
                         "another directory")


# ---------------------------------------------------------------------------------------------------------
# resuming


def write_run_plan(checkpoint_dir: str, run: Mapping) -> None:
    """Record what defines the trained model (`run`: JSON-able) inside a checkpoint being written."""
    with open(os.path.join(checkpoint_dir, RUN_FILE), "w", encoding="utf-8") as f:
        json.dump(dict(run), f, indent=1, sort_keys=True)


def checkpoint_run_plan(checkpoint: str, keys: Iterable[str]) -> Dict:
    """What defines the model of `checkpoint`: its run_plan.json, completed from its config.json."""
    plan: Dict = {}
    for name in (CONFIG_NAME, RUN_FILE):
        file = os.path.join(checkpoint, name)
        if os.path.isfile(file):
            with open(file, encoding="utf-8") as f:
                plan.update({k: v for k, v in json.load(f).items() if k in keys})
    return plan


def check_resume(checkpoint: str, run: Mapping) -> None:
    """ValueError when `checkpoint` was written by a different model than this run's `run` describes.

    run: the settings that define the model (e.g. mamba_layers, num_hidden_layers, trainable), compared
    key by key with what the checkpoint recorded; both values are named for every difference.
    """
    saved = checkpoint_run_plan(checkpoint, set(run) | {"num_hidden_layers"})
    differ = {k: (saved[k], run[k]) for k in run if k in saved and _normal(saved[k]) != _normal(run[k])}
    if differ:
        def show(value, key, plan):
            if key == "mamba_layers" and "num_hidden_layers" in plan:  # with the pattern the run printed first
                return f"{value} ({layer_pattern(plan['num_hidden_layers'], value)})"
            return repr(value)

        listed = "; ".join(f"{k}: checkpoint {show(a, k, saved)}, this run {show(b, k, run)}"
                           for k, (a, b) in differ.items())
        raise ValueError(f"--output_dir holds {checkpoint}, written by a different model ({listed}); its weights and "
                         "optimizer state would be loaded into this run's model. Start this run in a new "
                         "--output_dir, or repeat the flags of the run that wrote it")


def _normal(value):
    return [_normal(v) for v in value] if isinstance(value, (list, tuple)) else value


# ---------------------------------------------------------------------------------------------------------
# finite losses and weights


class NonFiniteError(RuntimeError):
    """A loss term or a weight stopped being finite; the message names the step and what to resume from."""


def newest_checkpoint(run_dir: str) -> Optional[str]:
    """The newest `checkpoint-N` directory of `run_dir` (every one is whole: they are published atomically)."""
    if not os.path.isdir(run_dir):
        return None
    steps = [(int(n[len(CHECKPOINT_PREFIX):]), n) for n in os.listdir(run_dir)
             if n.startswith(CHECKPOINT_PREFIX) and n[len(CHECKPOINT_PREFIX):].isdigit()]
    return os.path.join(run_dir, max(steps)[1]) if steps else None


def non_finite_parameters(model: torch.nn.Module, trainable_only: bool = True) -> list:
    """Names of the (trainable) parameters holding a NaN or an infinity (a ZeRO-3 shard: its local part)."""
    bad = []
    for name, p in model.named_parameters():
        if trainable_only and not p.requires_grad:
            continue
        data = getattr(p, "ds_tensor", None) if p.numel() == 0 else p.detach()
        if data is not None and data.numel() and not bool(torch.isfinite(data).all()):
            bad.append(name)
    return bad


class FiniteGuardMixin:
    """Trainer mixin (listed before the Trainer class): stop at the first non-finite loss term or weight.

    `check_finite_loss(terms)` is called by compute_loss with every loss term of the step (all ranks agree
    through one all-reduce under torch.distributed); a non-finite one raises NonFiniteError before the
    backward pass, naming the step, every term's value and the last good checkpoint. Before every
    checkpoint-N the trainable weights are checked too (a step can turn them non-finite with a finite
    loss), and `check_finite_weights()` is what the entries call before the final save.
    """

    resumed_from: Optional[str] = None  # set by the entry: the checkpoint this run continued from

    def last_good_checkpoint(self) -> str:
        newest = newest_checkpoint(self.args.output_dir) or self.resumed_from
        return newest or "none (no checkpoint was written; a rerun starts from the beginning)"

    def check_finite_loss(self, terms: Mapping[str, torch.Tensor]) -> None:
        values = {k: v.detach().float() for k, v in terms.items()}
        finite = torch.stack([torch.isfinite(v).all() for v in values.values()]).all()
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            flag = finite.to(torch.int32).to(next(iter(values.values())).device)
            torch.distributed.all_reduce(flag, op=torch.distributed.ReduceOp.MIN)  # a NaN on any rank stops all
            finite = flag.bool()
        if bool(finite):
            return
        step = self.state.global_step + 1
        shown = ", ".join(f"{k} = {float(v):.6g}" for k, v in values.items())
        bad = [k for k, v in values.items() if not bool(torch.isfinite(v).all())] or ["(on another rank)"]
        raise NonFiniteError(
            f"step {step}: non-finite loss ({', '.join(bad)}): {shown}. Training stopped before this step's "
            f"update; nothing after step {step - 1} is saved. Last good checkpoint (finite weights): "
            f"{self.last_good_checkpoint()}. Lower --learning_rate (or check this step's batch) and resume from "
            "it, or from an earlier one if it fails the same way")

    def check_finite_weights(self, model: Optional[torch.nn.Module] = None) -> None:
        model = self.model if model is None else model
        bad = non_finite_parameters(model)
        if bad:
            raise NonFiniteError(
                f"after step {self.state.global_step}: {len(bad)} trained parameters are not finite (e.g. "
                f"{bad[:3]}); they are not saved. Last good checkpoint (finite weights): "
                f"{self.last_good_checkpoint()}. Lower --learning_rate and resume from it")

    def compute_loss(self, model, inputs, return_outputs=False, **kwargs):
        """The base's loss, checked (a trainer with several loss terms overrides this and checks each)."""
        out = super().compute_loss(model, inputs, return_outputs=return_outputs, **kwargs)
        self.check_finite_loss({"loss": out[0] if return_outputs else out})
        return out

    def _save_checkpoint(self, model, trial, *args, **kwargs) -> None:
        self.check_finite_weights()
        super()._save_checkpoint(model, trial, *args, **kwargs)


_GUARDED: Dict[type, type] = {}


def guarded_trainer_class(base: type) -> type:
    """`base` (a Trainer class) with FiniteGuardMixin in front, made once per base."""
    if base not in _GUARDED:
        _GUARDED[base] = type(f"Guarded{base.__name__}", (FiniteGuardMixin, base), {})
    return _GUARDED[base]


# ---------------------------------------------------------------------------------------------------------
# DeepSpeed's JIT-built ops on CPU

# A build of DeepSpeed's CPU comm op takes 1-4 min on the 2-core CI machine: a lock older than this has no
# build behind it any more.
STALE_BUILD_LOCK_S = 20 * 60


class StaleBuildLockError(RuntimeError):
    """A killed JIT build left its lock file: the next build of that op would wait on it forever."""


def deepspeed_cpu_ops() -> tuple:
    """The ops DeepSpeed JIT-builds when it starts on a CPU accelerator (deepspeed.comm.torch.build_shm_op,
    called by deepspeed.init_distributed)."""
    from deepspeed.ops.op_builder.cpu import ShareMemCommBuilder

    return (ShareMemCommBuilder.NAME,)


def extension_lock(name: str) -> str:
    """The lock file torch.utils.cpp_extension holds (FileBaton) while it builds extension `name`:
    <TORCH_EXTENSIONS_DIR>/<name>/lock, or <default build root>/py311_cpu/<name>/lock without it (the
    directory as torch computes it, which also creates it, as the build would)."""
    from torch.utils.cpp_extension import _get_build_directory

    return os.path.join(_get_build_directory(name, verbose=False), "lock")


def check_build_locks(names: Iterable[str], max_age_s: float = STALE_BUILD_LOCK_S) -> None:
    """StaleBuildLockError naming the lock file of any extension in `names` whose lock is older than
    `max_age_s`. torch waits, without a timeout, for a lock to disappear; one left by a build that was
    killed never does. A younger lock is a build in progress: torch waits for it, and so do we."""
    for name in names:
        lock = extension_lock(name)
        try:
            age = time.time() - os.stat(lock).st_mtime
        except FileNotFoundError:
            continue
        if age > max_age_s:
            raise StaleBuildLockError(
                f"{lock} is {age / 60:.0f} min old: a build of DeepSpeed's {name} op (JIT-compiled through "
                "torch.utils.cpp_extension when DeepSpeed starts on CPU) was killed and left its lock: a build "
                f"takes a few minutes, no lock of a running one is older than {max_age_s / 60:.0f}, and this run "
                f"would wait on it forever. Delete it once no build is running (no compiler of {name} in `ps`): "
                f"rm {lock}")


def deepspeed_on_cpu(argv: Sequence[str]) -> bool:
    """Whether a training command line starts DeepSpeed on a CPU: --deepspeed, with --use_cpu or no CUDA.
    Read from the raw argv: on transformers 4.x, parsing the flags (TrainingArguments) is what starts
    DeepSpeed's comm backend under the launcher, and so the build."""
    parser = argparse.ArgumentParser(add_help=False)
    parser.add_argument("--deepspeed")
    parser.add_argument("--use_cpu", nargs="?", const="true", default="false")
    known, _ = parser.parse_known_args(list(argv))
    if not known.deepspeed:
        return False
    return str(known.use_cpu).lower() in ("true", "t", "yes", "y", "1") or not torch.cuda.is_available()


def preflight_deepspeed_cpu(argv: Sequence[str]) -> None:
    """Called by the training entries before they parse their flags: a DeepSpeed run on CPU fails at once,
    naming the file, if a killed build of DeepSpeed's comm op left its lock (check_build_locks)."""
    if deepspeed_on_cpu(argv):
        check_build_locks(deepspeed_cpu_ops())
