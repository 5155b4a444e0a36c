"""Attention -> Mamba-2 initialisation (MaTVLM Eq. 6) and the student builder.

Mamba-2 read as linear attention: y_n = sum_{t<=n} C_n^T (prod_{s=t+1..n} a_s) B_t x_t, so with decay
a = 1 and dt = 1 it is causal linear attention with queries C, keys B and values x. Eq. 6 therefore
copies, per layer,

    in_proj[x rows] <- W_V,   in_proj[B rows] <- W_K,   in_proj[C rows] <- W_Q,   out_proj <- W_O

(no 1/sqrt(d) scale is folded in: the copy is verbatim, as in the official release). Everything else
(z and dt rows, conv1d, dt_bias, A_log, D, the gated norm) keeps mamba_ssm Mamba2's default
initialisation, drawn from a `torch.Generator` seeded with `seed`, so two builds are identical.

The copy is a declarative map (`attention_to_mamba_map`): a list of (destination parameter, row block,
source parameter) entries, each shape-checked before anything is written.
"""
from __future__ import annotations

import copy
from typing import Dict, List, NamedTuple, Optional, Sequence

import torch
from torch import nn

from llava_hybrid.hybrid.configuration import model_family

ZERO = "<zeros>"  # source marker: fill the destination block with zeros


class WeightCopy(NamedTuple):
    """One entry of the weight map: `mixer.<dst>[rows] <- attn.<src>` (rows None = whole tensor)."""

    dst: str
    rows: Optional[str]
    src: str


def in_proj_rows(d_inner: int, d_xb: int, n_heads: int) -> Dict[str, slice]:
    """Row blocks of the mixer's in_proj: [z (d_inner) | x (d_xb) | B (d_xb) | C (d_inner) | dt (n_heads)]."""
    sizes = [("z", d_inner), ("x", d_xb), ("B", d_xb), ("C", d_inner), ("dt", n_heads)]
    rows, start = {}, 0
    for name, size in sizes:
        rows[name] = slice(start, start + size)
        start += size
    return rows


def attention_output_name(attn: nn.Module) -> str:
    """The attention's output projection: Phi calls it `dense`, Llama `o_proj`."""
    for name in ("dense", "o_proj"):
        if isinstance(getattr(attn, name, None), nn.Linear):
            return name
    raise ValueError(f"{type(attn).__name__} has neither `dense` nor `o_proj`: not an attention module "
                     "this initialiser knows")


def attention_to_mamba_map(attn: nn.Module, carry_bias: bool = False) -> List[WeightCopy]:
    """The Eq. 6 weight map from an attention module (q_proj, k_proj, v_proj, dense|o_proj) to a mixer."""
    out = attention_output_name(attn)
    entries = [
        WeightCopy("in_proj.weight", "x", "v_proj.weight"),  # values  -> x  (d_xb, D)
        WeightCopy("in_proj.weight", "B", "k_proj.weight"),  # keys    -> B  (d_xb, D)
        WeightCopy("in_proj.weight", "C", "q_proj.weight"),  # queries -> C  (d_inner, D)
        WeightCopy("out_proj.weight", None, f"{out}.weight"),  # W_O   -> out_proj  (D, d_inner)
    ]
    if carry_bias:
        entries += [
            WeightCopy("in_proj.bias", "z", ZERO),
            WeightCopy("in_proj.bias", "x", "v_proj.bias"),
            WeightCopy("in_proj.bias", "B", "k_proj.bias"),
            WeightCopy("in_proj.bias", "C", "q_proj.bias"),
            WeightCopy("in_proj.bias", "dt", ZERO),  # dt already has dt_bias
            WeightCopy("out_proj.bias", None, f"{out}.bias"),
        ]
    return entries


