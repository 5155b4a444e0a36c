"""Mamba2Mixer: official parameter layout, decode == full forward, padding, gradients, backends."""
import logging

import pytest
import torch
from torch import nn

from llava_hybrid.mamba2 import Mamba2Mixer, Mamba2State
from llava_hybrid.mamba2 import backend as backend_mod


def rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a.double() - b.double()).norm() / b.double().norm().clamp_min(1e-30)).item()


def tiny(**kw):
    args = dict(d_model=32, n_heads=4, head_dim=8, n_kv_heads=2, chunk_size=4, backend="torch")
    args.update(kw)
    return Mamba2Mixer(**args)


def test_phi2_parameter_names_and_shapes_match_official():
    m = Mamba2Mixer(2560, 32, 80, device="meta")
    shapes = {k: tuple(v.shape) for k, v in m.state_dict().items()}
    assert shapes == {
        "in_proj.weight": (10272, 2560),
        "conv1d.weight": (7680, 1, 4),
        "conv1d.bias": (7680,),
        "dt_bias": (32,),
        "A_log": (32,),
        "D": (32,),
        "norm.weight": (2560,),
        "out_proj.weight": (2560, 2560),
    }
    assert all(getattr(getattr(m, k), "_no_weight_decay", False) for k in ("dt_bias", "A_log", "D"))


def test_gqa_shapes_and_bias():
    m = Mamba2Mixer(64, 8, 8, n_kv_heads=2, bias=True, device="meta")
    shapes = {k: tuple(v.shape) for k, v in m.state_dict().items()}
    # in_proj rows: [z 64 | x 16 | B 16 | C 64 | dt 8]
    assert shapes["in_proj.weight"] == (64 + 16 + 16 + 64 + 8, 64)
    assert shapes["in_proj.bias"] == (168,) and shapes["out_proj.bias"] == (64,)
    assert shapes["conv1d.weight"] == (96, 1, 4)
    assert shapes["norm.weight"] == (64,)


def test_gqa_head_reads_its_kv_head():
    m = tiny(n_heads=4, head_dim=2, n_kv_heads=2, d_model=8)
    xbc = torch.arange(m.dims.conv_dim, dtype=torch.float32)  # x | B | C, distinct values
    x, B, C = m._split_xbc(xbc)
    kv_x = xbc[: m.dims.d_xb].reshape(2, 2)
    assert torch.equal(x, kv_x[[0, 0, 1, 1]])  # head i <- kv head i // 2
    assert torch.equal(B, xbc[m.dims.d_xb: m.dims.d_xb + m.dims.d_B].reshape(2, 2)[[0, 0, 1, 1]])
    assert torch.equal(C, xbc[m.dims.d_xb + m.dims.d_B:].reshape(4, 2))


@pytest.mark.parametrize("kw", [{}, {"n_kv_heads": 4, "bias": True}, {"d_state": 6}])
def test_prefill_then_steps_equals_full_forward(kw):
    m = tiny(**kw)
    x = torch.randn(2, 13, 32)
    with torch.no_grad():
        full = m(x)
        state = m.allocate_state(2)
        outs = [m(x[:, :6], state=state)]
        outs += [m(x[:, t: t + 1], state=state) for t in range(6, 13)]
    assert rel_err(torch.cat(outs, 1), full) <= 1e-5
    # a state-continuing prefill equals it too
    with torch.no_grad():
        state2 = m.allocate_state(2)
        y = torch.cat([m(x[:, :5], state=state2), m(x[:, 5:], state=state2)], 1)
    assert rel_err(y, full) <= 1e-5
    assert rel_err(state2.ssm, state.ssm) <= 1e-5 and torch.allclose(state2.conv, state.conv)


def test_left_padding_matches_unpadded():
    m = tiny(bias=True)  # biases make leaks from padding visible
    real = torch.randn(1, 7, 32)
    pad = 5
    batch = torch.cat([torch.randn(1, pad, 32), real], 1)  # left-padded with garbage
    mask = torch.cat([torch.zeros(1, pad), torch.ones(1, 7)], 1).long()
    nxt = torch.randn(1, 1, 32)
    with torch.no_grad():
        s_ref = m.allocate_state(1)
        ref = m(real, state=s_ref)
        ref_next = m(nxt, state=s_ref)
        s_pad = m.allocate_state(1)
        out = m(batch, attention_mask=mask, state=s_pad)
        out_next = m(nxt, attention_mask=torch.ones(1, pad + 8), state=s_pad)
    assert rel_err(out[:, pad:], ref) <= 1e-5
    assert rel_err(s_pad.ssm, s_ref.ssm) <= 1e-5 and rel_err(s_pad.conv, s_ref.conv) <= 1e-6
    assert rel_err(out_next, ref_next) <= 1e-5


