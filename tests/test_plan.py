"""Layer plan: --mm_hybrid_ratio / --mm_hybrid_positions / --mm_hybrid_layers semantics."""

import pytest

from llava_hybrid.hybrid.plan import layer_pattern, plan_mamba_layers


@pytest.mark.parametrize(
    "ratio, expected",
    [
        (0.25, list(range(0, 32, 4))),
        (0.5, list(range(0, 32, 2))),
        (0.125, [0, 8, 16, 24]),
        (1.0, list(range(32))),
    ],
)
def test_even_spacing_32_layers(ratio, expected):
    assert plan_mamba_layers(32, ratio=ratio) == expected


def test_even_spacing_rounds_when_not_a_divisor():
    # 3 of 8 layers: round(0), round(2.667), round(5.333)
    assert plan_mamba_layers(8, ratio=0.375) == [0, 3, 5]
    assert plan_mamba_layers(3, ratio=1 / 3) == [0]


def test_a_ratio_that_does_not_divide_the_layers_takes_the_nearest_count_and_prints_the_plan(capsys):
    # SmolLM2: 30 layers; 0.25 -> 7.5 -> 8, 0.125 -> 3.75 -> 4, 0.5 -> exactly 15 (nothing printed)
    assert plan_mamba_layers(30, ratio=0.25) == [0, 4, 8, 11, 15, 19, 22, 26]
    printed = capsys.readouterr().out
    assert "7.5" in printed and "8 Mamba layers" in printed and "M***M***M**M***M***M**M***M***" in printed
    assert plan_mamba_layers(30, ratio=0.125) == [0, 8, 15, 22]
    assert "3.75" in capsys.readouterr().out
    assert plan_mamba_layers(30, ratio=0.5) == list(range(0, 30, 2))
    assert capsys.readouterr().out == ""
    assert plan_mamba_layers(32, ratio=0.3) == [0, 3, 6, 10, 13, 16, 19, 22, 26, 29]  # 9.6 -> 10
    assert plan_mamba_layers(32, ratio=0.01) == [0]  # never fewer than one layer
    assert len(plan_mamba_layers(30, ratio=0.25, positions="begin")) == 8
    # an explicit list stays exact; a ratio beside it must round to its length
    assert plan_mamba_layers(30, ratio=0.25, layers=list(range(8))) == list(range(8))
    with pytest.raises(ValueError, match="disagrees"):
        plan_mamba_layers(30, ratio=0.25, layers="0,4,8,12,16,20,24")


def test_positions_begin_middle_end():
    assert plan_mamba_layers(32, ratio=0.125, positions="begin") == [0, 1, 2, 3]
    assert plan_mamba_layers(32, ratio=0.125, positions="middle") == [14, 15, 16, 17]
    assert plan_mamba_layers(32, ratio=0.125, positions="end") == [28, 29, 30, 31]
    assert plan_mamba_layers(8, ratio=0.25, positions="middle") == [3, 4]


def test_explicit_lists_win_and_are_sorted():
    assert plan_mamba_layers(32, layers="0,6,12,18") == [0, 6, 12, 18]
    assert plan_mamba_layers(32, layers=" 18, 0 ,12,6") == [0, 6, 12, 18]
    assert plan_mamba_layers(32, layers="[0, 6]") == [0, 6]
    assert plan_mamba_layers(32, layers=[18, 0]) == [0, 18]
    # explicit list wins over positions; an agreeing ratio is accepted
    assert plan_mamba_layers(32, ratio=0.125, positions="end", layers="0,6,12,18") == [0, 6, 12, 18]
    assert plan_mamba_layers(32, layers="") == []
    assert plan_mamba_layers(32) == []


def test_pattern_string():
    assert layer_pattern(8, [0, 4]) == "M***M***"
    assert layer_pattern(4, []) == "****"


@pytest.mark.parametrize(
    "kwargs, flag",
    [
        (dict(ratio=0.0), "--mm_hybrid_ratio"),
        (dict(ratio=-0.5), "--mm_hybrid_ratio"),
        (dict(ratio=1.5), "--mm_hybrid_ratio"),
        (dict(layers="0,32"), "--mm_hybrid_layers"),
        (dict(layers=[-1]), "--mm_hybrid_layers"),
        (dict(layers="0,4,4"), "--mm_hybrid_layers"),
        (dict(layers="0;4"), "--mm_hybrid_layers"),
        (dict(ratio=0.25, layers="0,6,12,18"), "disagrees"),
        (dict(ratio=0.25, positions="random"), "--mm_hybrid_positions"),
    ],
)
def test_errors_name_the_flag(kwargs, flag):
    with pytest.raises(ValueError, match=flag):
        plan_mamba_layers(32, **kwargs)


def test_unknown_positions_lists_valid_choices():
    with pytest.raises(ValueError, match="even, begin, middle, end"):
        plan_mamba_layers(32, ratio=0.25, positions="spread")
