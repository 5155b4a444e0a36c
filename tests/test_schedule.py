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
    assert 0 < decay[-1] < decay[0]                                    # the last step still trains
    assert opt.param_groups[0]["lr"] == pytest.approx(0.0, abs=1e-12)  # floor only after the last step
    if shape == "linear":
        assert decay[-1] == pytest.approx(2e-4 / 11)                    # K = 10 steps: 10/11 .. 1/11


def test_wsd_fractions_and_errors():
    f = wsd_lambda(20, warmup_fraction=0.25, decay_fraction=0.5)
    assert [round(f(s), 3) for s in (0, 4, 5, 9, 10, 19, 20)] == [0.2, 1.0, 1.0, 1.0, 0.909, 0.091, 0.0]
    with pytest.raises(ValueError, match="--wsd_decay_shape"):
        wsd_lambda(10, decay="step")
    with pytest.raises(ValueError, match="must be <= 1"):
        wsd_lambda(10, 0.6, 0.6)
    with pytest.raises(ValueError, match="--max_steps"):
        wsd_lambda(0)


@pytest.mark.parametrize("shape", ["linear", "cosine"])
@pytest.mark.parametrize("steps", [1, 2, 3, 4, 10, 37, 100, 1000])
def test_every_step_of_a_wsd_run_trains(steps, shape):
    """The last step's learning rate is > 0 (it was exactly 0: the step did nothing); 0 only after it."""
    f = wsd_lambda(steps, decay=shape)
    assert all(f(s) > 0 for s in range(steps)), [f(s) for s in range(steps)]
    assert f(steps) == 0.0 or steps == 1  # one step: no room for a decay step


def test_wsd_short_runs():
    """4 steps: 10 % rounds to 0 but warmup and decay still get one step each; no fraction -> constant."""
    f = wsd_lambda(4)
    assert [f(s) for s in range(5)] == [1.0, 1.0, 1.0, 0.5, 0.0]
    g = wsd_lambda(3, warmup_fraction=0.0, decay_fraction=0.0)
    assert [g(s) for s in range(4)] == [1.0, 1.0, 1.0, 1.0]
    h = wsd_lambda(1)
    assert h(0) == 1.0 and h(1) == 1.0
