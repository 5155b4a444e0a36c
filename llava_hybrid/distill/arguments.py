"""Flags of `scripts/distill_hybrid.py`: LLaVA's three dataclasses plus the hybrid / distillation flags.

Paper defaults (MaTVLM section 4.1): alpha = beta = 1, gamma = 0, T = 1, AdamW betas (0.9, 0.95),
weight decay 0.01 (not on dt_bias / A_log / D / norms / biases), lr 2e-4, WSD with 10 % warmup and
10 % decay; only the Mamba-2 layers and the connector train.

Every user error is found by `validate()` before any model is loaded, as a ValueError naming the
flag or file.
"""
from __future__ import annotations

import functools
import os
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Tuple

import transformers

from llava_hybrid.distill.flags import DistillFlags
from llava_hybrid.distill.losses import LAYER_NORMS, TOKEN_COVERAGES
from llava_hybrid.distill.schedule import DECAY_SHAPES
from llava_hybrid.host.data import validate_data
from llava_hybrid.host.training import lazy_attributes, llava_train, publish

# --trainable parts -> substrings of parameter names (HF names, see docs/design.md)
TRAINABLE_PARTS = {
    "mamba": (".mamba.",),
    "mm_projector": ("mm_projector.",),
    "mlp": (".mlp.",),
    "attention": (".self_attn.",),
    "norms": ("layernorm", ".norm.", "model.norm"),
    "embed_tokens": ("embed_tokens.",),
    "lm_head": ("lm_head.",),
}


ARGUMENT_CLASSES = ("ModelArguments", "DataArguments", "TrainingArguments")


@functools.lru_cache(maxsize=None)
def argument_classes() -> tuple:
    """(ModelArguments, DataArguments, TrainingArguments): LLaVA's three flag dataclasses plus the hybrid
    and distillation flags, built on first use (they subclass llava.train.train's, see host.training)
    and then also this module's attributes of the same names."""
    base = llava_train()

    @dataclass
    class ModelArguments(base.ModelArguments):
        """LLaVA's model flags plus the hybrid layer plan and the teacher."""

        version: Optional[str] = field(default="phi", metadata={"help": "conversation template (phi for Phi-2 VLMs)"})
        teacher_model_name_or_path: Optional[str] = field(
            default=None, metadata={"help": "teacher VLM (default: --model_name_or_path)"})
        mm_hybrid_ratio: Optional[float] = field(
            default=None, metadata={"help": "fraction of decoder layers made Mamba-2, e.g. 0.25"})
        mm_hybrid_positions: str = field(default="even", metadata={"help": "even | begin | middle | end"})
        mm_hybrid_layers: Optional[str] = field(
            default=None, metadata={"help": "explicit Mamba layer indices '0,6,12,18' (wins over the ratio)"})
        init_from_attention: bool = field(
            default=True, metadata={"help": "Eq. 6: x<-W_V, B<-W_K, C<-W_Q (False: Mamba2 default init)"})
        mamba_init: Optional[str] = field(
            default=None, metadata={"help": "Mamba mixer init: attention (Eq. 6 as the paper specifies it) | random | "
                                            "attention_neutral | attention_calibrated (hybrid/init.py; the last two fit "
                                            "on the teacher's activations over the first training samples); default "
                                            "attention, or random with --init_from_attention False"})
        mamba_carry_bias: bool = field(default=False, metadata={"help": "copy q/k/v/dense biases into Mamba"})
        mamba_chunk_size: Optional[int] = field(default=None, metadata={"help": "SSD chunk size (default: config's)"})
        trainable: str = field(
            default="mamba,mm_projector",
            metadata={"help": f"comma list of trained parts of the student: {', '.join(TRAINABLE_PARTS)}"})

    @dataclass
    class DataArguments(base.DataArguments):
        """LLaVA's data flags (LLaVA JSON conversations + --image_folder)."""

    @dataclass
    class TrainingArguments(DistillFlags, base.TrainingArguments):
        """LLaVA's training flags with the paper's optimiser defaults and the distillation flags (DistillFlags)."""

    return publish(__name__, ModelArguments, DataArguments, TrainingArguments)


