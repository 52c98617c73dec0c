"""Scoring completions with weighted reward functions, robust to a reward function that fails.

A reward function is any callable ``(completions, golds) -> list[float]`` with a ``name`` attribute
(``srlm_pl.verifiers.rewards`` has the built-in ones, selected by ``class_path``). The rollout's context
(``lengths``: completion token counts, ``truncated``: hit the budget, ``max_new_tokens``) is passed as keyword
arguments to the functions whose signature accepts them (``srlm_pl.verifiers.rewards.call_reward``: the
signature is inspected once per function or reward class), so a plain 2-argument callable keeps working. If one
raises, returns the wrong number of values, or returns NaN/inf, the affected samples get ``fallback`` and are
counted; training goes on.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch
from torch import Tensor

from srlm_pl.verifiers.rewards import call_reward, weighted_sum

log = logging.getLogger(__name__)
RewardFn = Callable[[Sequence[str], Sequence[str]], list[float]]


@dataclass
class Scores:
    """Weighted total per sample, each function's raw values, and how many samples fell back."""

    total: Tensor  # [N] float32
    per_function: dict[str, Tensor] = field(default_factory=dict)  # name -> [N]
    fallbacks: dict[str, int] = field(default_factory=dict)  # name -> count


def reward_name(fn: RewardFn, index: int) -> str:
    return str(getattr(fn, "name", None) or getattr(fn, "__name__", None) or f"reward{index}")


def score(completions: Sequence[str], golds: Sequence[str], functions: Sequence[RewardFn],
          weights: Sequence[float], fallback: float = 0.0, *, lengths: Sequence[int] | None = None,
          truncated: Sequence[bool] | None = None, max_new_tokens: int | None = None) -> Scores:
    """Score ``completions`` with every function and weight the results; ``lengths``, ``truncated`` and
    ``max_new_tokens`` (the rollout's context, optional) go to the functions that accept them."""
    if len(functions) != len(weights):
        raise ValueError(f"{len(functions)} reward functions but {len(weights)} weights")
    n = len(completions)
    for key, values in (("lengths", lengths), ("truncated", truncated)):
        if values is not None and len(values) != n:
            raise ValueError(f"{key} has {len(values)} entries for {n} completions")
    context = {"lengths": lengths, "truncated": truncated, "max_new_tokens": max_new_tokens}
    out, columns = Scores(torch.zeros(n, dtype=torch.float32)), []
    for i, fn in enumerate(functions):
        name = reward_name(fn, i)
        try:
            values = [float(v) for v in call_reward(fn, completions, golds, **context)]
            if len(values) != n:
                raise ValueError(f"returned {len(values)} values for {n} completions")
        except Exception as err:  # a user reward function may fail in any way: fall back, count, go on
            log.warning("reward %s failed on a batch of %d: %s: %s", name, n, type(err).__name__, err)
            values, bad = [fallback] * n, n
        else:
            bad = sum(not math.isfinite(v) for v in values)
            values = [v if math.isfinite(v) else fallback for v in values]
        raw = torch.tensor(values, dtype=torch.float32)
        out.per_function[name] = raw
        columns.append(raw)
        out.fallbacks[name] = bad
    out.total = weighted_sum(columns, weights, out.total)
    return out


def check_reward_budget(functions: Sequence[RewardFn], max_new_tokens: int,
                        key: str = "model.init_args.rewards") -> None:
    """Refuse at config time a length-shaped reward (``OverlongPenalty``) whose ``buffer`` exceeds the budget, also
    inside a ``WeightedReward`` (whose ``rewards`` would otherwise all fall back on every batch)."""
    for i, fn in enumerate(functions):
        buffer = getattr(fn, "buffer", None)
        if isinstance(buffer, int) and buffer > max_new_tokens:
            raise ValueError(f"{key}[{i}].init_args.buffer ({buffer}) must be at most model.init_args.max_new_tokens "
                             f"({max_new_tokens}): the penalty ramp lies in the budget")
        nested = getattr(fn, "rewards", None)
        if isinstance(nested, (list, tuple)):
            check_reward_budget(nested, max_new_tokens, f"{key}[{i}].init_args.rewards")


def reward_stats(scores: Scores) -> dict[str, float]:
    """The logged reward statistics of a batch: the weighted total's and each function's mean and std, each
    function's fallback count, and ``train/accuracy`` when a function is named ``accuracy``."""
    out = {"reward/mean": scores.total.mean().item(), "reward/std": scores.total.std().item()}
    for name, values in scores.per_function.items():
        out[f"reward/{name}_mean"] = values.mean().item()
        out[f"reward/{name}_std"] = values.std().item()
        out[f"reward/{name}_fallbacks"] = float(scores.fallbacks[name])
        if name == "accuracy":
            out["train/accuracy"] = values.mean().item()
    return out
