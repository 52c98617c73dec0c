"""GRPO settings reach the code that uses them, seen through spies during a real (tiny, in-process) ``fit``.

``GRPOSpy`` wraps the stages of ``GRPOModule`` (collection, generation, advantages, log-prob forwards, the
minibatches and ``grpo_policy_loss``) and records what flows between them, one record per training batch. The
tests check the recorded arguments against the config and recompute the loss in float64 from them, so a setting
that is accepted but not used, or a fast path that silently falls back, makes them fail.
"""

from __future__ import annotations

from typing import Any

import pytest
import torch
from torch import Tensor

import srlm_pl.modules.grpo as grpo_module
import srlm_pl.rl.logprobs as logprobs_module
from cli_utils import fit, grpo_config
from srlm_pl.generation.fast_decode import LeanDecoder
from srlm_pl.modules.grpo import GRPOModule
from srlm_pl.rl.rollout import Rollout, RolloutBuffer

G = 4  # grpo_config's num_generations
VARIED = {"rewards": [{"class_path": "reward_fns.IndexMod3"}], "stop_strings": ["e"], "max_new_tokens": 6}
"""Every group has reward variance (no group dropped, no step skipped) and the stop string makes completion
lengths vary (from 1 to 6 tokens, some rows truncated), so the aggregations and masks give different values."""


def _cpu(x: Any) -> Any:
    return x.detach().cpu().clone() if isinstance(x, Tensor) else x


def _rollout_cpu(r: Rollout) -> Rollout:
    return r._map(_cpu)


