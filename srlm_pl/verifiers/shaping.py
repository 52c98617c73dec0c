"""Shaping rewards for reasoning recipes: ``ThinkFormatReward`` (R1-style format) and ``OverlongPenalty`` (DAPO).

Both are selected by ``class_path`` next to ``AccuracyReward`` in a GRPO config and called like every reward
(:mod:`.rewards`): ``reward(completions, golds, *, lengths, truncated, max_new_tokens)``.

Design choices: the format reward is binary (1.0 or 0.0, no partial credit, as the R1 / open-r1 format rewards):
a partly right shape earns nothing, so the policy cannot farm half the reward with a stray tag. "Well-formed" is
:func:`.trace.trace_problem`, the same rules the data loader (``format: r1``) and ``tools/make_traces.py --format
r1`` apply, so a completion the reward pays for is one those would accept as a trace.
"""

from __future__ import annotations

from collections.abc import Sequence

from .extract import sanitize
from .rewards import Reward
from .trace import trace_problem


def think_format_reward(completions: Sequence[str]) -> list[float]:
    """1.0 for each completion that is a well-formed trace (:func:`.trace.trace_problem` finds no problem)."""
    return [1.0 if trace_problem(sanitize(c)) is None else 0.0 for c in completions]


def overlong_penalty(length: int, max_new_tokens: int, buffer: int) -> float:
    """DAPO's soft overlong punishment of one completion of ``length`` tokens: 0 up to ``max_new_tokens - buffer``,
    then linear down to -1 at ``max_new_tokens``, and -1 beyond."""
    start = max_new_tokens - buffer
    if length <= start:
        return 0.0
    if length >= max_new_tokens:
        return -1.0
    return (start - length) / buffer


class ThinkFormatReward(Reward):
    """1.0 for ``<think> reasoning </think>`` then a final answer, else 0.0 (binary); no arguments.

    A completion scores 1.0 exactly when :func:`srlm_pl.verifiers.trace_problem` finds no problem: optional
    whitespace, one non-empty ``<think> ... </think>`` block (no second block, no stray tag, nothing before it),
    then a final answer stated as ``\\boxed{}``, ``#### N`` or "The answer is N" after ``</think>``. An unclosed
    block, an answer only inside the block, "Answer: N" or a bare number after it score 0 (docs/verifiers.md has the
    rules table). To require one answer style, add ``FormatReward(style)`` next to it."""

    name = "think_format"

    def __call__(self, completions: Sequence[str], golds: Sequence[str], *, lengths: Sequence[int] | None = None,
                 truncated: Sequence[bool] | None = None, max_new_tokens: int | None = None) -> list[float]:
        return think_format_reward(completions)


class OverlongPenalty(Reward):
    """DAPO's soft overlong punishment: 0, then linearly down to -1 over the last ``buffer`` tokens of the budget."""

    name = "overlong"

    def __init__(self, buffer: int) -> None:
        """Penalise completions that come close to the generation budget (``max_new_tokens``).

        A completion of L tokens scores 0 when L <= max_new_tokens - buffer, (max_new_tokens - buffer - L) / buffer
        above that, and -1 at max_new_tokens and beyond. Needs the completion lengths and ``max_new_tokens`` from
        the caller's context (``GRPOModule`` passes them); called without them it raises ``ValueError``, which the
        GRPO scorer turns into ``reward_fallback`` and counts (``reward/overlong_fallbacks``).

        Args:
            buffer: the length of the penalty ramp in tokens (DAPO's L_cache, 4096 of a 20480 budget), an integer
                in [1, max_new_tokens].
        """
        if type(buffer) is not int or buffer < 1:
            raise ValueError(f"model.init_args.rewards: OverlongPenalty buffer must be an integer >= 1 (tokens), "
                             f"got {buffer!r}")
        self.buffer = buffer

    def __call__(self, completions: Sequence[str], golds: Sequence[str], *, lengths: Sequence[int] | None = None,
                 truncated: Sequence[bool] | None = None, max_new_tokens: int | None = None) -> list[float]:
        if lengths is None or max_new_tokens is None:
            raise ValueError("OverlongPenalty needs the completion lengths and max_new_tokens: call it as "
                             "reward(completions, golds, lengths=[...], max_new_tokens=N) (GRPOModule does)")
        if len(lengths) != len(completions):
            raise ValueError(f"OverlongPenalty got {len(lengths)} lengths for {len(completions)} completions")
        if not 1 <= self.buffer <= max_new_tokens:
            raise ValueError(f"model.init_args.rewards: OverlongPenalty buffer ({self.buffer}) must be at most "
                             f"model.init_args.max_new_tokens ({max_new_tokens})")
        return [overlong_penalty(int(n), max_new_tokens, self.buffer) for n in lengths]
