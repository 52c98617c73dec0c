"""GRPO settings reach the code that uses them, seen through spies during a real (tiny, in-process) ``fit``.

``GRPOSpy`` (tests/grpo_spy.py) wraps the stages of ``GRPOModule`` and records what flows between them, one
record per training batch. The tests check the recorded arguments against the config and recompute the loss in
float64 from them, so a setting that is accepted but not used, or a fast path that silently falls back, makes
them fail.
"""

from __future__ import annotations

import pytest
import torch

from cli_utils import fit, grpo_config
from grpo_spy import VARIED, G, GRPOSpy, reference_advantages, reference_policy_loss
from srlm_pl.rl.rollout import Rollout


# -- fast paths actually run in training -----------------------------------------------------------------------
def test_training_rollouts_decode_with_the_lean_decoder(tmp_path, monkeypatch) -> None:
    """Every decoding step of every training rollout goes through ``fast_decode.LeanDecoder`` (not the HF loop)."""
    spy = GRPOSpy(monkeypatch)
    fit(grpo_config(tmp_path, max_steps=2, **VARIED))
    generations = [g for b in spy.batches for g in b["generations"]]
    assert generations and spy.lean_builds == [True] * len(generations), (len(generations), spy.lean_builds)
    # the loop decodes width - 1 tokens after the prefill's logits (the last sampled token is never fed back)
    expected_steps = sum(g["completion_ids"].shape[1] - 1 for g in generations)
    assert expected_steps > 0 and spy.lean_steps == expected_steps


@pytest.mark.parametrize("share", [True, False])
def test_training_log_prob_forwards_share_the_prompt(tmp_path, monkeypatch, share: bool) -> None:
    """``share_prompt_forward`` decides the log-prob forward of the old policy, the reference and every pass:
    on, each distinct prompt is run once for its G completions; off, the concatenated forward runs."""
    spy = GRPOSpy(monkeypatch)
    cli = fit(grpo_config(tmp_path, max_steps=2, mu=2, beta=0.1, share_prompt_forward=share, **VARIED))
    assert len(spy.trained) == 1, spy.summary()
    (batch,) = spy.trained
    rows, groups = batch["rollout"].num_rows, len(set(batch["rollout"].group_ids.tolist()))
    assert cli.trainer.global_step == 2 and rows == 4 * G and groups == 4
    forwards = 4  # old log-probs, reference log-probs, two passes over one minibatch
    if share:
        assert spy.shared_forwards == [(rows, groups)] * forwards and spy.concatenated_forwards == []
    else:
        assert spy.shared_forwards == [] and spy.concatenated_forwards == [rows] * forwards


# -- settings reach the loss -------------------------------------------------------------------------------------
def test_mu_and_num_minibatches_set_the_optimizer_steps(tmp_path, monkeypatch) -> None:
    """mu=3, num_minibatches=2: six optimizer steps on one batch, each pass covers every row once in 2 minibatches
    drawn in a new order, and every step sees the stored old log-probs of its rows."""
    spy = GRPOSpy(monkeypatch)
    cli = fit(grpo_config(tmp_path, max_steps=6, mu=3, num_minibatches=2, **VARIED))
    assert cli.trainer.global_step == 6
    assert len(spy.batches) == len(spy.trained) == 1, spy.summary()
    (batch,) = spy.trained
    stored = batch["rollout"]

    def rows(r: Rollout) -> list[tuple]:
        return [tuple(r.completion_ids[i].tolist()) + (float(r.rewards[i]),) for i in range(r.num_rows)]

    assert batch["num_minibatches"] == [2, 2, 2]
    assert len(batch["minibatches"]) == len(batch["losses"]) == 6
    for p in range(3):
        pass_mbs = batch["minibatches"][2 * p: 2 * p + 2]
        assert [mb.num_rows for mb in pass_mbs] == [8, 8]
        assert sorted(rows(pass_mbs[0]) + rows(pass_mbs[1])) == sorted(rows(stored))
    # the passes shuffle the buffer anew: not the same split into minibatches three times
    splits = {tuple(sorted(rows(batch["minibatches"][2 * p]))) for p in range(3)}
    assert len(splits) > 1, "every mu pass used the same minibatch order"
    for call, mb in zip(batch["losses"], batch["minibatches"], strict=True):
        assert call["old_logp"] is not None and torch.equal(call["old_logp"], mb.old_logp)
        assert torch.equal(call["mask"], mb.completion_mask)


