"""Warmup-stable-decay LR schedule."""
import pytest
import torch

from llava_hybrid.distill.schedule import wsd_lambda, wsd_scheduler


@pytest.mark.parametrize("shape", ["linear", "cosine"])
def test_wsd_shape(shape):
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=2e-4)
    sched = wsd_scheduler(opt, total_steps=100, decay=shape)
    lrs = []
    for _ in range(100):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    warm, stable, decay = lrs[:10], lrs[10:90], lrs[90:]
    assert warm[0] == pytest.approx(2e-5) and warm[-1] == pytest.approx(2e-4)
    assert all(a < b for a, b in zip(warm, warm[1:]))                 # ramps up
    assert all(v == pytest.approx(2e-4) for v in stable)               # flat
    assert all(a > b for a, b in zip(decay, decay[1:]))                # decays
    assert decay[-1] == pytest.approx(0.0, abs=1e-12)                  # to 0 at the last step
    if shape == "linear":
        assert decay[4] == pytest.approx(2e-4 * 0.5)


def test_wsd_fractions_and_errors():
    f = wsd_lambda(20, warmup_fraction=0.25, decay_fraction=0.5)
    assert [round(f(s), 3) for s in (0, 4, 5, 9, 10, 19)] == [0.2, 1.0, 1.0, 1.0, 0.9, 0.0]
    with pytest.raises(ValueError, match="--wsd_decay_shape"):
        wsd_lambda(10, decay="step")
    with pytest.raises(ValueError, match="must be <= 1"):
        wsd_lambda(10, 0.6, 0.6)
    with pytest.raises(ValueError, match="--max_steps"):
        wsd_lambda(0)


def test_wsd_short_runs():
    """4 steps: 10 % rounds to 0 but warmup and decay still get one step each; no fraction -> constant."""
    f = wsd_lambda(4)
    assert [f(s) for s in range(5)] == [1.0, 1.0, 1.0, 0.0, 0.0]
    g = wsd_lambda(3, warmup_fraction=0.0, decay_fraction=0.0)
    assert [g(s) for s in range(4)] == [1.0, 1.0, 1.0, 1.0]
    h = wsd_lambda(1)
    assert h(0) == 1.0 and h(1) == 1.0
