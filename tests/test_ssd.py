"""SSD scan: the chunked form equals the per-timestep recurrence, for any length, with states."""
import pytest
import torch

from llava_hybrid.mamba2 import segsum, ssd_chunked, ssd_sequential, ssd_step


def rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a.double() - b.double()).norm() / b.double().norm().clamp_min(1e-30)).item()


def make_inputs(b=2, l=17, h=4, p=3, g=2, n=5, dtype=torch.float32, with_state=True, with_D=True):
    x = torch.randn(b, l, h, p)
    dt = torch.nn.functional.softplus(torch.randn(b, l, h) - 1.0)  # positive, like softplus(dt + dt_bias)
    A = -torch.empty(h).uniform_(1.0, 16.0)  # like -exp(A_log) at init
    B = torch.randn(b, l, g, n)
    C = torch.randn(b, l, g, n)
    D = torch.randn(h) if with_D else None
    s0 = torch.randn(b, h, p, n) if with_state else None
    return x.to(dtype), dt.to(dtype), A, B.to(dtype), C.to(dtype), D, s0


def test_segsum_is_stable_and_exact():
    a = -torch.rand(3, 50) * 30.0  # large negative steps, like dt * A
    out = segsum(a)  # (3, 50, 50)
    cs = torch.cumsum(a.double(), -1)
    ref = cs[..., :, None] - cs[..., None, :]  # sum_{j+1..i}
    lower = torch.tril(torch.ones(50, 50, dtype=torch.bool))
    assert torch.isneginf(out[..., ~lower]).all()
    assert torch.allclose(out[..., lower].double(), ref[..., lower], rtol=1e-5, atol=1e-3)
    assert torch.isfinite(torch.exp(out)).all() and (torch.exp(out) <= 1.0).all()


@pytest.mark.parametrize("chunk", [16, 64])
@pytest.mark.parametrize("length", [1, 17, 64, 100, 257])
@pytest.mark.parametrize("groups", [2, 4])  # g < h and g == h
def test_chunked_equals_sequential(length, chunk, groups):
    x, dt, A, B, C, D, s0 = make_inputs(l=length, g=groups)
    y_c, s_c = ssd_chunked(x, dt, A, B, C, chunk, D=D, initial_state=s0)
    y_s, s_s = ssd_sequential(x, dt, A, B, C, chunk, D=D, initial_state=s0)
    assert y_c.shape == x.shape and s_c.shape == s0.shape and s_c.dtype == torch.float32
    assert rel_err(y_c, y_s) <= 1e-5
    assert rel_err(s_c, s_s) <= 1e-5


def test_no_initial_state_no_D():
    x, dt, A, B, C, D, s0 = make_inputs(l=40, with_state=False, with_D=False)
    y_c, s_c = ssd_chunked(x, dt, A, B, C, 16)
    y_s, s_s = ssd_sequential(x, dt, A, B, C)
    assert rel_err(y_c, y_s) <= 1e-5 and rel_err(s_c, s_s) <= 1e-5


def test_padding_does_not_change_final_state():
    # 17 tokens padded to 32 internally vs the same 17 tokens at chunk 17 (no padding)
    x, dt, A, B, C, D, s0 = make_inputs(l=17)
    _, s_pad = ssd_chunked(x, dt, A, B, C, 16, D=D, initial_state=s0)
    _, s_exact = ssd_chunked(x, dt, A, B, C, 17, D=D, initial_state=s0)
    assert rel_err(s_pad, s_exact) <= 1e-6


def test_split_sequence_equals_whole():
    x, dt, A, B, C, D, s0 = make_inputs(l=100)
    y, s = ssd_chunked(x, dt, A, B, C, 16, D=D, initial_state=s0)
    y1, s1 = ssd_chunked(x[:, :37], dt[:, :37], A, B[:, :37], C[:, :37], 16, D=D, initial_state=s0)
    y2, s2 = ssd_chunked(x[:, 37:], dt[:, 37:], A, B[:, 37:], C[:, 37:], 16, D=D, initial_state=s1)
    assert rel_err(torch.cat([y1, y2], 1), y) <= 1e-5
    assert rel_err(s2, s) <= 1e-5


