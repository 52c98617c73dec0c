"""``srlm_pl.rl.scoring.score`` with the reward context: what each kind of function receives, and values."""

from __future__ import annotations

import inspect

import pytest
import torch

from srlm_pl.rl.scoring import score
from srlm_pl.verifiers import OverlongPenalty

COMPLETIONS = ["a 7", "b", "c 7", "d"]
GOLDS = ["1", "2", "3", "4"]
CONTEXT = {"lengths": [2, 5, 7, 8], "truncated": [False, False, False, True], "max_new_tokens": 8}


def plain(completions, golds):  # a user's reward with the old two-argument signature
    plain.calls.append((list(completions), list(golds)))
    return [1.0 if "7" in c else 0.0 for c in completions]


plain.calls = []


class PlainClass:
    name = "plain_class"

    def __call__(self, completions, golds):
        return [float(len(c)) for c in completions]


def wants_lengths(completions, golds, *, lengths):
    return [float(n) for n in lengths]


def takes_kwargs(completions, golds, **context):
    takes_kwargs.seen = dict(context)
    return [0.0] * len(completions)


def test_context_goes_to_the_functions_that_accept_it() -> None:
    """Weights 1, 2, 0.5, 1, 1: total = digit + 2 * len(text) + 0.5 * length + overlong(buffer 4: 0 up to 4 tokens,
    then -1/4 per token), hand-computed."""
    plain.calls.clear()
    out = score(COMPLETIONS, GOLDS, [plain, PlainClass(), wants_lengths, takes_kwargs, OverlongPenalty(4)],
                [1.0, 2.0, 0.5, 1.0, 1.0], **CONTEXT)
    assert plain.calls == [(COMPLETIONS, GOLDS)]  # called once, with the two positional arguments only
    assert takes_kwargs.seen == CONTEXT
    assert out.per_function["overlong"].tolist() == [0.0, -0.25, -0.75, -1.0]
    assert out.per_function["wants_lengths"].tolist() == [2.0, 5.0, 7.0, 8.0]
    expected = [1 + 2 * 3 + 0.5 * 2 + 0.0, 0 + 2 * 1 + 0.5 * 5 - 0.25, 1 + 2 * 3 + 0.5 * 7 - 0.75, 0 + 2 * 1 + 4 - 1]
    assert out.total.tolist() == pytest.approx(expected, abs=1e-6)
    assert all(v == 0 for v in out.fallbacks.values()), out.fallbacks


def test_without_context_plain_functions_work_and_context_rewards_fall_back() -> None:
    out = score(COMPLETIONS, GOLDS, [plain, OverlongPenalty(4)], [1.0, 1.0], fallback=-5.0)
    assert out.per_function["plain"].tolist() == [1.0, 0.0, 1.0, 0.0]
    assert out.per_function["overlong"].tolist() == [-5.0] * 4 and out.fallbacks == {"plain": 0, "overlong": 4}


def test_a_type_error_inside_a_plain_function_is_not_retried() -> None:
    """The signature decides how to call, so a TypeError raised by the function itself falls back once (no second
    call without the context that could hide or repeat it)."""
    calls = []

    def broken(completions, golds):
        calls.append("broken")
        raise TypeError("bug inside the reward")

    def broken_with_context(completions, golds, **context):
        calls.append("broken_with_context")
        raise TypeError("bug inside the reward")

    out = score(COMPLETIONS, GOLDS, [broken, broken_with_context], [1.0, 1.0], fallback=0.5, **CONTEXT)
    assert calls == ["broken", "broken_with_context"]
    assert out.total.tolist() == [1.0] * 4 and out.fallbacks == {"broken": 4, "broken_with_context": 4}


def test_signature_is_inspected_once_per_reward_class(monkeypatch) -> None:
    class Fresh:  # a class no other test used, so its signature is not cached yet
        name = "fresh"

        def __call__(self, completions, golds, *, lengths=None):
            return [float(n) for n in lengths]

    counted = []
    real = inspect.signature

    def counting(obj, *args, **kw):
        counted.append(obj)
        return real(obj, *args, **kw)

    monkeypatch.setattr(inspect, "signature", counting)
    for _ in range(3):
        out = score(COMPLETIONS, GOLDS, [Fresh(), Fresh()], [1.0, 1.0], **CONTEXT)
        assert out.total.tolist() == [4.0, 10.0, 14.0, 16.0]
    assert counted == [Fresh.__call__]


def test_context_of_the_wrong_length_is_an_error() -> None:
    with pytest.raises(ValueError, match="lengths has 3 entries for 4 completions"):
        score(COMPLETIONS, GOLDS, [plain], [1.0], lengths=[1, 2, 3])
    with pytest.raises(ValueError, match="truncated has 1 entries for 4 completions"):
        score(COMPLETIONS, GOLDS, [plain], [1.0], truncated=[True])
    assert isinstance(score(COMPLETIONS, GOLDS, [plain], [1.0]).total, torch.Tensor)


def test_a_penalty_ramp_longer_than_the_budget_is_refused_at_config_time() -> None:
    from srlm_pl.modules.grpo import GRPOModule
    from srlm_pl.rl.scoring import check_reward_budget

    check_reward_budget([OverlongPenalty(buffer=16)], 16)  # the ramp may span the whole budget
    with pytest.raises(ValueError, match=r"rewards\[1\].init_args.buffer \(17\) must be at most "
                                         r"model.init_args.max_new_tokens \(16\)"):
        check_reward_budget([lambda c, g: [0.0] * len(c), OverlongPenalty(buffer=17)], 16)
    with pytest.raises(ValueError, match="max_new_tokens"):
        GRPOModule(rewards=[OverlongPenalty(buffer=64)], max_new_tokens=32)
    from srlm_pl.verifiers import AccuracyReward, WeightedReward

    nested = WeightedReward([AccuracyReward(), OverlongPenalty(buffer=100)], [1.0, 1.0])
    with pytest.raises(ValueError, match=r"rewards\[0\].init_args.rewards\[1\].init_args.buffer \(100\)"):
        check_reward_budget([nested], 50)
