"""Distillation losses of MaTVLM (Eq. 7-11), one function per term.

    L = alpha * L_layer + beta * L_prob + gamma * L_ce                                    (Eq. 11)

    L_prob  = T^2 * KL(P_t || P_s),  P = softmax(z / T)                                   (Eq. 7-8)
    L_layer = sum_l || T_l(x) - S_l(x) ||_2,  x = the teacher's input to layer l          (Eq. 9)
    L_ce    = -sum_i y_i log yhat_i  (next-token cross-entropy on the labels)             (Eq. 10)

Conventions (torchtune-KD style):
- softmax / log-softmax and every reduction run in fp32, whatever the logits' dtype;
- `mask` is a (B, L) tensor, 1 (True) where a position is covered; see `coverage_mask`;
- a loss whose mask covers nothing returns a zero that still carries the graph (so `backward`
  and DeepSpeed's all-reduce see the same parameters on every rank).

Normalisations versus the official MaTVLM code (which uses `kl_div(reduction="batchmean") * T^2`
over every position of the padded batch, and `torch.norm(t - s)` over the whole (B, L, D) tensor):
- `prob_distill_loss` averages the per-token KL over the covered tokens. With coverage "all" and
  no padding, official = ours * (L) (batchmean divides the sum over B*L tokens by B only).
- `layer_distill_loss(norm="l2")` is the unsquared Frobenius norm over the covered rows of each
  layer's (B, L, D) difference, summed over layers: with coverage "all" and no padding it is exactly
  the official value. `norm="mse"` is the mean over covered tokens and channels of the squared
  difference (scale-free in B, L and D), summed over layers. `norm="token_l2"` is Eq. 9 per token:
  the mean over covered tokens of || T_l(x)_t - S_l(x)_t ||_2 (free of B and L, still in the hidden
  state's units), summed over layers. With N covered tokens and e_t each token's error norm,
  l2 = sqrt(sum_t e_t^2) >= sqrt(N) * token_l2 = sqrt(N) * mean_t e_t (equal when all e_t are equal).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Sequence

import torch
import torch.nn.functional as F

IGNORE_INDEX = -100  # llava.constants.IGNORE_INDEX
LAYER_NORMS = ("l2", "mse", "token_l2")
TOKEN_COVERAGES = ("all", "answer")


@dataclass
class DistillLosses:
    """Each term of Eq. 11 (already weighted into `total`; the terms themselves are unweighted)."""

    total: torch.Tensor
    layer: torch.Tensor
    prob: torch.Tensor
    ce: torch.Tensor

    def as_floats(self) -> dict:
        """Detached python floats for `Trainer.log`."""
        return {"loss_total": float(self.total.detach()), "loss_layer": float(self.layer.detach()),
                "loss_prob": float(self.prob.detach()), "loss_ce": float(self.ce.detach())}


def coverage_mask(labels: torch.Tensor, attention_mask: Optional[torch.Tensor] = None,
                  tokens: str = "all") -> torch.Tensor:
    """Which positions the distillation losses cover, as a (B, L) bool tensor.

    labels: (B, L) with IGNORE_INDEX on non-target tokens (image, prompt, padding).
    attention_mask: (B, L), 1 = real token, 0 = padding (None: no padding).
    tokens: "all" -> every real position (image and prompt tokens too, as the official code);
            "answer" -> positions whose *next* label is a target: the logits (and hidden states) at
            position i predict token i+1, so the answer tokens' predictions sit one step earlier.
    """
    if tokens not in TOKEN_COVERAGES:
        raise ValueError(f"--distill_tokens must be one of {TOKEN_COVERAGES}, got {tokens!r}")
    real = torch.ones_like(labels, dtype=torch.bool) if attention_mask is None else attention_mask.bool()
    if tokens == "all":
        return real
    nxt = torch.zeros_like(real)                                   # (B, L)
    nxt[:, :-1] = labels[:, 1:] != IGNORE_INDEX
    return nxt & real


def _zero_like_graph(*tensors: torch.Tensor) -> torch.Tensor:
    """A fp32 zero connected to the inputs' graphs (gradient 0 everywhere)."""
    return sum(t.float().sum() * 0.0 for t in tensors)