def _mixer_sizes(mixer: nn.Module, attn: nn.Module) -> Dict[str, int]:
    """d_inner, d_xb, n_heads read off the parameters (no reliance on attribute names)."""
    d_inner = attn.q_proj.out_features  # n_heads * head_dim
    d_xb = attn.v_proj.out_features  # n_kv_heads * head_dim
    n_heads = mixer.A_log.numel()
    expected = 2 * d_inner + 2 * d_xb + n_heads
    if mixer.in_proj.out_features != expected:
        raise ValueError(
            f"mixer in_proj has {mixer.in_proj.out_features} rows but the attention implies {expected} "
            f"(2*{d_inner} + 2*{d_xb} + {n_heads}); build the mixer with the attention's heads, kv heads and "
            "head_dim, and d_state = head_dim")
    return {"d_inner": d_inner, "d_xb": d_xb, "n_heads": n_heads}


def reset_mamba(mixer: nn.Module, seed: int = 0) -> None:
    """mamba_ssm Mamba2's default initialisation of every mixer parameter, drawn from a seeded generator."""
    generator = torch.Generator(device="cpu").manual_seed(int(seed))
    mixer.reset_parameters(generator=generator)


@torch.no_grad()
def init_mamba_from_attention(mixer: nn.Module, attn: nn.Module, carry_bias: bool = False,
                              seed: int = 0) -> nn.Module:
    """Initialise `mixer` from `attn` (Eq. 6): x <- W_V, B <- W_K, C <- W_Q, out_proj <- W_O.

    The remaining parameters get Mamba2's defaults from a generator seeded with `seed`. With
    carry_bias=True the q/k/v biases go into the matching in_proj bias rows (z/dt rows 0) and the
    output bias into out_proj's bias; the mixer must then be built with `bias=True`. Returns `mixer`.
    """
    if carry_bias and (mixer.in_proj.bias is None or mixer.out_proj.bias is None):
        raise ValueError("carry_bias=True needs a mixer built with bias=True (config mamba_carry_bias=True)")
    if carry_bias and attn.q_proj.bias is None:
        raise ValueError(f"carry_bias=True but {type(attn).__name__} has no q/k/v biases")
    rows = in_proj_rows(**_mixer_sizes(mixer, attn))
    entries = attention_to_mamba_map(attn, carry_bias)
    # 1. resolve and shape-check every entry before writing anything
    plan = []
    for entry in entries:
        dst = mixer.get_parameter(entry.dst)
        block = rows[entry.rows] if entry.rows is not None else slice(None)
        target_shape = dst[block].shape
        src = None if entry.src == ZERO else attn.get_parameter(entry.src)
        if src is not None and tuple(src.shape) != tuple(target_shape):
            raise ValueError(f"shape mismatch for {entry.dst}[{entry.rows}] <- {entry.src}: "
                             f"{tuple(target_shape)} vs {tuple(src.shape)}")
        plan.append((dst, block, src))
    # 2. Mamba2 defaults for everything, deterministically
    reset_mamba(mixer, seed)
    # 3. the Eq. 6 copies
    for dst, block, src in plan:
        if src is None:
            dst[block].zero_()
        else:
            dst[block].copy_(src.to(dst.dtype))
    return mixer


# --------------------------------------------------------------------------------------------------
# Student builder
# --------------------------------------------------------------------------------------------------

def _student_class(family: str):
    """The plain hybrid causal LM of a teacher family (a LLaVA teacher's student: host.hybrid_models)."""
    from llava_hybrid.hybrid.modeling_llama import HybridLlamaForCausalLM
    from llava_hybrid.hybrid.modeling_phi import HybridPhiForCausalLM

    return {"phi": HybridPhiForCausalLM, "llama": HybridLlamaForCausalLM}[family]


def student_config(teacher_config, config_cls, mamba_layers: Sequence[int], carry_bias: bool):
    """A student config: every teacher field (LLaVA's mm_* included) plus the hybrid fields."""
    fields = teacher_config.to_dict()
    for key in ("model_type", "architectures", "transformers_version", "auto_map"):
        fields.pop(key, None)
    if fields.get("mamba_layers"):
        raise ValueError(f"build_student: the teacher already has Mamba layers {fields['mamba_layers']}; "
                         "pass an all-attention teacher")
    fields["mamba_layers"] = sorted(int(i) for i in mamba_layers)
    fields["mamba_carry_bias"] = bool(carry_bias)
    return config_cls(**fields)


