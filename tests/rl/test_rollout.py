"""Tests for srlm_pl.rl.rollout: advantages (hand-computed), Rollout cat/select/trim, RolloutBuffer."""

from __future__ import annotations

import io
import math

import pytest
import torch

from srlm_pl.rl.rollout import Rollout, RolloutBuffer, group_advantages, zero_variance_groups

# three groups of G=3: a mixed group, a constant group of 0.1s (rounding-prone mean), a wide group
REWARDS = torch.tensor([1.0, 0.0, 0.0, 0.1, 0.1, 0.1, 0.0, 3.0, 6.0])
EPS = 1e-4


def _expected(mode: str, unbiased: bool) -> list[float]:
    ddof = 1 if unbiased else 0
    s1 = math.sqrt(((2 / 3) ** 2 + 2 * (1 / 3) ** 2) / (3 - ddof))  # std of [1, 0, 0]
    s3 = math.sqrt((9 + 0 + 9) / (3 - ddof))  # std of [0, 3, 6]
    c1, c3 = [2 / 3, -1 / 3, -1 / 3], [-3.0, 0.0, 3.0]
    if mode == "mean_only":
        return c1 + [0.0] * 3 + c3
    if mode == "group_std":
        return [c / (s1 + EPS) for c in c1] + [0.0] * 3 + [c / (s3 + EPS) for c in c3]
    if mode == "rloo":  # r_i minus the mean of the group's other two rewards
        return [1 - 0, 0 - 0.5, 0 - 0.5] + [0.0] * 3 + [0 - 4.5, 3 - 3, 6 - 1.5]
    if mode == "reinforce_pp":  # group-centred, then divided by the std of all nine centred values (mean 0)
        sc = math.sqrt((sum(c * c for c in c1) + sum(c * c for c in c3)) / (9 - ddof))
        return [c / (sc + EPS) for c in c1] + [0.0] * 3 + [c / (sc + EPS) for c in c3]
    values = [1.0, 0.0, 0.0, 0.1, 0.1, 0.1, 0.0, 3.0, 6.0]
    mean = sum(values) / 9
    sb = math.sqrt(sum((v - mean) ** 2 for v in values) / (9 - ddof))
    return [c / (sb + EPS) for c in c1] + [0.0] * 3 + [c / (sb + EPS) for c in c3]


@pytest.mark.parametrize("unbiased", [True, False])
@pytest.mark.parametrize("mode", ["group_std", "mean_only", "batch_std", "rloo", "reinforce_pp"])
def test_group_advantages_hand_computed(mode, unbiased):
    adv = group_advantages(REWARDS, 3, mode, eps=EPS, unbiased=unbiased)
    assert adv.dtype == torch.float32 and adv.shape == (9,)
    assert adv.tolist() == pytest.approx(_expected(mode, unbiased), rel=1e-5, abs=1e-6)
    assert torch.equal(adv[3:6], torch.zeros(3))  # constant group: exactly 0, not a rounding residue
    assert torch.isfinite(adv).all()


def test_group_advantages_default_is_sample_std_and_edge_cases():
    # default: Bessel-corrected std (TRL), eps = 1e-4: [0, 1] -> +-0.5 / (sqrt(0.5) + 1e-4)
    expected = torch.tensor([-0.5, 0.5]) / (math.sqrt(0.5) + 1e-4)
    torch.testing.assert_close(group_advantages(torch.tensor([0.0, 1.0]), 2), expected)
    for mode in ("group_std", "mean_only", "batch_std", "reinforce_pp"):
        assert torch.equal(group_advantages(torch.tensor([1.0, 2.0, 5.0]), 1, mode), torch.zeros(3))  # G = 1
        assert torch.equal(group_advantages(torch.full((4,), 0.3), 2, mode), torch.zeros(4))
        assert torch.equal(group_advantages(torch.tensor([7.0]), 1, mode), torch.zeros(1))
    assert torch.equal(group_advantages(torch.full((4,), 0.3), 2, "rloo"), torch.zeros(4))
    # RLOO is the group-centred reward scaled by G / (G - 1), for any G >= 2
    r = torch.tensor([0.0, 1.0, 1.0, 0.5])
    torch.testing.assert_close(group_advantages(r, 4, "rloo"), (r - r.mean()) * 4 / 3)
    assert zero_variance_groups(REWARDS, 3).tolist() == [False, True, False]


@pytest.mark.parametrize(
    ("args", "name"),
    [
        ((REWARDS, 4), "group_size"),
        ((REWARDS, 0), "group_size"),
        ((REWARDS, 3, "std"), "mode"),
        ((REWARDS, 3, "group_std", -1.0), "eps"),
        ((torch.tensor([1.0, math.nan]), 2), "finite"),
        ((REWARDS.view(3, 3), 3), "1-D"),
        ((torch.tensor([1.0, 2.0]), 1, "rloo"), "'rloo' needs group_size >= 2"),
    ],
)
def test_group_advantages_validates(args, name):
    with pytest.raises(ValueError, match=name):
        group_advantages(*args)