def prob_distill_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor,
                      mask: Optional[torch.Tensor] = None, temperature: float = 1.0) -> torch.Tensor:
    """L_prob = T^2 * KL(P_t || P_s) on temperature-softened softmaxes, mean over covered tokens.

    student_logits, teacher_logits: (B, L, V); mask: (B, L) or None (all covered).
    Returns a fp32 scalar; 0 when the mask covers nothing.
    """
    if temperature <= 0:
        raise ValueError(f"--distill_temperature must be > 0, got {temperature}")
    assert student_logits.shape == teacher_logits.shape, (student_logits.shape, teacher_logits.shape)
    if mask is None:
        mask = torch.ones(student_logits.shape[:-1], dtype=torch.bool, device=student_logits.device)
    mask = mask.bool()
    if not mask.any():
        return _zero_like_graph(student_logits)
    # 1. softened log-probabilities in fp32, on covered rows only
    s = student_logits[mask].float() / temperature                  # (N, V)
    t = teacher_logits[mask].float().detach() / temperature         # (N, V)
    log_ps = F.log_softmax(s, dim=-1)                               # (N, V)
    log_pt = F.log_softmax(t, dim=-1)                               # (N, V)
    # 2. KL(P_t || P_s) per token = sum_v P_t (log P_t - log P_s)
    kl = (log_pt.exp() * (log_pt - log_ps)).sum(dim=-1)             # (N,)
    # 3. T^2 keeps gradient magnitudes comparable across temperatures (Hinton et al.)
    return temperature ** 2 * kl.mean()


def layer_distill_loss(teacher_outputs: Sequence[torch.Tensor], student_outputs: Sequence[torch.Tensor],
                       mask: Optional[torch.Tensor] = None, norm: str = "l2") -> torch.Tensor:
    """L_layer = sum over Mamba layers of the distance between teacher and student layer outputs.

    teacher_outputs, student_outputs: one (B, L, D) tensor per Mamba layer, the student layer run on
    the teacher's input. mask: (B, L) or None. norm: "l2" -> unsquared Frobenius norm of the
    covered rows (Eq. 9 as written, the official code's value when nothing is masked); "mse" ->
    mean over covered tokens and channels of the squared difference; "token_l2" -> mean over
    covered tokens of each token's unsquared l2 distance.
    Returns a fp32 scalar; 0 when there is no layer or the mask covers nothing.
    """
    if norm not in LAYER_NORMS:
        raise ValueError(f"--distill_layer_norm must be one of {LAYER_NORMS}, got {norm!r}")
    if len(teacher_outputs) != len(student_outputs):
        raise ValueError(f"layer_distill_loss: {len(teacher_outputs)} teacher outputs but "
                         f"{len(student_outputs)} student outputs")
    if not student_outputs:
        return torch.zeros((), dtype=torch.float32)
    total = _zero_like_graph(*student_outputs)
    for t, s in zip(teacher_outputs, student_outputs):
        assert t.shape == s.shape, (t.shape, s.shape)
        m = torch.ones(s.shape[:-1], dtype=torch.bool, device=s.device) if mask is None else mask.bool()
        if not m.any():
            continue
        diff = t[m].float().detach() - s[m].float()                 # (N, D)
        if norm == "l2":
            total = total + diff.pow(2).sum().sqrt()
        elif norm == "token_l2":
            total = total + diff.pow(2).sum(dim=-1).sqrt().mean()    # mean_t ||e_t||_2
        else:
            total = total + diff.pow(2).mean()
    return total


def ce_loss(logits: torch.Tensor, labels: torch.Tensor, ignore_index: int = IGNORE_INDEX) -> torch.Tensor:
    """Next-token cross-entropy (Eq. 10), mean over target tokens; 0 when there is none.

    logits: (B, L, V); labels: (B, L), position i's logits are scored against labels[i + 1].
    """
    shift_logits = logits[:, :-1].float()                           # (B, L-1, V)
    shift_labels = labels[:, 1:]                                    # (B, L-1)
    keep = shift_labels != ignore_index
    if not keep.any():
        return _zero_like_graph(logits)
    return F.cross_entropy(shift_logits[keep], shift_labels[keep])


def total_loss(*, layer: torch.Tensor, prob: torch.Tensor, ce: torch.Tensor,
               alpha: float = 1.0, beta: float = 1.0, gamma: float = 0.0) -> DistillLosses:
    """Eq. 11: total = alpha * L_layer + beta * L_prob + gamma * L_ce, with every term kept."""
    total = alpha * layer.float() + beta * prob.float() + gamma * ce.float()
    return DistillLosses(total=total, layer=layer, prob=prob, ce=ce)
