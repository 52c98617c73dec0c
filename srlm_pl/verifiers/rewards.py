"""Reward functions for GRPO, selectable from a config by ``class_path``.

Interface (what the GRPO module calls): an object with a ``name`` attribute and
``__call__(completions, golds) -> list[float]``, one float per completion. Constructor arguments are the
config knobs; their docstrings are what ``--help`` shows.

Design choices: rewards are plain callables with no torch dependency (scores are Python floats, the GRPO
module turns them into tensors); the accuracy reward uses :func:`verify_batch`, so a group's repeated
answers are checked once and the whole call is bounded in time; constructing an accuracy reward starts the
worker pool in the background so the first training step finds it warm.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from typing import Any

from .api import verify_batch, warmup
from .extract import EXPLICIT_STYLES, find_answer

FORMAT_STYLES: dict[str, tuple[str, ...]] = {
    "boxed": ("boxed",),
    "gsm8k": ("gsm8k",),
    "answer_is": ("answer_is", "answer_colon"),
    "any": EXPLICIT_STYLES,
}


class Reward(ABC):
    """Base class of reward functions: ``reward(completions, golds) -> list[float]``."""

    name: str = "reward"

    @abstractmethod
    def __call__(self, completions: Sequence[str], golds: Sequence[str]) -> list[float]:
        """One score per completion."""


def accuracy_reward(
    completions: Sequence[str],
    golds: Sequence[str],
    *,
    timeout: float = 1.0,
    batch_timeout: float | None = None,
) -> list[float]:
    """1.0 for each completion whose final answer verifies as equal to its gold answer, else 0.0."""
    verdicts = verify_batch(golds, completions, timeout=timeout, batch_timeout=batch_timeout)
    return [1.0 if v else 0.0 for v in verdicts]


def format_reward(completions: Sequence[str], style: str = "any") -> list[float]:
    """1.0 for each completion that states an answer in the required format, else 0.0."""
    if style not in FORMAT_STYLES:
        raise ValueError(f"unknown format style {style!r}; expected one of {sorted(FORMAT_STYLES)}")
    styles = FORMAT_STYLES[style]
    return [1.0 if find_answer(c, styles) is not None else 0.0 for c in completions]


class AccuracyReward(Reward):
    """Binary correctness reward: 1.0 when the completion's final answer equals the gold answer."""

    name = "accuracy"

    def __init__(
        self, timeout: float = 1.0, batch_timeout: float | None = None, warm_start: bool = True
    ) -> None:
        """Score completions by verified final-answer correctness.

        Args:
            timeout: seconds allowed to decide one (gold, answer) pair on the symbolic path; a pair that
                runs out of time scores 0.0.
            batch_timeout: seconds allowed for the whole batch (default: enough for every distinct pair
                to use its full ``timeout``).
            warm_start: start the verifier worker processes when the reward is built, so the first step
                does not wait for them.
        """
        self.timeout = timeout
        self.batch_timeout = batch_timeout
        if warm_start:
            warmup(wait=False)

    def __call__(self, completions: Sequence[str], golds: Sequence[str]) -> list[float]:
        return accuracy_reward(completions, golds, timeout=self.timeout, batch_timeout=self.batch_timeout)


class FormatReward(Reward):
    """1.0 when the completion states a final answer in the required format, else 0.0."""

    name = "format"

    def __init__(self, style: str = "any") -> None:
        """Score completions by whether they mark a final answer.

        Args:
            style: ``"boxed"`` (a non-empty ``\\boxed{...}``), ``"gsm8k"`` (a ``#### N`` line),
                ``"answer_is"`` ("the answer is ..." or "Answer: ..."), or ``"any"`` (any of these).
        """
        if style not in FORMAT_STYLES:
            raise ValueError(f"unknown format style {style!r}; expected one of {sorted(FORMAT_STYLES)}")
        self.style = style

    def __call__(self, completions: Sequence[str], golds: Sequence[str]) -> list[float]:
        return format_reward(completions, self.style)


def weighted_sum(components: Sequence[Any], weights: Sequence[float], zero: Any) -> Any:
    """``zero + w_0 * c_0 + w_1 * c_1 + ...``, left to right, for vectors with scalar ``*`` and ``+`` (tensors):
    the one reward-weighting rule, used by ``WeightedReward`` (float64) and ``srlm_pl.rl.scoring.score`` (float32)."""
    if len(components) != len(weights):
        raise ValueError(f"{len(components)} rewards but {len(weights)} weights")
    total = zero
    for weight, values in zip(weights, components, strict=True):
        total = total + weight * values
    return total


class WeightedReward(Reward):
    """Weighted sum of other rewards, e.g. ``1.0 * accuracy + 0.1 * format``."""

    name = "weighted"

    def __init__(self, rewards: list[Reward], weights: list[float] | None = None) -> None:
        """Combine component rewards linearly.

        Args:
            rewards: the component rewards (each selected by ``class_path`` in a config).
            weights: one weight per component (default: all 1.0).
        """
        if not rewards:
            raise ValueError("WeightedReward needs at least one component")
        weights = [1.0] * len(rewards) if weights is None else list(weights)
        if len(weights) != len(rewards):
            raise ValueError(f"{len(rewards)} rewards but {len(weights)} weights")
        self.rewards = list(rewards)
        self.weights = [float(w) for w in weights]

    def components(self, completions: Sequence[str], golds: Sequence[str]) -> dict[str, list[float]]:
        """Each component's scores, keyed by its name (for logging)."""
        out: dict[str, list[float]] = {}
        for reward in self.rewards:
            key = reward.name
            while key in out:
                key += "_"
            out[key] = reward(completions, golds)
        return out

    def __call__(self, completions: Sequence[str], golds: Sequence[str]) -> list[float]:
        import torch  # float64 tensors: the same double-precision arithmetic as Python floats

        columns = [torch.tensor([float(v) for v in scores], dtype=torch.float64)
                   for scores in self.components(completions, golds).values()]
        return weighted_sum(columns, self.weights, torch.zeros(len(completions), dtype=torch.float64)).tolist()