__getattr__ = lazy_attributes(__name__, ARGUMENT_CLASSES, argument_classes)  # e.g. arguments.TrainingArguments


# config.json model_type of the VLMs a student can be distilled from (a LLaVA model with a vision tower):
# this project's Phi VLMs, and LLaVA's own LLaVA-1.5 (Llama / Vicuna) checkpoints
TEACHER_MODEL_TYPES = ("llava_phi", "tiny_llava_phi", "llava", "llava_llama")


@dataclass
class DistillPlan:
    """What validation resolved: real paths, the Mamba layer indices, and what defines the student.

    run_plan: the settings a checkpoint of this run must have been written with to be resumed
    (guards.check_resume); checkpoint_bytes: the estimated size of one checkpoint-N.
    """

    model_path: str
    teacher_path: str
    num_layers: int
    mamba_layers: List[int]
    trainable: List[str]
    run_plan: Dict = field(default_factory=dict)
    checkpoint_bytes: int = 0
    samples: List[dict] = field(default_factory=list)


def parse_args(argv: Optional[List[str]] = None) -> Tuple[ModelArguments, DataArguments, TrainingArguments]:
    """Parse the command line (argv None -> sys.argv[1:]) into the three dataclasses."""
    parser = transformers.HfArgumentParser(argument_classes())
    return parser.parse_args_into_dataclasses(args=argv)


def resolve_model_path(path: str, flag: str) -> str:
    """A local directory, or the `tinyllava` alias through the host's resolver (ValueError naming flag)."""
    from llava_hybrid.host.aliases import resolve_model_path as resolve

    if not path:
        raise ValueError(f"{flag} is required")
    return resolve(path, flag=flag)


def _read_config(path: str, flag: str) -> dict:
    """config.json through the one checked reader; a checkpoint that needs remote code is refused."""
    from llava_hybrid.checkpoint_files import read_config, refuse_remote_code
    from llava_hybrid.host.builder import known_model_types

    config = read_config(path, flag)
    refuse_remote_code(config, path, flag, known_model_types=known_model_types())
    return config


def _check_vlm(config: dict, path: str, flag: str) -> None:
    """A LLaVA VLM of a supported model type, with a vision tower and whole weight files."""
    from llava_hybrid.checkpoint_files import weight_files

    model_type = config.get("model_type")
    if model_type not in TEACHER_MODEL_TYPES or not config.get("mm_vision_tower"):
        what = f"model_type {model_type!r}" + ("" if config.get("mm_vision_tower") else ", no mm_vision_tower")
        raise ValueError(f"{flag} {path!r} is not a LLaVA vision-language model ({what}); distillation needs one "
                         f"of model_type {', '.join(TEACHER_MODEL_TYPES)} with a vision tower (a TinyLLaVA_Factory "
                         "checkpoint: convert it first with scripts/convert_tinyllava_factory.py)")
    weight_files(path, flag)  # a directory with a config but missing or truncated weights, named


def _check_pairing(config: dict, teacher_config: dict, mamba_layers: List[int], alpha: float) -> None:
    """L_layer pairs student layer l with teacher layer l: same depth and width when alpha > 0."""
    if alpha <= 0:
        return
    for key, what in (("num_hidden_layers", "decoder layers"), ("hidden_size", "hidden size")):
        if config.get(key) != teacher_config.get(key):
            raise ValueError(f"--model_name_or_path has {config.get(key)} {what} but --teacher_model_name_or_path "
                             f"{teacher_config.get(key)}: L_layer (--distill_alpha {alpha}) compares each Mamba "
                             f"layer {mamba_layers} with the teacher's layer of the same index and width; pass a "
                             "student of the teacher's shape, or --distill_alpha 0")