class GRPOSpy:
    """Records, during a ``fit``, what ``GRPOModule`` passes between its stages; ``batches`` has one dict per
    ``collect_rollouts`` call (training batch), filled in as the step runs."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.batches: list[dict[str, Any]] = []
        self.lean_builds: list[bool] = []  # per LeanDecoder.build: a decoder was returned
        self.lean_steps = 0  # LeanDecoder.step calls (decoded tokens per row batch)
        self.shared_forwards: list[tuple[int, int]] = []  # (rows, distinct prompts run) per shared-prompt forward
        self.concatenated_forwards: list[int] = []  # rows per concatenated prompt + completion forward
        spy = self

        collect = GRPOModule.collect_rollouts

        def collect_rollouts(module, prompts, golds, ids):
            spy.batches.append({"prompts": [list(p) for p in prompts], "golds": list(golds), "ids": list(ids),
                                "refills": [], "generations": [], "advantage_modes": [], "rollout": None,
                                "num_minibatches": [], "minibatches": [], "losses": []})
            return collect(module, prompts, golds, ids)

        refill = GRPOModule.refill_prompts

        def refill_prompts(module, n, round_):
            out = refill(module, n, round_)
            spy.batches[-1]["refills"].append({"n": n, "round": round_, "prompts": out[0], "golds": out[1],
                                               "ids": out[2]})
            return out

        attach = GRPOModule.attach_logprobs

        def attach_logprobs(module, rollout):
            out = attach(module, rollout)
            spy.batches[-1]["rollout"] = _rollout_cpu(out)
            return out

        generate = grpo_module.generate

        def generate_spy(model, prompts, config, **kw):
            out = generate(model, prompts, config, **kw)
            spy.batches[-1]["generations"].append({"prompts": [list(p) for p in prompts],
                                                   **{k: _cpu(v) for k, v in out._asdict().items()}})
            return out

        advantages = grpo_module.group_advantages

        def group_advantages(rewards, group_size, mode="group_std", *args, **kw):
            spy.batches[-1]["advantage_modes"].append(mode)
            return advantages(rewards, group_size, mode, *args, **kw)

        minibatches = RolloutBuffer.minibatches

        def minibatches_spy(buffer, num_minibatches, *, generator):
            spy.batches[-1]["num_minibatches"].append(num_minibatches)
            for mb in minibatches(buffer, num_minibatches, generator=generator):
                spy.batches[-1]["minibatches"].append(_rollout_cpu(mb))
                yield mb

        loss_fn = grpo_module.grpo_policy_loss

        def grpo_policy_loss(logp, advantages, mask, **kw):
            loss, metrics = loss_fn(logp, advantages, mask, **kw)
            spy.batches[-1]["losses"].append({"logp": _cpu(logp), "advantages": _cpu(advantages), "mask": _cpu(mask),
                                              **{k: _cpu(v) for k, v in kw.items()}, "loss": float(loss),
                                              "metrics": {k: float(v) for k, v in metrics.items()}})
            return loss, metrics

        build = LeanDecoder.build.__func__
        step = LeanDecoder.step

        def build_spy(cls, model, rows):
            decoder = build(cls, model, rows)
            spy.lean_builds.append(decoder is not None)
            return decoder

        def step_spy(decoder, token, position, attention_mask):
            spy.lean_steps += 1
            return step(decoder, token, position, attention_mask)

        shared = logprobs_module._shared_prompt_hidden
        concatenated = logprobs_module._concatenated_hidden

        def shared_spy(model, prompt_ids, prompt_mask, completion_ids, completion_mask, first, inverse):
            spy.shared_forwards.append((prompt_ids.shape[0], first.numel()))
            return shared(model, prompt_ids, prompt_mask, completion_ids, completion_mask, first, inverse)

        def concatenated_spy(model, prompt_ids, prompt_mask, completion_ids, completion_mask):
            spy.concatenated_forwards.append(prompt_ids.shape[0])
            return concatenated(model, prompt_ids, prompt_mask, completion_ids, completion_mask)

        monkeypatch.setattr(GRPOModule, "collect_rollouts", collect_rollouts)
        monkeypatch.setattr(GRPOModule, "refill_prompts", refill_prompts)
        monkeypatch.setattr(GRPOModule, "attach_logprobs", attach_logprobs)
        monkeypatch.setattr(grpo_module, "generate", generate_spy)
        monkeypatch.setattr(grpo_module, "group_advantages", group_advantages)
        monkeypatch.setattr(grpo_module, "grpo_policy_loss", grpo_policy_loss)
        monkeypatch.setattr(RolloutBuffer, "minibatches", minibatches_spy)
        monkeypatch.setattr(LeanDecoder, "build", classmethod(build_spy))
        monkeypatch.setattr(LeanDecoder, "step", step_spy)
        monkeypatch.setattr(logprobs_module, "_shared_prompt_hidden", shared_spy)
        monkeypatch.setattr(logprobs_module, "_concatenated_hidden", concatenated_spy)

    @property
    def trained(self) -> list[dict[str, Any]]:
        """The batches that reached the loss (not skipped)."""
        return [b for b in self.batches if b["losses"]]

    def summary(self) -> list[tuple[list[str], int, int]]:
        """Per batch: prompt ids, refill rounds, loss calls (a short failure message)."""
        return [(b["ids"], len(b["refills"]), len(b["losses"])) for b in self.batches]


def reference_policy_loss(call: dict[str, Any], *, aggregation: str, max_new_tokens: int, num_global_tokens: float,
                          beta: float = 0.0, eps_low: float = 0.2, eps_high: float = 0.2) -> dict[str, float]:
    """float64 recomputation of one recorded ``grpo_policy_loss`` call from its tensors, with the settings given
    by the test (from the config, not from the call): the loss, ``clip_frac`` and ``kl``."""
    logp = call["logp"].double()
    old = logp if call["old_logp"] is None else call["old_logp"].double()
    adv = call["advantages"].double()[:, None]
    m = call["mask"].bool()
    ratio = (logp - old).exp()
    per_token = -torch.minimum(ratio * adv, ratio.clamp(1 - eps_low, 1 + eps_high) * adv)
    out = {}
    if call["ref_logp"] is not None:
        d = call["ref_logp"].double() - logp
        k3 = d.exp() - d - 1
        per_token = per_token + beta * k3
        out["kl"] = float(k3[m].mean()) if m.any() else 0.0
    masked = torch.where(m, per_token, 0.0)
    if aggregation == "grpo":
        value = (masked.sum(-1) / m.sum(-1).clamp(min=1)).mean()
    elif aggregation == "bnpo":
        value = masked.sum() / max(int(m.sum()), 1)
    elif aggregation == "dr_grpo":
        value = masked.sum() / (m.shape[0] * max_new_tokens)
    else:  # dapo
        value = masked.sum() / num_global_tokens
    clipped = ((ratio < 1 - eps_low) & (adv < 0)) | ((ratio > 1 + eps_high) & (adv > 0))
    out["loss"] = float(value)
    out["clip_frac"] = float(clipped[m].double().mean()) if m.any() else 0.0
    return out


def reference_advantages(rewards: Tensor, mode: str, eps: float = 1e-4) -> list[float]:
    """float64 group advantages of ``rewards`` in groups of G consecutive rows (sample std, as in TRL)."""
    r = rewards.double().view(-1, G)
    centered = r - r.mean(-1, keepdim=True)
    if mode == "group_std":
        adv = centered / (r.std(-1, keepdim=True) + eps)
    elif mode == "batch_std":
        adv = centered / (r.std() + eps)
    else:
        adv = centered
    return adv.flatten().tolist()


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


@pytest.mark.parametrize("mode", ["group_std", "mean_only", "batch_std"])
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
    for other in {"group_std", "mean_only", "batch_std"} - {mode}:
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
