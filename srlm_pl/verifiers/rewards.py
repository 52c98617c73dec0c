"""Reward functions for GRPO, selectable from a config by ``class_path``.

Interface (what the GRPO module calls): an object with a ``name`` attribute and
``__call__(completions, golds, *, lengths=None, truncated=None, max_new_tokens=None) -> list[float]``, one float
per completion. The keyword-only context (completion token counts, whether each completion hit the budget, the
budget) is passed only to a function whose signature accepts it (:func:`call_reward`), so a plain
``(completions, golds)`` callable keeps working; the built-in rewards accept it and ignore what they do not need.
Constructor arguments are the config knobs; their docstrings are what ``--help`` shows.

Design choices: rewards are plain callables with no torch dependency (scores are Python floats, the GRPO
module turns them into tensors); the accuracy reward uses :func:`verify_batch`, so a group's repeated
answers are checked once and the whole call is bounded in time; constructing an accuracy reward starts the
worker pool in the background so the first training step finds it warm.
"""

from __future__ import annotations

import functools
import inspect
import types
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from typing import Any

from .api import verify_batch, warmup
from .extract import EXPLICIT_STYLES, find_answer

FORMAT_STYLES: dict[str, tuple[str, ...]] = {
    "boxed": ("boxed",),
    "gsm8k": ("gsm8k",),
    "answer_is": ("answer_is", "answer_colon"),
    "any": EXPLICIT_STYLES,
}


CONTEXT_KEYS: tuple[str, ...] = ("lengths", "truncated", "max_new_tokens")


def _signature_owner(fn: Callable[..., Any]) -> Any:
    """The object whose signature describes calling ``fn``: the function of a bound method, the class's
    ``__call__`` for a callable instance (so the inspection is shared by every instance of a reward class)."""
    if isinstance(fn, types.MethodType):
        return fn.__func__
    if isinstance(fn, types.FunctionType | types.BuiltinFunctionType | functools.partial) or inspect.isclass(fn):
        return fn
    return type(fn).__call__


def _accepted_keys(owner: Any) -> frozenset[str]:
    try:
        params = inspect.signature(owner).parameters.values()
    except (TypeError, ValueError):  # no introspectable signature: call it the plain way
        return frozenset()
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params):
        return frozenset(CONTEXT_KEYS)
    keyword = (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
    return frozenset(p.name for p in params if p.name in CONTEXT_KEYS and p.kind in keyword)


_accepted_keys_cached = functools.lru_cache(maxsize=512)(_accepted_keys)


def context_keys(fn: Callable[..., Any]) -> frozenset[str]:
    """The context keywords (``lengths``, ``truncated``, ``max_new_tokens``) that ``fn`` accepts, from its
    signature (inspected once per function or reward class; ``**kwargs`` accepts them all)."""
    owner = _signature_owner(fn)
    try:
        return _accepted_keys_cached(owner)
    except TypeError:  # unhashable owner: inspect every time
        return _accepted_keys(owner)


def call_reward(fn: Callable[..., Any], completions: Sequence[str], golds: Sequence[str], **context: Any) -> Any:
    """``fn(completions, golds, **context)`` with only the context keywords ``fn`` accepts (and none that are
    None): a plain ``(completions, golds)`` callable gets none of them."""
    unknown = set(context) - set(CONTEXT_KEYS)
    if unknown:
        raise TypeError(f"unknown reward context {sorted(unknown)}; expected some of {list(CONTEXT_KEYS)}")
    accepted = context_keys(fn)
    return fn(completions, golds, **{k: v for k, v in context.items() if k in accepted and v is not None})


class Reward(ABC):
    """Base class of reward functions: ``reward(completions, golds, *, lengths, truncated, max_new_tokens)``."""

    name: str = "reward"

    @abstractmethod
    def __call__(self, completions: Sequence[str], golds: Sequence[str], *, lengths: Sequence[int] | None = None,
                 truncated: Sequence[bool] | None = None, max_new_tokens: int | None = None) -> list[float]:
        """One score per completion. Context (keyword-only, None when the caller has none): ``lengths``, the
        completion token counts; ``truncated``, whether each completion hit ``max_new_tokens`` without ending;
        ``max_new_tokens``, the generation budget. A reward uses what it needs and ignores the rest."""


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

    def __call__(self, completions: Sequence[str], golds: Sequence[str], *, lengths: Sequence[int] | None = None,
                 truncated: Sequence[bool] | None = None, max_new_tokens: int | None = None) -> list[float]:
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

    def __call__(self, completions: Sequence[str], golds: Sequence[str], *, lengths: Sequence[int] | None = None,
                 truncated: Sequence[bool] | None = None, max_new_tokens: int | None = None) -> list[float]:
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

    def components(self, completions: Sequence[str], golds: Sequence[str], **context: Any) -> dict[str, list[float]]:
        """Each component's scores, keyed by its name (for logging); ``context`` (``lengths``, ``truncated``,
        ``max_new_tokens``) is forwarded to the components that accept it (:func:`call_reward`)."""
        out: dict[str, list[float]] = {}
        for reward in self.rewards:
            key = reward.name
            while key in out:
                key += "_"
            out[key] = call_reward(reward, completions, golds, **context)
        return out

    def __call__(self, completions: Sequence[str], golds: Sequence[str], *, lengths: Sequence[int] | None = None,
                 truncated: Sequence[bool] | None = None, max_new_tokens: int | None = None) -> list[float]:
        import torch  # float64 tensors: the same double-precision arithmetic as Python floats

        context = {"lengths": lengths, "truncated": truncated, "max_new_tokens": max_new_tokens}
        columns = [torch.tensor([float(v) for v in scores], dtype=torch.float64)
                   for scores in self.components(completions, golds, **context).values()]
        return weighted_sum(columns, self.weights, torch.zeros(len(completions), dtype=torch.float64)).tolist()