def _checkpoint_bytes(model_path: str, config: dict, mamba_layers: List[int], parts: List[str],
                      carry_bias: bool, training_args) -> int:
    """One checkpoint-N of the student (guards.checkpoint_bytes): the base's weights and tower, the trained
    parts' optimizer state, the new Mamba mixers counted from their dimensions."""
    import types

    from llava_hybrid.checkpoint_files import weight_files
    from llava_hybrid.guards import checkpoint_bytes
    from llava_hybrid.hybrid.configuration import mamba_dims
    from llava_hybrid.host.siglip import resolve_tower_path

    files = weight_files(model_path, "--model_name_or_path")
    tower = resolve_tower_path(str(config.get("mm_vision_tower")), types.SimpleNamespace(name_or_path=model_path))
    if os.path.isdir(tower) and os.path.abspath(tower) != os.path.abspath(model_path):
        files = files + weight_files(tower, "--model_name_or_path (its vision tower)")
    patterns = tuple(p for part in parts if part != "mamba" for p in TRAINABLE_PARTS[part])
    mixers = len(mamba_layers) * mamba_dims(types.SimpleNamespace(**config)).param_count(bias=carry_bias) \
        if "mamba" in parts else 0
    return checkpoint_bytes(files, lambda k: "vision_tower" not in k and any(p in k for p in patterns), mixers,
                            width=2 if (training_args.bf16 or training_args.fp16) else 4,
                            deepspeed=bool(training_args.deepspeed))


def _check_data(data_args: DataArguments) -> List[dict]:
    """--data_path / --image_folder: the same checks as the SFT entry (one implementation); the samples."""
    return validate_data(data_args.data_path, data_args.image_folder)


def _check_tokenizers(model_path: str, teacher_path: str, version: str) -> None:
    """The data's template (--version) is the teacher's (the same check as the SFT entry's, plus: its stop
    string is the teacher's eos); student (from --model_name_or_path) and teacher share one vocabulary."""
    from llava_hybrid.host.conversation import check_conv_mode

    tok_t = transformers.AutoTokenizer.from_pretrained(teacher_path, trust_remote_code=False)
    check_conv_mode(version, tok_t, trained_model=True)
    if os.path.realpath(teacher_path) == os.path.realpath(model_path):
        return
    tok_s = transformers.AutoTokenizer.from_pretrained(model_path, trust_remote_code=False)
    same = tok_s.get_vocab() == tok_t.get_vocab() and all(
        getattr(tok_s, a) == getattr(tok_t, a) for a in ("eos_token_id", "bos_token_id", "pad_token_id"))
    if not same:
        raise ValueError(f"--teacher_model_name_or_path {teacher_path!r} has a different tokenizer from "
                         f"--model_name_or_path {model_path!r} (vocabulary or special tokens differ): the "
                         "distillation losses compare logits token by token")


