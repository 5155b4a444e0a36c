"""Which decoder layers become Mamba-2 layers: the `--mm_hybrid_*` flags turned into a sorted index list.

The plan is a list of layer indices (serialisable, stored as `config.mamba_layers`); every other layer
keeps its attention. For logs, `layer_pattern` writes it as one string, `M` for Mamba and `*` for
attention (Megatron's symbols), e.g. 8 layers with [0, 4] -> "M***M***".
"""

from __future__ import annotations

import math
from typing import Sequence

POSITIONS = ("even", "begin", "middle", "end")
MAMBA_SYMBOL = "M"
ATTENTION_SYMBOL = "*"


def _parse_layers(layers: str | Sequence[int]) -> list[int]:
    """`--mm_hybrid_layers` as given ("0,4,8", "[0, 4]", or a list) -> list of ints (order kept)."""
    if isinstance(layers, str):
        text = layers.strip().strip("[]").strip()
        if not text:
            return []
        items = [item.strip() for item in text.split(",")]
        try:
            return [int(item) for item in items]
        except ValueError:
            raise ValueError(
                f"--mm_hybrid_layers must be comma-separated layer indices such as '0,4,8', got {layers!r}"
            ) from None
    out = []
    for item in layers:
        if isinstance(item, bool) or int(item) != item:
            raise ValueError(f"--mm_hybrid_layers must hold integer layer indices, got {item!r} in {layers!r}")
        out.append(int(item))
    return out


def _check_layers(layers: list[int], num_layers: int) -> list[int]:
    """Range and uniqueness checks for an explicit list; returns it sorted."""
    bad = [i for i in layers if not 0 <= i < num_layers]
    if bad:
        raise ValueError(
            f"--mm_hybrid_layers: indices {bad} are out of range for a decoder of {num_layers} layers "
            f"(valid: 0..{num_layers - 1})"
        )
    repeated = sorted({i for i in layers if layers.count(i) > 1})
    if repeated:
        raise ValueError(f"--mm_hybrid_layers: indices {repeated} are repeated in {layers}")
    return sorted(layers)


def _count_from_ratio(num_layers: int, ratio: float) -> int:
    """k = ratio * num_layers rounded to the nearest whole number (halves up), at least 1.

    SmolLM2's 30 layers at 0.25 give 7.5 -> 8 Mamba layers, at 0.125 3.75 -> 4.
    """
    if not 0 < ratio <= 1:
        raise ValueError(f"--mm_hybrid_ratio must be in (0, 1], got {ratio}")
    k = ratio * num_layers
    return max(1, int(math.floor(k + 0.5 + 1e-9)))  # tolerance: 1/3 of 3 layers counts as exactly 1


def _ratio_note(num_layers: int, ratio: float, plan: Sequence[int]) -> str:
    """The one line printed when a ratio does not give a whole number of layers."""
    return (f"layer plan: --mm_hybrid_ratio {ratio} x {num_layers} layers = {ratio * num_layers:g} is not a whole "
            f"number; using the nearest, {len(plan)} Mamba layers ({len(plan) / num_layers:.1%}): {list(plan)} "
            f"{layer_pattern(num_layers, plan)} (pass --mm_hybrid_layers for an exact list)")


def plan_mamba_layers(
    num_layers: int,
    ratio: float | None = None,
    positions: str = "even",
    layers: str | Sequence[int] | None = None,
) -> list[int]:
    """Indices of the decoder layers whose attention is replaced by Mamba-2, sorted.

    Args:
        num_layers: number of decoder layers (Phi-2: 32).
        ratio: `--mm_hybrid_ratio`, the fraction of layers made Mamba, in (0, 1]; k = ratio * num_layers,
            rounded to the nearest whole number (halves up, at least 1) when it is not one, and the plan
            is then printed (stdout), so the rounding is never silent.
        positions: `--mm_hybrid_positions`, where the k layers go:
            "even"   -> indices round(i * num_layers / k) for i < k (always includes layer 0);
            "begin"  -> the first k layers; "end" -> the last k; "middle" -> k consecutive layers centred
            in the stack (start = (num_layers - k) // 2).
        layers: `--mm_hybrid_layers`, an explicit list ("0,6,12,18" or [0, 6, 12, 18]). It wins over
            ratio/positions; giving a ratio that disagrees with its length is an error.

    Examples for 32 layers: ratio 0.25 -> [0, 4, ..., 28]; 0.5 -> [0, 2, ..., 30]; 0.125 -> [0, 8, 16, 24].
    For 30 layers (SmolLM2): 0.25 -> 7.5 -> 8 layers [0, 4, 8, 11, 15, 19, 22, 26]; 0.125 -> 4 layers.
    The official MaTVLM 12.5 % model used [0, 6, 12, 18] (not evenly spaced over 32 layers):
    `--mm_hybrid_layers 0,6,12,18` reproduces it.

    Raises:
        ValueError naming the flag: ratio outside (0, 1], explicit
        indices out of range or repeated, ratio and explicit list disagreeing, unknown positions.
    """
    if num_layers <= 0:
        raise ValueError(f"num_layers must be positive, got {num_layers}")
    if positions not in POSITIONS:
        raise ValueError(f"--mm_hybrid_positions must be one of {', '.join(POSITIONS)}; got {positions!r}")

    if layers is not None:
        explicit = _check_layers(_parse_layers(layers), num_layers)
        if ratio is not None and _count_from_ratio(num_layers, ratio) != len(explicit):
            raise ValueError(
                f"--mm_hybrid_ratio {ratio} ({_count_from_ratio(num_layers, ratio)} of {num_layers} layers) "
                f"disagrees with --mm_hybrid_layers {explicit} ({len(explicit)} layers); give one of them"
            )
        return explicit

    if ratio is None:
        return []
    k = _count_from_ratio(num_layers, ratio)
    if positions == "even":
        plan = [round(i * num_layers / k) for i in range(k)]
    elif positions == "begin":
        plan = list(range(k))
    elif positions == "end":
        plan = list(range(num_layers - k, num_layers))
    else:  # middle
        start = (num_layers - k) // 2
        plan = list(range(start, start + k))
    assert len(set(plan)) == k and all(0 <= i < num_layers for i in plan), plan
    plan = sorted(plan)
    if abs(ratio * num_layers - k) > 1e-6:
        print(_ratio_note(num_layers, ratio, plan), flush=True)
    return plan


def layer_pattern(num_layers: int, mamba_layers: Sequence[int]) -> str:
    """One string for logs: "M" for a Mamba layer, "*" for attention (e.g. "M***M***")."""
    chosen = set(mamba_layers)
    return "".join(MAMBA_SYMBOL if i in chosen else ATTENTION_SYMBOL for i in range(num_layers))