def test_gradcheck_float64():
    m = Mamba2Mixer(8, 2, 4, chunk_size=4, bias=True, backend="torch").double()
    names = [n for n, _ in m.named_parameters()]
    params = [p.detach().clone().requires_grad_() for _, p in m.named_parameters()]
    x = torch.randn(1, 6, 8, dtype=torch.float64, requires_grad=True)

    def f(x, *ps):
        return torch.func.functional_call(m, dict(zip(names, ps)), (x,))

    assert torch.autograd.gradcheck(f, (x, *params), fast_mode=True)


def test_state_shapes_do_not_depend_on_length():
    m = tiny()
    shapes = []
    for length in (3, 20):
        s = m.allocate_state(2)
        with torch.no_grad():
            m(torch.randn(2, length, 32), state=s)
        shapes.append((tuple(s.conv.shape), tuple(s.ssm.shape), s.nbytes()))
    assert shapes[0] == shapes[1]
    assert shapes[0][:2] == ((2, m.dims.conv_dim, 4), (2, 4, 8, 8))
    assert isinstance(s, Mamba2State) and s.ssm.dtype == torch.float32


def test_reset_parameters_deterministic_and_in_range():
    a, b = tiny(), tiny()
    a.reset_parameters(torch.Generator().manual_seed(7))
    b.reset_parameters(torch.Generator().manual_seed(7))
    for (k, va), vb in zip(a.state_dict().items(), b.state_dict().values()):
        assert torch.equal(va, vb), k
    b.reset_parameters(torch.Generator().manual_seed(8))
    assert not torch.equal(a.in_proj.weight, b.in_proj.weight)
    dt = torch.nn.functional.softplus(a.dt_bias)
    assert ((dt >= 1e-4 * 0.999) & (dt <= 0.1 * 1.001)).all()
    A = torch.exp(a.A_log)
    assert ((A >= 1.0) & (A <= 16.0)).all() and torch.equal(a.D, torch.ones(4))


class PassThrough(nn.Module):
    """Stands in for the gated norm: takes (y, z), returns y."""

    def forward(self, y, z):
        return y


def test_act_and_norm_are_replaceable():
    m = tiny()
    m.act = nn.Identity()
    m.norm = PassThrough()
    x = torch.randn(1, 5, 32)
    with torch.no_grad():
        y = m(x)
        # the replaced modules are used on both paths: decode still equals the full forward
        state = m.allocate_state(1)
        steps = torch.cat([m(x[:, :2], state=state)] + [m(x[:, t: t + 1], state=state) for t in (2, 3, 4)], 1)
    assert rel_err(steps, y) <= 1e-5


def test_backend_env_forces_torch(monkeypatch):
    monkeypatch.setenv(backend_mod.ENV_VAR, "torch")
    assert backend_mod.resolve_backend("cuda", "cpu") == "torch"
    assert backend_mod.resolve_backend("auto", "cuda") == "torch"
    monkeypatch.setenv(backend_mod.ENV_VAR, "fast")
    with pytest.raises(ValueError, match="LLAVA_HYBRID_MAMBA_BACKEND"):
        backend_mod.resolve_backend("auto", "cpu")


def test_backend_cuda_on_cpu_raises_with_install_hint(monkeypatch):
    monkeypatch.delenv(backend_mod.ENV_VAR, raising=False)
    with pytest.raises(ValueError, match=r"pip install -e \.\[gpu\]"):
        backend_mod.resolve_backend("cuda", "cpu")
    m = tiny(backend="cuda")
    with pytest.raises(ValueError, match="mamba_backend='cuda'"):
        m(torch.randn(1, 3, 32))
    with pytest.raises(ValueError, match="mamba_backend='fast'"):
        tiny(backend="fast")


