"""Distillation losses (Eq. 7-11) against direct computations with explicit loops."""
import math

import pytest
import torch

from llava_hybrid.distill.losses import (IGNORE_INDEX, ce_loss, coverage_mask, layer_distill_loss,
                                         prob_distill_loss, total_loss)


def _softmax(row, T):
    ex = [math.exp(v / T) for v in row]
    z = sum(ex)
    return [e / z for e in ex]


def _kl_loop(s_logits, t_logits, mask, T):
    """Mean over covered tokens of T^2 * sum_v p_t (log p_t - log p_s), with python floats."""
    total, n = 0.0, 0
    B, L, _ = s_logits.shape
    for b in range(B):
        for i in range(L):
            if not mask[b, i]:
                continue
            ps = _softmax(s_logits[b, i].tolist(), T)
            pt = _softmax(t_logits[b, i].tolist(), T)
            total += T * T * sum(q * (math.log(q) - math.log(p)) for p, q in zip(ps, pt))
            n += 1
    return total / n


@pytest.mark.parametrize("T", [1.0, 2.0])
def test_prob_loss_matches_loop_with_mask(T):
    g = torch.Generator().manual_seed(0)
    s, t = torch.randn(2, 5, 7, generator=g), torch.randn(2, 5, 7, generator=g) * 2
    mask = torch.tensor([[1, 1, 0, 1, 0], [0, 1, 1, 1, 1]], dtype=torch.bool)
    got = prob_distill_loss(s, t, mask, temperature=T)
    assert got.dtype == torch.float32
    assert got.item() == pytest.approx(_kl_loop(s, t, mask, T), rel=1e-5)
    # masked-out positions do not matter
    s2 = s.clone()
    s2[~mask] = 100.0
    assert prob_distill_loss(s2, t, mask, temperature=T).item() == pytest.approx(got.item(), rel=1e-6)


def test_prob_loss_temperature_scaling():
    """T=2 equals 4 x the KL of the halved logits at T=1 (T^2 times the softened KL)."""
    g = torch.Generator().manual_seed(1)
    s, t = torch.randn(3, 4, 11, generator=g), torch.randn(3, 4, 11, generator=g)
    soft_kl = prob_distill_loss(s / 2, t / 2, temperature=1.0)
    assert prob_distill_loss(s, t, temperature=2.0).item() == pytest.approx(4 * soft_kl.item(), rel=1e-5)


def test_prob_loss_zero_cases_and_bf16():
    s = torch.randn(2, 3, 5, requires_grad=True)
    assert prob_distill_loss(s, s.detach().clone()).abs().item() < 1e-6
    z = prob_distill_loss(s, torch.randn(2, 3, 5), torch.zeros(2, 3, dtype=torch.bool))
    assert z.item() == 0.0
    z.backward()                                  # still carries the graph
    assert s.grad is not None and s.grad.abs().sum() == 0
    lo = prob_distill_loss(s.detach().bfloat16(), torch.randn(2, 3, 5).bfloat16())
    assert lo.dtype == torch.float32 and lo.item() > 0


@pytest.mark.parametrize("norm", ["l2", "mse"])
def test_layer_loss_matches_loop(norm):
    g = torch.Generator().manual_seed(2)
    teach = [torch.randn(2, 4, 3, generator=g) for _ in range(2)]
    stud = [torch.randn(2, 4, 3, generator=g) for _ in range(2)]
    mask = torch.tensor([[1, 0, 1, 1], [1, 1, 0, 0]], dtype=torch.bool)
    want = 0.0
    for t, s in zip(teach, stud):
        sq, n = 0.0, 0
        for b in range(2):
            for i in range(4):
                if mask[b, i]:
                    sq += sum((t[b, i, d].item() - s[b, i, d].item()) ** 2 for d in range(3))
                    n += 1
        want += math.sqrt(sq) if norm == "l2" else sq / (n * 3)
    got = layer_distill_loss(teach, stud, mask, norm=norm)
    assert got.item() == pytest.approx(want, rel=1e-5)


def test_layer_loss_unmasked_is_official_frobenius_and_zero_cases():
    t = [torch.randn(2, 6, 4)]
    s = [torch.randn(2, 6, 4, requires_grad=True)]
    assert layer_distill_loss(t, s).item() == pytest.approx(torch.norm(t[0] - s[0]).item(), rel=1e-6)
    assert layer_distill_loss(t, [t[0].clone()]).item() == 0.0
    z = layer_distill_loss(t, s, torch.zeros(2, 6, dtype=torch.bool))
    assert z.item() == 0.0
    z.backward()
    assert s[0].grad is not None
    with pytest.raises(ValueError, match="--distill_layer_norm"):
        layer_distill_loss(t, s, norm="l1")


def test_ce_loss_matches_loop_and_all_ignored():
    g = torch.Generator().manual_seed(3)
    logits = torch.randn(2, 4, 6, generator=g)
    labels = torch.tensor([[IGNORE_INDEX, 2, 3, IGNORE_INDEX], [IGNORE_INDEX, IGNORE_INDEX, 5, 1]])
    terms = []
    for b in range(2):
        for i in range(3):
            y = labels[b, i + 1].item()
            if y != IGNORE_INDEX:
                row = logits[b, i].tolist()
                terms.append(-math.log(_softmax(row, 1.0)[y]))
    assert ce_loss(logits, labels).item() == pytest.approx(sum(terms) / len(terms), rel=1e-5)
    assert ce_loss(logits, torch.full((2, 4), IGNORE_INDEX)).item() == 0.0


def test_coverage_and_total():
    labels = torch.tensor([[IGNORE_INDEX, IGNORE_INDEX, 7, 8, IGNORE_INDEX]])
    attn = torch.tensor([[1, 1, 1, 1, 0]])
    assert coverage_mask(labels, attn, "all").tolist() == [[True, True, True, True, False]]
    # position i predicts token i+1: answer tokens 2, 3 are predicted at positions 1, 2
    assert coverage_mask(labels, attn, "answer").tolist() == [[False, True, True, False, False]]
    with pytest.raises(ValueError, match="--distill_tokens"):
        coverage_mask(labels, attn, "prompt")
    out = total_loss(layer=torch.tensor(2.0), prob=torch.tensor(3.0), ce=torch.tensor(5.0),
                     alpha=1.0, beta=0.5, gamma=0.1)
    assert out.total.item() == pytest.approx(2.0 + 1.5 + 0.5)
    assert out.as_floats()["loss_ce"] == 5.0


def test_token_l2_is_eq9_per_token_and_bounded_by_the_whole_tensor_norm():
    from llava_hybrid.distill.losses import layer_distill_loss

    g = torch.Generator().manual_seed(3)
    t, s = torch.randn(2, 5, 8, generator=g), torch.randn(2, 5, 8, generator=g)
    per_token = (t - s).norm(dim=-1)                                   # (B, L)
    got = layer_distill_loss([t], [s], norm="token_l2")
    assert torch.allclose(got, per_token.mean())
    l2 = layer_distill_loss([t], [s], norm="l2")
    assert l2 >= got * (10 ** 0.5) - 1e-5                               # sqrt(N) * mean <= sqrt(sum of squares)
    mask = torch.tensor([[1, 1, 0, 0, 0], [1, 0, 0, 0, 0]], dtype=torch.bool)
    assert torch.allclose(layer_distill_loss([t], [s], mask, norm="token_l2"), per_token[mask].mean())
