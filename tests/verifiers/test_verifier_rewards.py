"""Reward classes: values, styles, weighting, and selection by class_path from a config."""

from __future__ import annotations

import pytest

from srlm_pl.verifiers.rewards import (
    AccuracyReward,
    FormatReward,
    Reward,
    WeightedReward,
    accuracy_reward,
    format_reward,
)

COMPLETIONS = [
    "We find $\\boxed{\\frac{1}{\\sqrt{2}}}$.",
    "The answer is 0.5.",
    "#### 3",
    "I think it is 7",
    "",
]
GOLDS = ["\\frac{\\sqrt{2}}{2}", "\\frac{1}{2}", "3", "7", "1"]


def test_accuracy_reward(warm_pool) -> None:
    reward = AccuracyReward(timeout=10.0)
    assert reward.name == "accuracy"
    assert reward(COMPLETIONS, GOLDS) == [1.0, 1.0, 1.0, 1.0, 0.0]
    assert accuracy_reward(["\\boxed{2}"], ["3"]) == [0.0]


@pytest.mark.parametrize(
    ("style", "expected"),
    [
        ("boxed", [1.0, 0.0, 0.0, 0.0, 0.0]),
        ("gsm8k", [0.0, 0.0, 1.0, 0.0, 0.0]),
        ("answer_is", [0.0, 1.0, 0.0, 0.0, 0.0]),
        ("any", [1.0, 1.0, 1.0, 0.0, 0.0]),
    ],
)
def test_format_reward_styles(style: str, expected: list[float]) -> None:
    reward = FormatReward(style)
    assert reward.name == "format"
    assert reward(COMPLETIONS, GOLDS) == expected
    assert format_reward(COMPLETIONS, style) == expected


def test_format_reward_rejects_unknown_style() -> None:
    with pytest.raises(ValueError, match="unknown format style"):
        FormatReward("latex")


def test_weighted_reward(warm_pool) -> None:
    reward = WeightedReward([AccuracyReward(timeout=10.0), FormatReward("boxed")], [1.0, 0.25])
    assert reward.name == "weighted"
    assert reward(COMPLETIONS, GOLDS) == [1.25, 1.0, 1.0, 1.0, 0.0]
    assert reward.components(COMPLETIONS[:1], GOLDS[:1]) == {"accuracy": [1.0], "format": [1.0]}
    with pytest.raises(ValueError, match="2 rewards but 1 weights"):
        WeightedReward([FormatReward(), FormatReward()], [1.0])


def test_rewards_are_selectable_by_class_path(warm_pool) -> None:
    jsonargparse = pytest.importorskip("jsonargparse")
    parser = jsonargparse.ArgumentParser()
    parser.add_argument("--reward", type=Reward)
    config = {
        "reward": {
            "class_path": "srlm_pl.verifiers.rewards.WeightedReward",
            "init_args": {
                "rewards": [
                    {"class_path": "srlm_pl.verifiers.rewards.AccuracyReward", "init_args": {"timeout": 5.0}},
                    {"class_path": "srlm_pl.verifiers.rewards.FormatReward", "init_args": {"style": "gsm8k"}},
                ],
                "weights": [1.0, 0.5],
            },
        }
    }
    reward = parser.instantiate_classes(parser.parse_object(config)).reward
    assert isinstance(reward, WeightedReward)
    assert reward.rewards[0].timeout == 5.0
    assert reward(["#### 3", "#### 4"], ["3", "3"]) == [1.5, 0.5]


def test_init_docstrings_document_arguments() -> None:
    documented = {
        AccuracyReward: ["timeout", "batch_timeout", "warm_start"],
        FormatReward: ["style"],
        WeightedReward: ["rewards", "weights"],
    }
    for cls, args in documented.items():
        doc = cls.__init__.__doc__ or ""
        for arg in args:
            assert f"{arg}:" in doc, (cls.__name__, arg)