def make_rollout(n: int, p: int, c: int, *, start: int = 0, logps: bool = True, seed: int = 0) -> Rollout:
    g = torch.Generator().manual_seed(seed)
    prompt_mask = torch.ones(n, p, dtype=torch.long)
    prompt_mask[1:, 0] = 0  # row 0 has a full-width prompt, the others are left-padded by one
    completion_mask = torch.ones(n, c, dtype=torch.long)
    completion_mask[1:, -1] = 0  # row 0 has a full-width completion
    return Rollout(
        prompt_ids=torch.randint(1, 50, (n, p), generator=g) * prompt_mask,
        prompt_mask=prompt_mask,
        completion_ids=torch.randint(1, 50, (n, c), generator=g) * completion_mask,
        completion_mask=completion_mask,
        rewards=torch.arange(start, start + n, dtype=torch.float32),
        advantages=torch.randn(n, generator=g),
        group_ids=torch.arange(n) // 2,
        old_logp=-torch.rand(n, c, generator=g) if logps else None,
        ref_logp=None,
        truncated=torch.arange(n) % 2 == 0,
    )


def assert_rollouts_equal(a: Rollout, b: Rollout) -> None:
    for name, x, y in zip(Rollout._fields, a, b, strict=True):
        if x is None or y is None:
            assert x is None and y is None, name
        else:
            assert torch.equal(x, y), name


def test_cat_pads_and_select_trim_round_trip():
    a, b = make_rollout(4, 2, 3, start=0), make_rollout(2, 4, 5, start=4, seed=1)
    cat = Rollout.cat([a, b], pad_token_id=-1)
    assert cat.num_rows == 6 and cat.prompt_ids.shape == (6, 4) and cat.completion_ids.shape == (6, 5)
    assert cat.prompt_ids[:4, :2].eq(-1).all() and cat.prompt_mask[:4, :2].eq(0).all()  # left-padded
    assert torch.equal(cat.prompt_ids[:4, 2:], a.prompt_ids)
    assert cat.completion_ids[:4, 3:].eq(-1).all() and cat.completion_mask[:4, 3:].eq(0).all()  # right-padded
    assert torch.equal(cat.old_logp[:4, :3], a.old_logp) and cat.old_logp[:4, 3:].eq(0).all()
    assert cat.ref_logp is None and cat.rewards.tolist() == [0, 1, 2, 3, 4, 5]
    assert cat.group_ids.tolist() == [0, 0, 1, 1, 0, 0]
    assert Rollout.cat([a, b], renumber_groups=True).group_ids.tolist() == [0, 0, 1, 1, 2, 2]
    assert_rollouts_equal(cat.select(torch.arange(4)).trim(), a)
    assert_rollouts_equal(cat.select(slice(4, 6)).trim(), b)
    mask = torch.tensor([False, False, False, False, True, True])
    assert_rollouts_equal(cat.select(mask).trim(), b)
    assert cat.select([5, 0]).rewards.tolist() == [5.0, 0.0]


def test_cat_rejects_mixed_optional_fields():
    with pytest.raises(ValueError, match="old_logp"):
        Rollout.cat([make_rollout(2, 2, 2), make_rollout(2, 2, 2, logps=False)])
    with pytest.raises(ValueError, match="rollouts"):
        Rollout.cat([])


def test_minibatches_cover_rows_once_and_are_deterministic():
    buf = RolloutBuffer()
    assert len(buf) == 0
    buf.fill(make_rollout(10, 3, 4))
    assert len(buf) == 10
    passes = []
    g = torch.Generator().manual_seed(0)
    for _ in range(2):  # two passes (mu = 2)
        mbs = list(buf.minibatches(3, generator=g))
        assert [m.num_rows for m in mbs] == [4, 3, 3]
        rows = torch.cat([m.rewards for m in mbs])
        assert sorted(rows.tolist()) == list(range(10))  # every row exactly once
        for m in mbs:  # fields stay aligned within a row
            assert torch.equal(m.advantages, buf.rollout.advantages[m.rewards.long()])
            assert torch.equal(m.old_logp, buf.rollout.old_logp[m.rewards.long()])
        passes.append(rows.tolist())
    assert passes[0] != passes[1]  # the generator advances between passes
    g2 = torch.Generator().manual_seed(0)
    again = [torch.cat([m.rewards for m in buf.minibatches(3, generator=g2)]).tolist() for _ in range(2)]
    assert again == passes
    with pytest.raises(ValueError, match="num_minibatches"):
        next(buf.minibatches(11, generator=g))
    buf.clear()
    assert len(buf) == 0 and buf.rollout is None
    with pytest.raises(ValueError, match="empty"):
        next(buf.minibatches(1, generator=g))


def test_fill_append_and_state_dict_round_trip():
    buf = RolloutBuffer()
    buf.fill(make_rollout(2, 2, 3, start=0))
    buf.fill(make_rollout(3, 3, 2, start=2, seed=1), append=True, pad_token_id=7)
    assert len(buf) == 5 and buf.rollout.prompt_ids[:2, 0].eq(7).all()
    buf.fill(make_rollout(4, 2, 2, start=10))  # default replaces
    assert buf.rollout.rewards.tolist() == [10, 11, 12, 13]
    stream = io.BytesIO()
    torch.save(buf.state_dict(), stream)
    stream.seek(0)
    restored = RolloutBuffer()
    restored.load_state_dict(torch.load(stream, weights_only=True))
    assert restored.rollout.ref_logp is None and restored.rollout.old_logp is not None
    assert_rollouts_equal(restored.rollout, buf.rollout)
    empty = RolloutBuffer()
    empty.load_state_dict(RolloutBuffer().state_dict())
    assert len(empty) == 0
    state = buf.state_dict()["rollout"]
    assert all(v is None or (isinstance(v, torch.Tensor) and v.device.type == "cpu") for v in state.values())