def test_backend_auto_on_cpu_is_torch_and_logs_once(monkeypatch, caplog):
    monkeypatch.delenv(backend_mod.ENV_VAR, raising=False)
    backend_mod._resolve.cache_clear()
    with caplog.at_level(logging.INFO, logger=backend_mod.__name__):
        assert backend_mod.resolve_backend("auto", "cpu") == "torch"
        assert backend_mod.resolve_backend("auto", torch.device("cpu")) == "torch"
    lines = [r for r in caplog.records if "Mamba-2 backend" in r.getMessage()]
    assert len(lines) == 1 and "torch" in lines[0].getMessage()


@pytest.mark.gpu
@pytest.mark.parametrize("dtype,tol", [(torch.float32, 1e-3), (torch.bfloat16, 1e-2)])
def test_cuda_mixer_matches_torch(dtype, tol, monkeypatch):
    if backend_mod.cuda_import_error() is not None:  # mamba_ssm's Triton kernels (causal_conv1d optional)
        pytest.skip(f"cuda backend unavailable: {backend_mod.cuda_import_error()}")
    monkeypatch.delenv(backend_mod.ENV_VAR, raising=False)
    ref = Mamba2Mixer(256, 8, 32, n_kv_heads=4, chunk_size=64, backend="torch").cuda().to(dtype)
    fast = Mamba2Mixer(256, 8, 32, n_kv_heads=4, chunk_size=64, backend="cuda").cuda().to(dtype)
    fast.load_state_dict(ref.state_dict())
    x = torch.randn(2, 200, 256, device="cuda", dtype=dtype)
    outs, grads = [], []
    for m in (ref, fast):
        xi = x.clone().requires_grad_()
        y = m(xi)
        y.float().square().mean().backward()
        outs.append(y)
        grads.append([xi.grad] + [p.grad for p in m.parameters()])
    assert rel_err(outs[1].float(), outs[0].float()) <= tol
    for g_fast, g_ref in zip(grads[1], grads[0]):
        assert rel_err(g_fast.float(), g_ref.float()) <= tol
    # decode with the cuda step kernels equals the torch step
    with torch.no_grad():
        states = [m.allocate_state(2) for m in (ref, fast)]
        ys = [m(x[:, :50], state=s) for m, s in zip((ref, fast), states)]
        ys = [m(x[:, 50:51], state=s) for m, s in zip((ref, fast), states)]
    assert rel_err(ys[1].float(), ys[0].float()) <= tol


def test_bf16_mixer_close_to_fp32():
    m = tiny()
    x = torch.randn(2, 19, 32)
    mb = tiny(dtype=torch.bfloat16)
    mb.load_state_dict(m.state_dict())
    with torch.no_grad():
        y, yb = m(x), mb(x.bfloat16())
        state = mb.allocate_state(2)
        steps = torch.cat([mb(x[:, :10].bfloat16(), state=state)]
                          + [mb(x[:, t: t + 1].bfloat16(), state=state) for t in range(10, 19)], 1)
    assert yb.dtype == torch.bfloat16 and state.conv.dtype == torch.bfloat16 and state.ssm.dtype == torch.float32
    assert rel_err(yb.float(), y) <= 2e-2 and rel_err(steps.float(), y) <= 2e-2


def test_in_proj_layout_phi2():
    m = Mamba2Mixer(2560, 32, 80, device="meta")
    assert m.in_proj_layout == {"z": slice(0, 2560), "x": slice(2560, 5120), "B": slice(5120, 7680),
                                "C": slice(7680, 10240), "dt": slice(10240, 10272)}


def test_ops_conv_step_and_gated_norm():
    from llava_hybrid.mamba2 import RMSNormGated, causal_conv1d, causal_conv1d_step

    x, w, bias = torch.randn(2, 6, 9), torch.randn(6, 4), torch.randn(6)
    ref = torch.nn.functional.conv1d(torch.nn.functional.pad(x, (3, 0)), w[:, None], bias, groups=6)
    y, state = causal_conv1d(x[..., :5], w, bias, return_final_state=True)
    steps = [causal_conv1d_step(x[..., t], state, w, bias) for t in range(5, 9)]
    assert torch.allclose(torch.cat([y, torch.stack(steps, -1)], -1), ref, atol=1e-5)
    y2 = causal_conv1d(x[..., 5:], w, bias, initial_state=causal_conv1d(x[..., :5], w, bias, return_final_state=True)[1])
    assert torch.allclose(y2, ref[..., 5:], atol=1e-5)

    norm = RMSNormGated(8, eps=0.0, group_size=4)
    v, z = torch.randn(3, 8), torch.randn(3, 8)
    out = norm(v, z).reshape(3, 2, 4)  # norm_before_gate=False: each group of the gated input has RMS 1
    assert torch.allclose(out.pow(2).mean(-1), torch.ones(3, 2), atol=1e-5)
    gated = (v * torch.nn.functional.silu(z)).reshape(3, 2, 4)
    assert torch.allclose(out, gated / gated.pow(2).mean(-1, keepdim=True).sqrt(), atol=1e-5)
    with pytest.raises(ValueError, match="group_size=3"):
        RMSNormGated(8, group_size=3)