@pytest.mark.parametrize("aggregation", ["grpo", "bnpo", "dr_grpo", "dapo"])
def test_loss_aggregation_reaches_the_loss(tmp_path, monkeypatch, aggregation: str) -> None:
    """Each loss equals the float64 clipped objective aggregated as configured (dr_grpo over the configured
    max_new_tokens, dapo over the buffer's tokens / num_minibatches); the other aggregations give other values
    on these rollouts, so a setting that does not reach the loss is seen."""
    spy = GRPOSpy(monkeypatch)
    fit(grpo_config(tmp_path, max_steps=4, mu=2, num_minibatches=2, loss_aggregation=aggregation, **VARIED))
    (batch,) = spy.trained
    tokens = float(batch["rollout"].completion_mask.sum())
    distinguished = set()
    assert len(batch["losses"]) == 4
    for call in batch["losses"]:
        assert call["aggregation"] == aggregation
        refs = {mode: reference_policy_loss(call, aggregation=mode, max_new_tokens=VARIED["max_new_tokens"],
                                            num_global_tokens=tokens / 2)["loss"]
                for mode in ("grpo", "bnpo", "dr_grpo", "dapo")}
        assert call["loss"] == pytest.approx(refs[aggregation], rel=1e-5, abs=1e-7)
        distinguished |= {m for m, v in refs.items() if abs(v - refs[aggregation]) > 1e-3 * abs(refs[aggregation])}
    assert distinguished == {"grpo", "bnpo", "dr_grpo", "dapo"} - {aggregation}


@pytest.mark.parametrize("mode", ["group_std", "mean_only", "batch_std", "rloo", "reinforce_pp"])
def test_advantage_mode_reaches_the_rollout_and_the_loss(tmp_path, monkeypatch, mode: str) -> None:
    """The stored advantages are the float64 ``mode`` advantages of the stored rewards (the other modes differ
    on these rewards), and the loss receives exactly the stored advantages of its minibatch rows."""
    spy = GRPOSpy(monkeypatch)
    fit(grpo_config(tmp_path, max_steps=1, advantage=mode, **VARIED))
    (batch,) = spy.trained
    stored = batch["rollout"]
    assert batch["advantage_modes"] == [mode]
    assert stored.rewards.tolist() == [float(i % 3) for i in range(4 * G)]  # IndexMod3: no group dropped
    expected = reference_advantages(stored.rewards, mode)
    assert stored.advantages.tolist() == pytest.approx(expected, rel=1e-5, abs=1e-6)
    for other in {"group_std", "mean_only", "batch_std", "rloo", "reinforce_pp"} - {mode}:
        assert stored.advantages.tolist() != pytest.approx(reference_advantages(stored.rewards, other), abs=1e-3)
    (call,), (mb,) = batch["losses"], batch["minibatches"]
    assert torch.equal(call["advantages"], mb.advantages)
    assert sorted(call["advantages"].tolist()) == sorted(stored.advantages.tolist())


@pytest.mark.parametrize("mask_truncated", [True, False])
def test_mask_truncated_zeroes_truncated_rows_in_the_loss(tmp_path, monkeypatch, mask_truncated: bool) -> None:
    """With ``mask_truncated`` the rows that hit max_new_tokens have an all-zero mask in the loss and the others
    keep their generated length; without it every row keeps its generated length."""
    spy = GRPOSpy(monkeypatch)
    fit(grpo_config(tmp_path, max_steps=1, mask_truncated=mask_truncated, **VARIED))
    (batch,) = spy.trained
    (gen,) = batch["generations"]
    truncated, lengths = gen["truncated"], gen["lengths"]
    assert 0 < int(truncated.sum()) < truncated.numel()  # both kinds of rows in this rollout
    assert (lengths[truncated] == VARIED["max_new_tokens"]).all() and (lengths[~truncated] >= 1).all()
    (call,), (mb,) = batch["losses"], batch["minibatches"]
    assert torch.equal(call["mask"], mb.completion_mask)
    # the minibatch rows are the generated rows, shuffled and trimmed to the widest kept completion
    width = mb.completion_ids.shape[1]
    source = {tuple(gen["completion_ids"][i, :width].tolist()): i for i in range(gen["completion_ids"].shape[0])}
    assert len(source) == gen["completion_ids"].shape[0] and mb.num_rows == len(source)
    for row in range(mb.num_rows):
        src = source[tuple(mb.completion_ids[row].tolist())]
        assert bool(mb.truncated[row]) == bool(truncated[src])
        expected = 0 if (mask_truncated and bool(truncated[src])) else int(lengths[src])
        assert int(call["mask"][row].sum()) == expected, (row, bool(truncated[src]))
    expected_tokens = int(lengths[~truncated].sum()) if mask_truncated else int(lengths.sum())
    assert int(call["mask"].sum()) == expected_tokens
