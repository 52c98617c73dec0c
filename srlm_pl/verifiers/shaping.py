"""Shaping rewards for reasoning recipes: ``ThinkFormatReward`` (R1-style format) and ``OverlongPenalty`` (DAPO).

Both are selected by ``class_path`` next to ``AccuracyReward`` in a GRPO config and called like every reward
(:mod:`.rewards`): ``reward(completions, golds, *, lengths, truncated, max_new_tokens)``.

Design choices: the format reward is binary (1.0 or 0.0, no partial credit, as the R1 / open-r1 format rewards):
a partly right shape earns nothing, so the policy cannot farm half the reward with a stray tag. The final answer
after the block is found by the verifiers' own extraction (:func:`.extract.find_answer` with the explicit
styles), so "has an answer" means the same here as for the format and accuracy rewards.
"""

from __future__ import annotations

from collections.abc import Sequence

from .extract import find_answer, sanitize
from .rewards import FORMAT_STYLES, Reward
from .think import THINK_CLOSE, THINK_OPEN


def think_format_ok(completion: str | bytes, styles: Sequence[str] = FORMAT_STYLES["any"]) -> bool:
    """True when ``completion`` is exactly one non-empty ``<think> ... </think>`` block at its start (leading
    whitespace allowed), with no other ``<think>``/``</think>`` anywhere, followed by a final answer in one of
    ``styles`` (extraction strategies of :mod:`.extract`)."""
    text = sanitize(completion)
    body = text.lstrip()
    if not body.startswith(THINK_OPEN) or text.count(THINK_OPEN) != 1 or text.count(THINK_CLOSE) != 1:
        return False
    close = body.find(THINK_CLOSE)
    if not body[len(THINK_OPEN) : close].strip():
        return False  # an empty block is no reasoning
    return find_answer(body[close + len(THINK_CLOSE) :], styles, think=False) is not None


def think_format_reward(completions: Sequence[str], style: str = "any") -> list[float]:
    """1.0 for each completion with one well-formed think block at its start followed by a final answer."""
    if style not in FORMAT_STYLES:
        raise ValueError(f"unknown format style {style!r}; expected one of {sorted(FORMAT_STYLES)}")
    return [1.0 if think_format_ok(c, FORMAT_STYLES[style]) else 0.0 for c in completions]


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
    """1.0 for ``<think> reasoning </think>`` then a final answer, else 0.0 (binary)."""

    name = "think_format"

    def __init__(self, style: str = "any") -> None:
        """Score completions by their reasoning format.

        A completion scores 1.0 when all of these hold, else 0.0 (no partial credit): it starts (after optional
        whitespace) with ``<think>``; it has exactly one ``<think>`` and one ``</think>`` (a second block or a stray
        tag anywhere scores 0); the block holds more than whitespace; and the text after ``</think>`` states a
        final answer in ``style``. An unclosed block scores 0; an answer only inside the block scores 0.

        Args:
            style: the final-answer format required after the block: ``"boxed"`` (a non-empty ``\\boxed{...}``),
                ``"gsm8k"`` (a ``#### N`` line), ``"answer_is"`` ("the answer is N" or "Answer: N") or ``"any"``
                (any of these).
        """
        if style not in FORMAT_STYLES:
            raise ValueError(f"model.init_args.rewards: ThinkFormatReward style must be one of "
                             f"{sorted(FORMAT_STYLES)}, got {style!r}")
        self.style = style

    def __call__(self, completions: Sequence[str], golds: Sequence[str], *, lengths: Sequence[int] | None = None,
                 truncated: Sequence[bool] | None = None, max_new_tokens: int | None = None) -> list[float]:
        return think_format_reward(completions, self.style)


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
