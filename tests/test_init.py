"""Attention -> Mamba-2 initialisation (MaTVLM Eq. 6) and `build_student`.

The paper's claim: with x <- W_V, B <- W_K, C <- W_Q and out_proj <- W_O, a Mamba-2 layer whose decay,
step, conv, gate, skip and norm are neutralised computes exactly causal linear attention built from the
teacher's own projections. Scale convention: the copy is verbatim, so the reference below has NO
1/sqrt(head_dim) factor and no softmax and no rotary:  y_n = sum_{t<=n} (Q_n . K_t) V_t  per head.
"""
import math

import pytest
import torch
from torch import nn
from transformers import LlamaConfig, LlamaForCausalLM, PhiConfig, PhiForCausalLM
from transformers.models.llama.modeling_llama import LlamaAttention
from transformers.models.phi.modeling_phi import PhiAttention

from llava_hybrid.hybrid.init import build_student, init_mamba_from_attention
from llava_hybrid.mamba2.mixer import Mamba2Mixer

HIDDEN, HEADS, HEAD_DIM = 32, 4, 8


class PassThrough(nn.Module):
    """Stands in for the gated RMSNorm: returns y, ignoring the gate z (neutralises gate and norm)."""

    def forward(self, y, *args, **kwargs):
        return y


def phi_config(**kw):
    base = dict(vocab_size=96, hidden_size=HIDDEN, intermediate_size=64, num_hidden_layers=4,
                num_attention_heads=HEADS, partial_rotary_factor=0.5, max_position_embeddings=64)
    base.update(kw)
    return PhiConfig(**base)


def llama_config(**kw):
    base = dict(vocab_size=96, hidden_size=HIDDEN, intermediate_size=64, num_hidden_layers=4,
                num_attention_heads=HEADS, num_key_value_heads=2, max_position_embeddings=64)
    base.update(kw)
    return LlamaConfig(**base)


def mixer_for(attn_config, bias=False):
    return Mamba2Mixer(HIDDEN, HEADS, HEAD_DIM, n_kv_heads=attn_config.num_key_value_heads, bias=bias,
                       chunk_size=4, backend="torch")


@torch.no_grad()
def neutralise(mixer, d_xb):
    """A -> 0, dt -> 1, conv -> identity (no SiLU), D -> 0, gate/norm -> pass-through."""
    rows = mixer.dims.in_proj_layout
    assert rows["x"].stop - rows["x"].start == d_xb
    mixer.A_log.fill_(-1e4)  # A = -exp(A_log) = -0: no decay
    mixer.in_proj.weight[rows["dt"]].zero_()
    if mixer.in_proj.bias is not None:
        mixer.in_proj.bias[rows["dt"]].zero_()
    mixer.dt_bias.fill_(math.log(math.e - 1))  # softplus(0 + dt_bias) = 1
    mixer.conv1d.weight.zero_()
    mixer.conv1d.weight[:, 0, -1] = 1.0  # causal conv: the last tap is the current token
    if mixer.conv1d.bias is not None:
        mixer.conv1d.bias.zero_()
    mixer.D.zero_()
    mixer.act = nn.Identity()
    mixer.norm = PassThrough()


@torch.no_grad()
def causal_linear_attention(attn, hidden):
    """Reference from the teacher's own q/k/v/out projections: y_n = sum_{t<=n} (Q_n.K_t) V_t, no scale."""
    b, length, _ = hidden.shape
    q = attn.q_proj(hidden).view(b, length, HEADS, HEAD_DIM)  # (B, L, H, d)
    k = attn.k_proj(hidden).view(b, length, -1, HEAD_DIM)  # (B, L, Hkv, d)
    v = attn.v_proj(hidden).view(b, length, -1, HEAD_DIM)  # (B, L, Hkv, d)
    group = HEADS // k.shape[2]
    k = k.repeat_interleave(group, dim=2)  # (B, L, H, d): head h reads kv head h // group
    v = v.repeat_interleave(group, dim=2)  # (B, L, H, d)
    scores = torch.einsum("bnhd,bthd->bhnt", q, k)  # (B, H, L, L)
    causal = torch.ones(length, length, dtype=torch.bool).tril()
    scores = scores.masked_fill(~causal, 0.0)
    y = torch.einsum("bhnt,bthd->bnhd", scores, v).reshape(b, length, HEADS * HEAD_DIM)  # (B, L, H*d)
    out = attn.dense if hasattr(attn, "dense") else attn.o_proj
    return out(y)  # (B, L, D)