def test_dims_are_the_one_layout_of_mixer_state_and_parameters():
    from llava_hybrid.mamba2 import Mamba2Dims

    dims = Mamba2Dims.of(32, 4, 8, n_kv_heads=2, d_state=6)
    m = Mamba2Mixer.from_dims(dims, bias=True, chunk_size=4, backend="torch")
    assert m.dims == dims and m.in_proj.out_features == dims.d_in_proj == 32 + (16 + 12 + 24) + 4
    assert [s.stop - s.start for s in dims.in_proj_layout.values()] == [32, 16, 12, 24, 4]
    assert sum(p.numel() for p in m.parameters()) == dims.param_count(bias=True)
    state = m.allocate_state(3)
    assert state.conv.shape == dims.conv_state_shape(3) and state.ssm.shape == dims.ssm_state_shape(3)
    assert state.nbytes() == 3 * dims.state_bytes(conv_dtype_bytes=4)
    with pytest.raises(ValueError, match="multiple of n_kv_heads"):
        Mamba2Dims.of(32, 4, 8, n_kv_heads=3)
    with pytest.raises(ValueError, match="d_state=0"):
        Mamba2Dims.of(32, 4, 8, d_state=0)


def test_a_given_op_table_replaces_the_resolved_one():
    from dataclasses import replace

    from llava_hybrid.mamba2 import TORCH_OPS, ssd_sequential

    calls = []

    def sequential_scan(*args):
        calls.append(args[0].shape)
        return ssd_sequential(*args)

    m = tiny()
    custom = tiny(backend=replace(TORCH_OPS, name="sequential", scan=sequential_scan))
    custom.load_state_dict(m.state_dict())
    x = torch.randn(2, 9, 32)
    with torch.no_grad():
        assert rel_err(custom(x), m(x)) < 1e-5
    assert calls == [(2, 9, 4, 8)]
    with pytest.raises(ValueError, match="mamba_backend="):
        tiny(backend=object())


def test_a_zero_length_sequence_mixes_to_nothing_and_keeps_the_state():
    from llava_hybrid.mamba2 import causal_conv1d

    m = tiny()
    assert m(torch.randn(2, 0, 32)).shape == (2, 0, 32)
    state = m.allocate_state(2)
    m(torch.randn(2, 5, 32), state=state)
    conv, ssm = state.conv.clone(), state.ssm.clone()
    assert m(torch.randn(2, 0, 32), attention_mask=torch.ones(2, 0), state=state).shape == (2, 0, 32)
    assert state.seen_tokens == 5 and torch.equal(state.conv, conv) and torch.equal(state.ssm, ssm)
    history = torch.randn(2, 6, 4)
    y, final = causal_conv1d(torch.randn(2, 6, 0), torch.randn(6, 4), torch.randn(6), history, return_final_state=True)
    assert y.shape == (2, 6, 0) and torch.equal(final, history)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_the_half_precision_decode_conv_step_rounds_once_like_the_prefill(dtype):
    """Each decode step's conv output equals the full conv's at that position bit for bit: the dot product
    and the bias are summed in fp32 and rounded once (rounding them separately was 1 ulp off on ~28 %)."""
    from llava_hybrid.mamba2 import causal_conv1d, causal_conv1d_step

    x, w, bias = torch.randn(4, 256, 12).to(dtype), torch.randn(256, 4).to(dtype), torch.randn(256).to(dtype)
    full = causal_conv1d(x, w, bias)  # (4, 256, 12)
    state = torch.zeros(4, 256, 4, dtype=dtype)
    steps = torch.stack([causal_conv1d_step(x[..., t], state, w, bias) for t in range(12)], -1)
    assert steps.dtype == dtype and torch.equal(steps, full)