def decoder_layers(model: nn.Module) -> nn.ModuleList:
    """The decoder layer list of a causal LM (transformers', ours, or a LLaVA one over either)."""
    return model.get_decoder().layers


@torch.no_grad()
def build_student(teacher: nn.Module, mamba_layers: Sequence[int], *, init_from_attention: bool = True,
                  carry_bias: bool = False, seed: int = 0, student_class: Optional[type] = None,
                  adopt: Optional[Dict[str, nn.Module]] = None) -> nn.Module:
    """The hybrid student of `teacher` with the attention of `mamba_layers` replaced by Mamba-2.

    teacher: transformers PhiForCausalLM / LlamaForCausalLM or the project's all-attention hybrid
    decoder (a LLaVA teacher: host.hybrid_models.build_llava_student, which passes the next two).
    student_class: the student's causal-LM class (default: HybridPhiForCausalLM / HybridLlamaForCausalLM
    by the teacher's family); its config_class gets every teacher config field plus the hybrid ones.
    adopt: {submodule path: teacher module} set on the fresh student as deep copies before the weights
    are copied (e.g. a LLaVA teacher's loaded vision tower, which a fresh LLaVA model only delay-loads).
    Every weight that is not replaced equals the teacher's (each replaced layer keeps its MLP and
    LayerNorm); mixer i is initialised from layer i's attention (Eq. 6) with seed `seed + i`, or, with
    init_from_attention=False, entirely from Mamba2's defaults (the paper's ablation).
    Returns the student in eval mode, on the teacher's device and dtype.
    """
    num_layers = teacher.config.num_hidden_layers
    bad = [i for i in mamba_layers if not 0 <= int(i) < num_layers]
    if bad or not mamba_layers:
        raise ValueError(f"build_student: mamba_layers {list(mamba_layers)} must be a non-empty subset of "
                         f"0..{num_layers - 1}")
    model_cls = student_class or _student_class(model_family(teacher.config))
    config = student_config(teacher.config, model_cls.config_class, mamba_layers, carry_bias)
    student = model_cls(config)
    for path, module in (adopt or {}).items():
        parent, _, name = path.rpartition(".")
        setattr(student.get_submodule(parent), name, copy.deepcopy(module))
    _load_kept_weights(student, teacher, config.mamba_layers)
    teacher_layers, student_layers = decoder_layers(teacher), decoder_layers(student)
    for i in config.mamba_layers:
        mixer = student_layers[i].mamba
        if init_from_attention:
            init_mamba_from_attention(mixer, teacher_layers[i].self_attn, carry_bias=carry_bias, seed=seed + i)
        else:
            reset_mamba(mixer, seed + i)
    param = next(teacher.parameters())
    return student.to(device=param.device, dtype=param.dtype).eval()


def _load_kept_weights(student: nn.Module, teacher: nn.Module, mamba_layers: Sequence[int]) -> None:
    """Copy every teacher tensor into the student; only replaced attention / new Mamba keys may differ."""
    result = student.load_state_dict(teacher.state_dict(), strict=False)
    replaced = tuple(f"model.layers.{i}.self_attn." for i in mamba_layers)
    new = tuple(f"model.layers.{i}.mamba." for i in mamba_layers)
    missing = [k for k in result.missing_keys if not k.startswith(new)]
    unexpected = [k for k in result.unexpected_keys if not k.startswith(replaced)]
    missing = [k for k in missing if not k.endswith("rotary_emb.inv_freq")]
    if missing or unexpected:
        raise ValueError(f"build_student: teacher and student weights disagree beyond the replaced layers: "
                         f"missing {missing[:8]}, unexpected {unexpected[:8]} (the student of a LLaVA teacher "
                         "is built by llava_hybrid.host.hybrid_models.build_llava_student)")
