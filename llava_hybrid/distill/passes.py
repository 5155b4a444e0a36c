"""The layer passes of Eq. 9, pure model code (no LLaVA): the teacher's taps and the student's second pass.

    capture_layers   forward hooks on the teacher's decoder layers: {i: (x_i, T_i(x_i))}
    layer_only_loss  each student Mamba decoder layer run alone on the teacher's x_i, against T_i(x_i)
    twin_pass        the same second pass batched into the student's own forward: one call of each Mamba
                     layer on [its own input; x_i] stacked along the batch
"""
from __future__ import annotations

from contextlib import contextmanager
from typing import Dict, Optional, Sequence

import torch
from torch import nn

from llava_hybrid.distill.losses import layer_distill_loss
from llava_hybrid.hybrid.init import decoder_layers

__all__ = ["capture_layers", "layer_only_loss", "twin_pass"]


@contextmanager
def capture_layers(model: nn.Module, indices: Sequence[int]):
    """Forward hooks on decoder layers `indices`: yields {i: (input hidden (B, L, D), output (B, L, D))}."""
    captured: Dict[int, tuple] = {}
    handles = []
    layers = decoder_layers(model)

    def hook(i):
        def fn(module, args, kwargs, output):
            x = args[0] if args else kwargs["hidden_states"]
            y = output[0] if isinstance(output, (tuple, list)) else output
            captured[i] = (x, y)
        return fn

    for i in indices:
        handles.append(layers[i].register_forward_hook(hook(i), with_kwargs=True))
    try:
        yield captured
    finally:
        for h in handles:
            h.remove()


def layer_only_loss(student: nn.Module, taps: Dict[int, tuple], mask: Optional[torch.Tensor], layer_norm: str,
                    attention_mask: Optional[torch.Tensor] = None,
                    position_ids: Optional[torch.Tensor] = None) -> torch.Tensor:
    """L_layer (Eq. 9): each student Mamba decoder layer i run on the teacher's input x_i, against T_i(x_i).

    taps: {i: (x_i (B, L, D), T_i(x_i) (B, L, D))} from the teacher (live hooks or a cache); mask (B, L).
    Only the student's Mamba layers run: no embedding, no other layer, no lm_head.
    """
    s_layers = decoder_layers(student)
    t_out, s_out = [], []
    for i, (x, y) in taps.items():
        s_out.append(s_layers[i](x.detach(), attention_mask=attention_mask, position_ids=position_ids))  # (B, L, D)
        t_out.append(y)
    return layer_distill_loss(t_out, s_out, mask, norm=layer_norm)


def _stacked(own: Optional[torch.Tensor], theirs: Optional[torch.Tensor], like: torch.Tensor):
    """[own; theirs] along the batch for a (B, L) mask or positions; None when both are None (a missing
    one is all ones: no padding)."""
    if own is None and theirs is None:
        return None
    ones = lambda: torch.ones(like.shape[:2], dtype=torch.long, device=like.device)  # noqa: E731
    own, theirs = (ones() if t is None else t for t in (own, theirs))
    return torch.cat([own.to(theirs.dtype), theirs])


@contextmanager
def twin_pass(student: nn.Module, taps: Dict[int, tuple], attention_mask: Optional[torch.Tensor] = None,
              position_ids: Optional[torch.Tensor] = None):
    """Eq. 9's second pass batched into the student's forward: each Mamba decoder layer i in `taps` runs once
    on [its own input (B, L, D); the teacher's x_i (B, L, D)] and passes on the first B rows; yields
    {i: S_i(x_i) (B, L, D)}, filled by the forward that runs inside the block.

    A decoder layer treats rows independently (norms, the mixer, the MLP), so the rows equal two separate
    calls; one call reads the weights once and launches each op once. attention_mask / position_ids: the
    teacher's (B, L) for x_i's rows."""
    outputs: Dict[int, torch.Tensor] = {}
    layers, handles = decoder_layers(student), []

    def hooks(i):
        x = taps[i][0].detach()

        def stack(module, args):  # the decoder calls layer(hidden, attention_mask, position_ids, cache)
            hidden, mask, positions, cache = (list(args) + [None] * 4)[:4]
            if cache is not None:
                raise ValueError("twin_pass runs in training forwards only (no cache)")
            both = torch.cat([hidden, x.to(hidden.dtype)])  # (2B, L, D)
            return both, _stacked(mask, attention_mask, hidden), _stacked(positions, position_ids, hidden), None

        def split(module, args, output):
            outputs[i] = output[x.shape[0]:]  # S_i(x_i)
            return output[: x.shape[0]]

        return stack, split

    for i in taps:
        stack, split = hooks(i)
        handles += [layers[i].register_forward_pre_hook(stack), layers[i].register_forward_hook(split)]
    try:
        yield outputs
    finally:
        for h in handles:
            h.remove()