def test_step_chain_equals_sequential():
    x, dt, A, B, C, D, s0 = make_inputs(l=23)
    y_s, s_s = ssd_sequential(x, dt, A, B, C, D=D, initial_state=s0)
    state = s0.clone()
    ys = [ssd_step(state, x[:, t], dt[:, t], A, B[:, t], C[:, t], D) for t in range(x.shape[1])]
    assert rel_err(torch.stack(ys, 1), y_s) <= 1e-6
    assert rel_err(state, s_s) <= 1e-6
    # and the chunked final state continues correctly with steps
    _, s_c = ssd_chunked(x[:, :20], dt[:, :20], A, B[:, :20], C[:, :20], 8, D=D, initial_state=s0)
    y_last = [ssd_step(s_c, x[:, t], dt[:, t], A, B[:, t], C[:, t], D) for t in range(20, 23)]
    assert rel_err(torch.stack(y_last, 1), y_s[:, 20:]) <= 1e-5


def test_bf16_runs_and_is_close():
    x, dt, A, B, C, D, s0 = make_inputs(l=70, dtype=torch.bfloat16)
    y_b, s_b = ssd_chunked(x, dt, A, B, C, 16, D=D, initial_state=s0)
    assert y_b.dtype == torch.bfloat16 and s_b.dtype == torch.float32
    # the same bf16-rounded inputs in fp32: only the output rounding differs
    y_f, s_f = ssd_sequential(x.float(), dt.float(), A, B.float(), C.float(), D=D, initial_state=s0)
    assert rel_err(y_b.float(), y_f) <= 1e-2
    assert rel_err(s_b, s_f) <= 1e-5


def test_chunked_is_differentiable_float64():
    x, dt, A, B, C, D, s0 = make_inputs(b=1, l=6, h=2, p=2, g=1, n=2)
    args = [t.double().requires_grad_() for t in (x, dt, A, B, C, D, s0)]

    def f(x, dt, A, B, C, D, s0):
        return ssd_chunked(x, dt, A, B, C, 4, D=D, initial_state=s0)

    assert torch.autograd.gradcheck(f, args)


@pytest.mark.gpu
@pytest.mark.parametrize("dtype,tol", [(torch.float32, 1e-3), (torch.bfloat16, 1e-2)])
def test_cuda_kernel_matches_torch(dtype, tol):
    pytest.importorskip("mamba_ssm")
    from llava_hybrid.mamba2.backend import cuda_ops

    kernel = cuda_ops().scan
    x, dt, A, B, C, D, s0 = make_inputs(b=2, l=300, h=8, p=64, g=8, n=64, dtype=dtype)
    args = [t.cuda().requires_grad_() for t in (x, dt.float(), A, B, C, D, s0)]
    y_k, s_k = kernel(*args[:5], 64, args[5], args[6])
    (y_k.float().square().sum() + s_k.square().sum()).backward()
    grads_k = [a.grad.clone() for a in args]
    for a in args:
        a.grad = None
    y_t, s_t = ssd_chunked(*args[:5], 64, D=args[5], initial_state=args[6])
    (y_t.float().square().sum() + s_t.square().sum()).backward()
    assert rel_err(y_k.float(), y_t.float()) <= tol and rel_err(s_k, s_t) <= tol
    for gk, a in zip(grads_k, args):
        assert rel_err(gk.float(), a.grad.float()) <= tol


def test_bad_shapes_raise_value_error():
    x, dt, A, B, C, D, s0 = make_inputs(l=8, h=4, g=2)
    with pytest.raises(ValueError, match="dt has shape"):
        ssd_chunked(x, dt[:, :-1], A, B, C)
    with pytest.raises(ValueError, match="initial_state has shape"):
        ssd_chunked(x, dt, A, B, C, initial_state=s0[:, :2])
    with pytest.raises(ValueError, match="multiple of the B/C groups"):
        ssd_chunked(x, dt, A, torch.randn(2, 8, 3, 5), torch.randn(2, 8, 3, 5))
    with pytest.raises(ValueError, match="chunk_size"):
        ssd_chunked(x, dt, A, B, C, chunk_size=0)


def test_a_zero_length_sequence_gives_an_empty_output_and_keeps_the_state():
    x, dt, A, B, C, D, s0 = make_inputs(l=0)
    for fn in (ssd_chunked, ssd_sequential):
        y, final = fn(x, dt, A, B, C, chunk_size=4, D=D, initial_state=s0)
        assert y.shape == (2, 0, 4, 3) and torch.equal(final, s0), fn.__name__
        _, zeros = fn(x, dt, A, B, C, chunk_size=4, D=D)
        assert torch.equal(zeros, torch.zeros(2, 4, 3, 5)), fn.__name__
