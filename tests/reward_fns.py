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


class DigitIfGoldDivisible:
    """``ContainsDigit`` for prompts whose gold answer is divisible by ``divisor``, 0 otherwise: batches whose
    golds all fail the test have zero-variance groups only, so a run skips some steps (the resume tests)."""

    name = "gated"

    def __init__(self, divisor: int = 4, digit: str = "7") -> None:
        self.divisor, self.digit = divisor, digit

    def __call__(self, completions: Sequence[str], golds: Sequence[str]) -> list[float]:
        return [1.0 if self.digit in c and int(float(g)) % self.divisor == 0 else 0.0
                for c, g in zip(completions, golds, strict=True)]


class IndexMod3:
    """``i % 3`` for the i-th completion of the batch, whatever its text: with groups of 4 consecutive rows every
    group has reward variance ([0,1,2,0], [1,2,0,1], ...) and the groups differ, so no group is ever dropped and
    the advantage modes give different values (the config tests)."""

    name = "index_mod3"

    def __call__(self, completions: Sequence[str], golds: Sequence[str]) -> list[float]:
        return [float(i % 3) for i in range(len(completions))]


class AlternateIfGoldEven:
    """``[0, 1, 0, 1, ...]`` by row position for prompts whose gold answer is even, 0 for odd golds, whatever the
    text: with an even group size, even-gold groups always have reward variance and odd-gold groups never do
    (the dynamic-sampling test)."""

    name = "alternate_if_even"

    def __call__(self, completions: Sequence[str], golds: Sequence[str]) -> list[float]:
        return [float(i % 2) if int(float(g)) % 2 == 0 else 0.0 for i, g in enumerate(golds)]


class TruncatedFlag:
    """1.0 for each completion the rollout marks truncated (hit ``max_new_tokens``), from the reward context."""

    name = "truncated_flag"

    def __call__(self, completions: Sequence[str], golds: Sequence[str], *, truncated: Sequence[bool]) -> list[float]:
        return [1.0 if t else 0.0 for t in truncated]