def validate(model_args: ModelArguments, data_args: DataArguments,
             training_args: TrainingArguments) -> DistillPlan:
    """Every check on user input, before any model is loaded. Returns the resolved plan."""
    from llava_hybrid.hybrid.plan import plan_mamba_layers

    ta = training_args
    # 1. the loss
    weights = (ta.distill_alpha, ta.distill_beta, ta.distill_gamma)
    if any(w < 0 for w in weights):
        raise ValueError(f"--distill_alpha/--distill_beta/--distill_gamma must be >= 0, got {weights}")
    if not any(w > 0 for w in weights):
        raise ValueError("--distill_alpha, --distill_beta and --distill_gamma are all zero: nothing to train")
    if ta.distill_temperature <= 0:
        raise ValueError(f"--distill_temperature must be > 0, got {ta.distill_temperature}")
    if ta.distill_layer_norm not in LAYER_NORMS:
        raise ValueError(f"--distill_layer_norm must be one of {LAYER_NORMS}, got {ta.distill_layer_norm!r}")
    if ta.distill_tokens not in TOKEN_COVERAGES:
        raise ValueError(f"--distill_tokens must be one of {TOKEN_COVERAGES}, got {ta.distill_tokens!r}")
    if ta.wsd_decay_shape not in DECAY_SHAPES:
        raise ValueError(f"--wsd_decay_shape must be one of {DECAY_SHAPES}, got {ta.wsd_decay_shape!r}")
    if ta.wsd_warmup_fraction < 0 or ta.wsd_decay_fraction < 0 or \
            ta.wsd_warmup_fraction + ta.wsd_decay_fraction > 1:
        raise ValueError("--wsd_warmup_fraction and --wsd_decay_fraction must be >= 0 and sum to <= 1, got "
                         f"{ta.wsd_warmup_fraction} and {ta.wsd_decay_fraction}")
    # 2. trained parts
    parts = [p.strip() for p in model_args.trainable.split(",") if p.strip()]
    unknown = [p for p in parts if p not in TRAINABLE_PARTS]
    if not parts or unknown:
        raise ValueError(f"--trainable {model_args.trainable!r}: unknown parts {unknown}; choose from "
                         f"{', '.join(TRAINABLE_PARTS)}")
    if model_args.mamba_init is not None:
        from llava_hybrid.hybrid.init import INIT_CHOICES

        if model_args.mamba_init not in INIT_CHOICES:
            raise ValueError(f"--mamba_init {model_args.mamba_init!r}: choose from {', '.join(INIT_CHOICES)}")
        if not model_args.init_from_attention and model_args.mamba_init != "random":
            raise ValueError(f"--mamba_init {model_args.mamba_init!r} contradicts --init_from_attention False "
                             "(which means random); pass one of them")
    if model_args.mamba_chunk_size is not None and model_args.mamba_chunk_size <= 0:
        raise ValueError(f"--mamba_chunk_size must be > 0, got {model_args.mamba_chunk_size}")
    # 3. checkpoints and the layer plan
    model_path = resolve_model_path(model_args.model_name_or_path, "--model_name_or_path")
    config = _read_config(model_path, "--model_name_or_path")
    teacher_arg = model_args.teacher_model_name_or_path or model_args.model_name_or_path
    teacher_path = resolve_model_path(teacher_arg, "--teacher_model_name_or_path")
    teacher_config = _read_config(teacher_path, "--teacher_model_name_or_path")
    _check_vlm(config, model_path, "--model_name_or_path")
    _check_vlm(teacher_config, teacher_path, "--teacher_model_name_or_path")
    if teacher_config.get("mamba_layers"):
        raise ValueError(f"--teacher_model_name_or_path {teacher_path!r} is a hybrid checkpoint "
                         f"(mamba_layers {teacher_config['mamba_layers']}); the teacher must be all-attention")
    num_layers = int(config["num_hidden_layers"])
    if config.get("mamba_layers"):
        raise ValueError(f"--model_name_or_path {model_path!r} is already a hybrid checkpoint; to continue a "
                         "distillation run, start the same command again with the same --output_dir")
    mamba_layers = plan_mamba_layers(num_layers, ratio=model_args.mm_hybrid_ratio,
                                     positions=model_args.mm_hybrid_positions, layers=model_args.mm_hybrid_layers)
    if not mamba_layers:
        raise ValueError("the layer plan has no Mamba layer: pass --mm_hybrid_ratio (e.g. 0.25) or a non-empty "
                         "--mm_hybrid_layers")
    _check_pairing(config, teacher_config, mamba_layers, ta.distill_alpha)
    # 4. data, then the template and tokenizers (cheap: no weights)
    samples = _check_data(data_args)
    _check_tokenizers(model_path, teacher_path, model_args.version)
    # 5. where the checkpoints go: writable, with room for one
    from llava_hybrid.guards import check_output_dir

    need = _checkpoint_bytes(model_path, config, mamba_layers, parts, model_args.mamba_carry_bias, ta)
    check_output_dir(ta.output_dir, need)
    run_plan = {"num_hidden_layers": num_layers, "mamba_layers": mamba_layers, "trainable": parts,
                "hidden_size": config.get("hidden_size"), "vocab_size": config.get("vocab_size"),
                "mamba_carry_bias": model_args.mamba_carry_bias}
    return DistillPlan(model_path=model_path, teacher_path=teacher_path, num_layers=num_layers,
                       mamba_layers=mamba_layers, trainable=parts, run_plan=run_plan, checkpoint_bytes=need,
                       samples=samples)