def rel_err(a, b):
    return ((a - b).norm() / b.norm()).item()


def _attention(kind, seed):
    torch.manual_seed(seed)
    if kind == "phi":
        config = phi_config()
        return config, PhiAttention(config, layer_idx=0)
    config = llama_config()
    return config, LlamaAttention(config, layer_idx=0)


@pytest.mark.parametrize("kind", ["phi", "llama_gqa"])
def test_neutralised_mixer_is_causal_linear_attention(kind):
    config, attn = _attention(kind, seed=0)
    if kind == "phi":
        with torch.no_grad():
            for proj in (attn.q_proj, attn.k_proj, attn.v_proj, attn.dense):
                proj.bias.zero_()  # carry_bias off: the map copies weights only
    mixer = init_mamba_from_attention(mixer_for(config), attn, carry_bias=False, seed=0)
    neutralise(mixer, attn.v_proj.out_features)
    hidden = torch.randn(2, 11, HIDDEN, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        got = mixer(hidden)
    assert got.shape == hidden.shape
    assert rel_err(got, causal_linear_attention(attn, hidden)) <= 1e-5


def test_carry_bias_reproduces_biased_phi_attention():
    config, attn = _attention("phi", seed=2)
    with torch.no_grad():
        for proj in (attn.q_proj, attn.k_proj, attn.v_proj, attn.dense):
            proj.bias.normal_(0, 0.5)  # non-zero biases must be carried
    mixer = init_mamba_from_attention(mixer_for(config, bias=True), attn, carry_bias=True, seed=0)
    neutralise(mixer, attn.v_proj.out_features)
    hidden = torch.randn(1, 9, HIDDEN, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        assert rel_err(mixer(hidden), causal_linear_attention(attn, hidden)) <= 1e-5


def test_bad_mixers_raise():
    config, attn = _attention("phi", seed=0)
    with pytest.raises(ValueError, match="bias=True"):
        init_mamba_from_attention(mixer_for(config, bias=False), attn, carry_bias=True)
    wrong = Mamba2Mixer(HIDDEN, HEADS, HEAD_DIM, d_state=HEAD_DIM * 2, backend="torch")
    with pytest.raises(ValueError, match="rows"):
        init_mamba_from_attention(wrong, attn)


def _teachers():
    torch.manual_seed(0)
    return {"phi": PhiForCausalLM(phi_config()).eval(), "llama": LlamaForCausalLM(llama_config()).eval()}


@pytest.mark.parametrize("kind", ["phi", "llama"])
def test_student_keeps_teacher_weights_and_copies_qkv(kind):
    teacher = _teachers()[kind]
    student = build_student(teacher, [0, 2], seed=0)
    assert student.config.mamba_layers == [0, 2]
    t_sd, s_sd = teacher.state_dict(), student.state_dict()
    kept = [k for k in t_sd if not k.startswith(("model.layers.0.self_attn.", "model.layers.2.self_attn."))]
    for key in kept:
        assert torch.equal(s_sd[key], t_sd[key]), key
    for i in (0, 2):
        assert not any(k.startswith(f"model.layers.{i}.self_attn.") for k in s_sd)
        attn, mixer = teacher.model.layers[i].self_attn, student.model.layers[i].mamba
        rows = mixer.dims.in_proj_layout
        w = mixer.in_proj.weight
        assert torch.equal(w[rows["x"]], attn.v_proj.weight)
        assert torch.equal(w[rows["B"]], attn.k_proj.weight)
        assert torch.equal(w[rows["C"]], attn.q_proj.weight)
        out = attn.dense if kind == "phi" else attn.o_proj
        assert torch.equal(mixer.out_proj.weight, out.weight)


def test_random_init_ablation_and_seed_determinism():
    teacher = _teachers()["phi"]
    random_student = build_student(teacher, [1], init_from_attention=False, seed=0)
    attn, mixer = teacher.model.layers[1].self_attn, random_student.model.layers[1].mamba
    rows = mixer.dims.in_proj_layout
    assert not torch.allclose(mixer.in_proj.weight[rows["x"]], attn.v_proj.weight)
    assert not torch.allclose(mixer.in_proj.weight[rows["B"]], attn.k_proj.weight)
    assert not torch.allclose(mixer.in_proj.weight[rows["C"]], attn.q_proj.weight)

    a, b = build_student(teacher, [1, 3], seed=5), build_student(teacher, [1, 3], seed=5)
    c = build_student(teacher, [1, 3], seed=6)
    sd_a, sd_b, sd_c = a.state_dict(), b.state_dict(), c.state_dict()
    assert all(torch.equal(sd_a[k], sd_b[k]) for k in sd_a)
    assert not torch.equal(sd_a["model.layers.1.mamba.dt_bias"], sd_c["model.layers.1.mamba.dt_bias"])
    # the two Mamba layers do not share their random draws
    assert not torch.equal(sd_a["model.layers.1.mamba.dt_bias"], sd_a["model.layers.3.mamba.dt_bias"])


def test_build_student_rejects_bad_layers():
    teacher = _teachers()["phi"]
    with pytest.raises(ValueError, match="mamba_layers"):
        build_student(teacher, [4])


def test_student_of_all_attention_hybrid_and_llava_llama_teachers():
    from llava.model.language_model.llava_llama import LlavaConfig, LlavaLlamaForCausalLM

    from llava_hybrid.host.hybrid_models import LlavaHybridLlamaForCausalLM, build_llava_student
    from llava_hybrid.hybrid import HybridPhiConfig, HybridPhiForCausalLM

    torch.manual_seed(0)
    ours = HybridPhiForCausalLM(HybridPhiConfig(**phi_config().to_dict(), mamba_layers=[])).eval()
    llava = LlavaLlamaForCausalLM(LlavaConfig(**llama_config().to_dict())).eval()
    for teacher, cls, build in ((ours, HybridPhiForCausalLM, build_student),
                                (llava, LlavaHybridLlamaForCausalLM, build_llava_student)):
        student = build(teacher, [1], seed=0)
        assert type(student) is cls and student.config.mamba_layers == [1]
        s_sd = student.state_dict()
        for key, value in teacher.state_dict().items():
            if not key.startswith("model.layers.1.self_attn."):
                assert torch.equal(s_sd[key], value), key
        assert torch.equal(student.model.layers[1].mamba.out_proj.weight,
                           teacher.model.layers[1].self_attn.out_proj_module().weight
                           if hasattr(teacher.model.layers[1].self_attn, "out_proj_module")
                           else teacher.model.layers[1].self_attn.o_proj.weight)


def test_build_student_carry_bias_puts_phi_biases_in_the_mixer():
    teacher = _teachers()["phi"]
    student = build_student(teacher, [2], carry_bias=True, seed=0)
    assert student.config.mamba_carry_bias is True
    attn, mixer = teacher.model.layers[2].self_attn, student.model.layers[2].mamba
    rows = mixer.dims.in_proj_layout
    assert torch.equal(mixer.in_proj.bias[rows["x"]], attn.v_proj.bias)
    assert torch.equal(mixer.in_proj.bias[rows["B"]], attn.k_proj.bias)
    assert torch.equal(mixer.in_proj.bias[rows["C"]], attn.q_proj.bias)
    assert torch.equal(mixer.out_proj.bias, attn.dense.bias)
    assert not mixer.in_proj.bias[rows["z"]].any() and not mixer.in_proj.bias[rows["dt"]].any()


# --------------------------------------------------------------------------------------------------
# Eq. 6 with the rest of the mixer neutralised / calibrated (build_student init="attention_calibrated")
# --------------------------------------------------------------------------------------------------

def test_neutralise_mixer_settings_make_eq6_exact_linear_attention():
    """neutralise_mixer's conv, dt, decay and D settings are the ones under which Eq. 6 is exact (conv scale 1,
    decay -> 1); SiLU and the gated norm are the architecture's own and are bypassed here as above."""
    from llava_hybrid.hybrid.init import neutralise_mixer

    config, attn = _attention("llama_gqa", seed=4)
    mixer = init_mamba_from_attention(mixer_for(config), attn, seed=0)
    neutralise_mixer(mixer, torch.ones(HIDDEN), decay=1 - 1e-6, conv_scale=(1.0, 1.0))
    mixer.act, mixer.norm = nn.Identity(), PassThrough()
    hidden = torch.randn(2, 9, HIDDEN, generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        assert rel_err(mixer(hidden), causal_linear_attention(attn, hidden)) <= 1e-4


def test_neutral_gate_is_divided_out_by_the_per_head_norm():
    """Every z row = g * mu / |mu|^2: SiLU(z) is one positive number per token, so the gate level g (and the
    gate itself) changes nothing wherever u . mu > 0 (and y * SiLU(z) is well above the norm's eps)."""
    from llava_hybrid.hybrid.init import neutralise_mixer

    config, attn = _attention("llama_gqa", seed=6)
    with torch.no_grad():
        for proj in (attn.q_proj, attn.k_proj, attn.v_proj):
            proj.weight.mul_(10.0)  # pretrained-size projections: y * SiLU(z) far above the norm's eps
    mixer = init_mamba_from_attention(mixer_for(config), attn, seed=0)
    hidden = torch.randn(2, 7, HIDDEN, generator=torch.Generator().manual_seed(7)) + 2.0  # u . mu > 0
    mu = hidden.flatten(0, 1).mean(0)
    assert bool(((hidden @ mu) > 0).all())
    outs = []
    for level in (4.0, 16.0):
        neutralise_mixer(mixer, mu, decay=0.9, conv_scale=(1.0, 1.0), gate_level=level)
        with torch.no_grad():
            outs.append(mixer(hidden))
    assert rel_err(outs[0], outs[1]) <= 1e-4


def _gqa_llama_teacher():
    torch.manual_seed(0)
    return LlamaForCausalLM(llama_config()).eval()


def test_calibrated_init_reproduces_the_attention_better_than_eq6_alone():
    from llava_hybrid.hybrid.init import capture_attention_io, mixer_fit

    teacher = _gqa_llama_teacher()
    ids = torch.randint(0, 96, (2, 16), generator=torch.Generator().manual_seed(8))
    check = capture_attention_io(teacher, [1, 3], {"input_ids": ids})
    fits = {}
    for init in ("attention", "attention_calibrated"):
        student = build_student(teacher, [1, 3], init=init, calibration={"input_ids": ids}, seed=0)
        fits[init] = [mixer_fit(student.model.layers[i].mamba, teacher.model.layers[i].self_attn.o_proj, check[i])
                      for i in (1, 3)]
        if init == "attention_calibrated":
            report = student.mamba_init_report
            assert report["init"] == init and set(report["layers"]) == {1, 3}
            assert all(len(v["decay"]) == HEADS and 0 < v["fit"] < 1 for v in report["layers"].values())
    assert all(c < 1.0 and c < a for c, a in zip(fits["attention_calibrated"], fits["attention"])), fits
    # every weight outside the mixers is still the teacher's
    t_sd, s_sd = teacher.state_dict(), student.state_dict()
    for key in t_sd:
        if not key.startswith(("model.layers.1.self_attn.", "model.layers.3.self_attn.")):
            assert torch.equal(s_sd[key], t_sd[key]), key


def test_calibrated_inits_need_a_calibration_batch_and_unknown_inits_are_refused():
    teacher = _gqa_llama_teacher()
    with pytest.raises(ValueError, match="calibration"):
        build_student(teacher, [1], init="attention_calibrated")
    with pytest.raises(ValueError, match="INIT|one of"):
        build_student(teacher, [1], init="orthogonal")
    assert build_student(teacher, [1], init_from_attention=False).mamba_init_report["init"] == "random"
