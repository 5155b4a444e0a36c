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

`build_student(init=...)` offers, per replaced layer (INIT_CHOICES):

    "attention"             Eq. 6 as the paper specifies it: the four copies, the rest Mamba2's defaults (default)
    "random"                every mixer parameter Mamba2's defaults (the paper's ablation)
    "attention_neutral"     Eq. 6 with the rest of the mixer set so the copied attention reaches the output:
    "attention_calibrated"  ... and the gated norm's weight fitted to the attention's output

Mamba-2's mixer between the copied projections and the output is (u = the layer's normed input)

    xBC = SiLU(conv1d(W_{V,K,Q} u)),  dt = softplus(W_dt u + dt_bias),  a = exp(dt A),  A = -exp(A_log)
    y_t = sum_{s<=t} (C_t . B_s) (prod_{r=s+1..t} a_r) dt_s x_s + D x_t                 (per head)
    out = W_O (w * rmsnorm_head(y * SiLU(W_z u)))

so with Mamba2's defaults a random conv kernel, a random gate, D = 1 and a per-head RMSNorm stand between
Eq. 6's copies. "attention_neutral" sets (each exact in the neutralised-mixer test):
    conv1d   identity kernel (last tap), no bias, scaled by s: SiLU(s v) ~ s v / 2 is near linear for small s
    dt       dt rows 0, dt_bias = softplus^-1(1): dt = 1
    A        per-head decay a = gamma (slow: close to 1)
    D        0 (Eq. 5 has no skip)
    gate     every z row = g * mu / |mu|^2 (mu = mean normed input on the calibration batch), so SiLU(z) is
             one positive number per token wherever u . mu > 0, which the per-head RMSNorm divides out
