"""GRPO passes the rollout's context to its rewards: ``OverlongPenalty`` scores the real completion lengths."""

from __future__ import annotations

import pytest

from cli_utils import fit, grpo_config, logged
from grpo_spy import GRPOSpy

MAX_NEW, BUFFER = 6, 4


def hand_penalty(n: int) -> float:
    """DAPO's soft overlong punishment for max_new_tokens 6, buffer 4: 0 up to 2 tokens, -1/4 per token after."""
    return 0.0 if n <= MAX_NEW - BUFFER else -1.0 if n >= MAX_NEW else (MAX_NEW - BUFFER - n) / BUFFER


def test_overlong_penalty_gets_the_rollout_lengths(tmp_path, monkeypatch) -> None:
    """Rewards: a plain 2-argument reward (``i % 3``, so every group has variance and none is dropped), the overlong
    penalty and a reward of the ``truncated`` flag (x 10). Each trained batch's rewards equal, row by row, the
    hand-computed values from the lengths and flags the generation returned; nothing fell back (the fallback 0.5
    is no value any of them gives)."""
    spy = GRPOSpy(monkeypatch)
    rewards = [{"class_path": "reward_fns.IndexMod3"},
               {"class_path": "srlm_pl.verifiers.OverlongPenalty", "init_args": {"buffer": BUFFER}},
               {"class_path": "reward_fns.TruncatedFlag"}]
    cli = fit(grpo_config(tmp_path, max_steps=2, rewards=rewards, reward_weights=[1.0, 1.0, 10.0],
                          stop_strings=["e"], max_new_tokens=MAX_NEW, reward_fallback=0.5))
    assert cli.trainer.global_step == 2 and len(spy.trained) == 2, spy.summary()
    seen = []
    for batch in spy.trained:
        (gen,) = batch["generations"]
        lengths = gen["completion_mask"].sum(-1).tolist()
        truncated = gen["truncated"].tolist()
        expected = [i % 3 + hand_penalty(n) + 10.0 * t for i, (n, t) in enumerate(zip(lengths, truncated, strict=True))]
        assert batch["rollout"].rewards.tolist() == pytest.approx(expected, abs=1e-6)
        seen += lengths
    assert min(seen) <= MAX_NEW - BUFFER and any(MAX_NEW - BUFFER < n < MAX_NEW for n in seen), seen
    assert MAX_NEW in seen, seen
    for name in ("overlong", "truncated_flag", "index_mod3"):
        assert set(logged(tmp_path, f"reward/{name}_fallbacks").values()) == {0.0}, name
