"""Reward functions for the GRPO tests (referenced by class_path from test configs)."""

from collections.abc import Sequence


class ContainsDigit:
    """1.0 when the completion contains ``digit``: learnable by a random tiny policy in a few steps."""

    name = "digit"

    def __init__(self, digit: str = "7") -> None:
        self.digit = digit

    def __call__(self, completions: Sequence[str], golds: Sequence[str]) -> list[float]:
        return [1.0 if self.digit in c else 0.0 for c in completions]


class Constant:
    name = "constant"

    def __call__(self, completions: Sequence[str], golds: Sequence[str]) -> list[float]:
        return [0.5] * len(completions)


class Raises:
    name = "raises"

    def __call__(self, completions: Sequence[str], golds: Sequence[str]) -> list[float]:
        raise RuntimeError("broken reward")


class NaNEveryOther:
    name = "nan"

    def __call__(self, completions: Sequence[str], golds: Sequence[str]) -> list[float]:
        return [float("nan") if i % 2 else 1.0 for i in range(len(completions))]