"attention_calibrated" also picks, per layer, the conv scales and per head the decay gamma from small grids,
and sets the norm weight per channel by least squares, w_c = sum n_c a_c / sum n_c^2 (n = the normed
mixer output, a = the attention's output before W_O), both on a calibration batch of the teacher's own
activations: the mixer then reproduces as much of the attention's output as this linear form can.

Measured on SmolLM2-135M-Instruct, 25 % (8 of 30 layers), 80 layer-only steps (docs/real_backbone.md):
held-out perplexity 2.72 x the teacher's for "attention", 1.61 x for "random", 1.13 x for
"attention_calibrated" (which reaches random's final layer loss at step 8); at init, the mixers'
relative error against the attention's output is 2.4-7.8 ("attention"), 1.0-2.7 ("random"), 2.1-23
("attention_neutral") and 0.42-0.84 ("attention_calibrated").
"""
from __future__ import annotations

import copy
import math
from typing import Dict, List, NamedTuple, Optional, Sequence

import torch
from torch import nn

from llava_hybrid.hybrid.configuration import model_family

ZERO = "<zeros>"  # source marker: fill the destination block with zeros
INIT_CHOICES = ("attention", "random", "attention_neutral", "attention_calibrated")
CALIBRATED_INITS = ("attention_neutral", "attention_calibrated")  # these need a calibration batch
DECAY_GRID = (0.5, 0.8, 0.9, 0.95, 0.98, 0.995)  # per-head a = exp(dt A) tried by "calibrated"
CONV_SCALE_GRID = ((0.1, 0.1), (0.1, 1.0))  # (x rows, B|C rows) identity-kernel scales tried
NEUTRAL_DECAY, NEUTRAL_CONV_SCALE, GATE_LEVEL = 0.99, (0.1, 0.1), 4.0


class WeightCopy(NamedTuple):
    """One entry of the weight map: `mixer.<dst>[rows] <- attn.<src>` (rows None = whole tensor)."""

    dst: str
    rows: Optional[str]
    src: str


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


def _in_proj_rows(mixer: nn.Module, attn: nn.Module) -> Dict[str, slice]:
    """The mixer's in_proj row blocks (mamba2.dims), once its x / B / C blocks are checked to have the rows
    of the attention's v / k / q projections (Eq. 6 copies whole blocks)."""
    sizes = mixer.dims.in_proj_sizes
    wanted = {"x": attn.v_proj.out_features, "B": attn.k_proj.out_features, "C": attn.q_proj.out_features}
    if any(sizes[block] != rows for block, rows in wanted.items()):
        raise ValueError(
            f"mixer in_proj rows x/B/C = {sizes['x']}/{sizes['B']}/{sizes['C']} but the attention's v/k/q "
            f"projections have {wanted['x']}/{wanted['B']}/{wanted['C']}; build the mixer with the attention's "
            "heads, kv heads and head_dim, and d_state = head_dim")
    return mixer.dims.in_proj_layout


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
    rows = _in_proj_rows(mixer, attn)
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
# Eq. 6 with the rest of the mixer neutralised, and calibrated on the teacher's activations
# --------------------------------------------------------------------------------------------------

class AttentionIO(NamedTuple):
    """One attention layer on a calibration batch: its input u (B, L, D) and output before W_O (B, L, H*hd)."""

    u: torch.Tensor
    a: torch.Tensor


@torch.no_grad()
def capture_attention_io(model: nn.Module, layers: Sequence[int], forward_kwargs: Dict) -> Dict[int, AttentionIO]:
    """Run `model(**forward_kwargs)` once with hooks on the attention of `layers`: {i: AttentionIO}."""
    captured: Dict[int, dict] = {i: {} for i in layers}
    handles = []
    decoder = decoder_layers(model)
    for i in layers:
        attn = decoder[i].self_attn
        out = getattr(attn, attention_output_name(attn))

        def grab_u(module, args, kwargs, i=i):
            captured[i]["u"] = (args[0] if args else kwargs["hidden_states"]).detach().float()

        def grab_a(module, args, i=i):
            captured[i]["a"] = args[0].detach().float()

        handles.append(attn.register_forward_pre_hook(grab_u, with_kwargs=True))
        handles.append(out.register_forward_pre_hook(grab_a))
    try:
        model(**forward_kwargs, use_cache=False)
    finally:
        for h in handles:
            h.remove()
    return {i: AttentionIO(u=c["u"], a=c["a"]) for i, c in captured.items()}


def _dt_one() -> float:
    """dt_bias with softplus(0 + dt_bias) = 1."""
    return math.log(math.e - 1.0)


@torch.no_grad()
def neutralise_mixer(mixer: nn.Module, u_mean: torch.Tensor, decay, conv_scale=NEUTRAL_CONV_SCALE,
                     gate_level: float = GATE_LEVEL) -> None:
    """Set everything but the Eq. 6 rows so the mixer computes decayed linear attention of the copied Q, K, V.

    u_mean: (D,) mean normed layer input (the gate direction); decay: a float or (H,) per-head a in (0, 1);
    conv_scale: (s_x, s_BC) identity-kernel scales of the x rows and the B|C rows. Leaves z's direction,
    in_proj's x/B/C rows and out_proj alone otherwise; the norm weight is set to 1.
    """
    rows = mixer.in_proj_layout
    h = mixer.dims.n_heads
    decay = torch.as_tensor(decay, dtype=torch.float32).expand(h).clamp(1e-6, 1 - 1e-6)  # (H,)
    # 1. conv: identity kernel (the causal conv's last tap is the current token), scaled per block
    s_x, s_bc = conv_scale
    kernel = torch.zeros_like(mixer.conv1d.weight)                     # (conv_dim, 1, d_conv)
    kernel[: mixer.dims.d_xb, 0, -1] = s_x
    kernel[mixer.dims.d_xb:, 0, -1] = s_bc
    mixer.conv1d.weight.copy_(kernel)
    if mixer.conv1d.bias is not None:
        mixer.conv1d.bias.zero_()
    # 2. dt = 1 everywhere, decay a = exp(A) = gamma per head, no skip
    mixer.in_proj.weight[rows["dt"]].zero_()
    if mixer.in_proj.bias is not None:
        mixer.in_proj.bias[rows["dt"]].zero_()
        mixer.in_proj.bias[rows["z"]].zero_()
    mixer.dt_bias.fill_(_dt_one())
    mixer.A_log.copy_(torch.log(-torch.log(decay)).to(mixer.A_log.dtype))  # A = log(gamma) < 0
    mixer.D.zero_()
    # 3. gate: one positive scalar per token wherever u . mu > 0 (the per-head RMSNorm divides it out)
    mu = u_mean.float()                                                 # (D,)
    z_row = gate_level * mu / mu.pow(2).sum().clamp_min(1e-12)          # (D,)
    mixer.in_proj.weight[rows["z"]] = z_row.to(mixer.in_proj.weight.dtype)  # (d_inner, D) broadcast
    mixer.norm.weight.fill_(1.0)


@torch.no_grad()
def _normed_output(mixer: nn.Module, u: torch.Tensor) -> torch.Tensor:
    """n = rmsnorm_head(y * SiLU(z)) with the norm weight 1, (B, L, d_inner), by a hook on the gated norm."""
    got = {}
    handle = mixer.norm.register_forward_hook(lambda m, args, out: got.update(n=out))
    weight = mixer.norm.weight.detach().clone()
    try:
        mixer.norm.weight.fill_(1.0)
        mixer(u.to(mixer.in_proj.weight.dtype))
    finally:
        mixer.norm.weight.copy_(weight)
        handle.remove()
    return got["n"].float()


def _least_squares_scale(n: torch.Tensor, a: torch.Tensor):
    """Per-channel w = sum n a / sum n^2 and the per-head residual share ||w n - a||^2 / ||a||^2.

    n, a: (B, L, H, P). Returns w (H*P,), residual (H,).
    """
    num = (n * a).sum(dim=(0, 1))                                       # (H, P)
    den = n.pow(2).sum(dim=(0, 1)).clamp_min(1e-12)                     # (H, P)
    w = num / den                                                       # (H, P)
    err = (w * n - a).pow(2).sum(dim=(0, 1, 3))                         # (H,)
    return w.flatten(), err / a.pow(2).sum(dim=(0, 1, 3)).clamp_min(1e-12)


@torch.no_grad()
def calibrate_mixer(mixer: nn.Module, io: AttentionIO, search: bool = True) -> Dict:
    """"attention_neutral" (search=False: fixed decay and conv scale, norm weight 1) or
    "attention_calibrated" (search=True: conv scales and per-head decay from the grids, norm weight by
    least squares) on one mixer that already holds the Eq. 6 copies. Returns what was chosen and the fit."""
    h, p = mixer.dims.n_heads, mixer.dims.head_dim
    u_mean = io.u.flatten(0, 1).mean(0)                                 # (D,)
    a = io.a.unflatten(-1, (h, p))                                      # (B, L, H, P)
    gate_positive = float(((io.u @ u_mean) > 0).float().mean())
    if not search:
        neutralise_mixer(mixer, u_mean, NEUTRAL_DECAY, NEUTRAL_CONV_SCALE)
        return {"decay": [NEUTRAL_DECAY] * h, "conv_scale": list(NEUTRAL_CONV_SCALE),
                "gate_positive_share": gate_positive}
    best = None
    for conv_scale in CONV_SCALE_GRID:
        # 1. every decay of the grid for all heads at once; keep each head's best
        per_decay = []
        for gamma in DECAY_GRID:
            neutralise_mixer(mixer, u_mean, gamma, conv_scale)
            _, residual = _least_squares_scale(_normed_output(mixer, io.u).unflatten(-1, (h, p)), a)  # (H,)
            per_decay.append(residual)
        residuals = torch.stack(per_decay)                              # (G, H)
        choice = residuals.argmin(dim=0)                                # (H,)
        decay = torch.tensor([DECAY_GRID[int(k)] for k in choice])      # (H,)
        # 2. the per-head choice together, then the least-squares norm weight
        neutralise_mixer(mixer, u_mean, decay, conv_scale)
        w, residual = _least_squares_scale(_normed_output(mixer, io.u).unflatten(-1, (h, p)), a)
        if best is None or residual.mean() < best[0]:
            best = (float(residual.mean()), conv_scale, decay, w)
    share, conv_scale, decay, w = best
    neutralise_mixer(mixer, u_mean, decay, conv_scale)
    mixer.norm.weight.copy_(w.to(mixer.norm.weight.dtype))
    return {"decay": [float(x) for x in decay], "conv_scale": list(conv_scale), "residual_share": share,
            "gate_positive_share": gate_positive}


@torch.no_grad()
def mixer_fit(mixer: nn.Module, attn_out: nn.Linear, io: AttentionIO) -> float:
    """||mixer(u) - W_O a|| / ||W_O a|| on the calibration batch: how much of the attention's output the
    mixer reproduces (0 = exactly; 1 = no better than zero)."""
    target = attn_out(io.a.to(attn_out.weight.dtype)).float()          # (B, L, D)
    got = mixer(io.u.to(mixer.in_proj.weight.dtype)).float()           # (B, L, D)
    return float((got - target).norm() / target.norm().clamp_min(1e-12))


# --------------------------------------------------------------------------------------------------
# Student builder
# --------------------------------------------------------------------------------------------------

def _student_class(family: str):
    """The plain hybrid causal LM of a teacher family (a LLaVA teacher's student: host.hybrid_models)."""
    from llava_hybrid.hybrid.modeling_llama import HybridLlamaForCausalLM
    from llava_hybrid.hybrid.modeling_phi import HybridPhiForCausalLM

    return {"phi": HybridPhiForCausalLM, "llama": HybridLlamaForCausalLM}[family]


def student_config(teacher_config, config_cls, mamba_layers: Sequence[int], carry_bias: bool,
                   chunk_size: Optional[int] = None):
    """A student config: every teacher field (LLaVA's mm_* included) plus the hybrid fields."""
    fields = teacher_config.to_dict()
    for key in ("model_type", "architectures", "transformers_version", "auto_map"):
        fields.pop(key, None)
    if fields.get("mamba_layers"):
        raise ValueError(f"build_student: the teacher already has Mamba layers {fields['mamba_layers']}; "
                         "pass an all-attention teacher")
    fields["mamba_layers"] = sorted(int(i) for i in mamba_layers)
    fields["mamba_carry_bias"] = bool(carry_bias)
    if chunk_size is not None:
        fields["mamba_chunk_size"] = int(chunk_size)
    return config_cls(**fields)


def decoder_layers(model: nn.Module) -> nn.ModuleList:
    """The decoder layer list of a causal LM (transformers', ours, or a LLaVA one over either)."""
    return model.get_decoder().layers


@torch.no_grad()
def build_student(teacher: nn.Module, mamba_layers: Sequence[int], *, init_from_attention: bool = True,
                  carry_bias: bool = False, seed: int = 0, chunk_size: Optional[int] = None,
                  student_class: Optional[type] = None, adopt: Optional[Dict[str, nn.Module]] = None,
                  init: Optional[str] = None, calibration: Optional[Dict] = None) -> nn.Module:
    """The hybrid student of `teacher` with the attention of `mamba_layers` replaced by Mamba-2.

    teacher: transformers PhiForCausalLM / LlamaForCausalLM or the project's all-attention hybrid
    decoder (a LLaVA teacher: host.hybrid_models.build_llava_student, which passes the next two).
    student_class: the student's causal-LM class (default: HybridPhiForCausalLM / HybridLlamaForCausalLM
    by the teacher's family); its config_class gets every teacher config field plus the hybrid ones.
    adopt: {submodule path: teacher module} set on the fresh student as deep copies before the weights
    are copied (e.g. a LLaVA teacher's loaded vision tower, which a fresh LLaVA model only delay-loads).
    Every weight that is not replaced equals the teacher's (each replaced layer keeps its MLP and
    LayerNorm); mixer i is initialised from layer i's attention with seed `seed + i`.
    init: one of INIT_CHOICES (module docstring). Default "attention" (Eq. 6 as the paper specifies it),
    or "random" when init_from_attention=False (the paper's ablation). "attention_neutral" and
    "attention_calibrated" need `calibration`: the teacher's forward kwargs on a calibration batch
    (e.g. {"input_ids": (B, L)}); what each layer chose and how well its mixer reproduces the attention's
    output there are kept in `student.mamba_init_report`. chunk_size: the SSD chunk length (config
    mamba_chunk_size; default the config's 64).
    Returns the student in eval mode, on the teacher's device and dtype.
    """
    init = init or ("attention" if init_from_attention else "random")
    if init not in INIT_CHOICES:
        raise ValueError(f"build_student: init {init!r} is not one of {INIT_CHOICES}")
    if init in CALIBRATED_INITS and not calibration:
        raise ValueError(f"build_student: init {init!r} needs `calibration`, the teacher's forward kwargs on a "
                         "calibration batch (e.g. {'input_ids': ids})")
    num_layers = teacher.config.num_hidden_layers
    bad = [i for i in mamba_layers if not 0 <= int(i) < num_layers]
    if bad or not mamba_layers:
        raise ValueError(f"build_student: mamba_layers {list(mamba_layers)} must be a non-empty subset of "
                         f"0..{num_layers - 1}")
    model_cls = student_class or _student_class(model_family(teacher.config))
    config = student_config(teacher.config, model_cls.config_class, mamba_layers, carry_bias, chunk_size)
    student = model_cls(config)
    for path, module in (adopt or {}).items():
        parent, _, name = path.rpartition(".")
        setattr(student.get_submodule(parent), name, copy.deepcopy(module))
    _load_kept_weights(student, teacher, config.mamba_layers)
    teacher_layers, student_layers = decoder_layers(teacher), decoder_layers(student)
    ios = capture_attention_io(teacher, config.mamba_layers, calibration) if init in CALIBRATED_INITS else {}
    report = {"init": init, "layers": {}}
    for i in config.mamba_layers:
        mixer, attn = student_layers[i].mamba, teacher_layers[i].self_attn
        if init == "random":
            reset_mamba(mixer, seed + i)
        else:
            init_mamba_from_attention(mixer, attn, carry_bias=carry_bias, seed=seed + i)
        if i in ios:
            chosen = calibrate_mixer(mixer, ios[i], search=init == "attention_calibrated")
            chosen["fit"] = mixer_fit(mixer, getattr(attn, attention_output_name(attn)), ios[i])
            report["layers"][i] = chosen
    student.mamba_init_report = report
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
