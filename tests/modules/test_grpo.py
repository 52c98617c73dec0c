import json
import math

import pytest
import torch

from cli_utils import SMALL_TINY, fit, grpo_config, logged
from grpo_spy import G, GRPOSpy, reference_policy_loss
from srlm_pl.models.loading import LoRAConfig, ModelSpec, TinyConfig
from srlm_pl.modules.grpo import GRPOModule


def test_a_step_logs_the_algorithm_and_writes_samples(tmp_path) -> None:
    fit(grpo_config(tmp_path, max_steps=2))
    for key in ["reward/mean", "reward/digit_mean", "reward/digit_std", "train/zero_variance_frac",
                "completion/len_mean", "completion/len_max", "completion/truncated_frac", "train/clip_frac_low",
                "train/clip_frac_high", "train/entropy", "time/generation_s", "time/scoring_s", "time/training_s",
                "train/tokens_per_s", "lr"]:
        assert logged(tmp_path, key), key
    assert max(logged(tmp_path, "completion/len_max").values()) <= 8
    samples = [json.loads(x) for x in (tmp_path / "logs" / "version_0" / "samples.jsonl").read_text().splitlines()]
    assert samples and {"prompt", "completion", "extracted", "gold", "reward"} <= set(samples[0])
    assert all(s["reward"] == (1.0 if "7" in s["completion"] else 0.0) for s in samples)


def test_reward_rises_on_a_learnable_reward(tmp_path) -> None:
    """Seeded: a random tiny policy learns to emit the digit 7 (mean reward of the last steps > first)."""
    fit(grpo_config(tmp_path, max_steps=12, max_new_tokens=6, num_generations=8))
    rewards = logged(tmp_path, "reward/mean")
    steps = sorted(rewards)
    first, last = [rewards[s] for s in steps[:3]], [rewards[s] for s in steps[-3:]]
    assert sum(last) / 3 > sum(first) / 3 + 0.15, rewards


def test_all_zero_variance_groups_skip_the_step(tmp_path, monkeypatch) -> None:
    """A constant reward: every batch refills once (max_refill_rounds=1) with 4 fresh prompts that are generated
    and scored, finds no variance there either, and the step is skipped and counted."""
    spy = GRPOSpy(monkeypatch)
    cli = fit(grpo_config(tmp_path, max_steps=2, rewards=[{"class_path": "reward_fns.Constant"}],
                          dynamic_sampling=True, max_refill_rounds=1), "--trainer.limit_train_batches", "3",
              "--trainer.max_epochs", "1")
    assert cli.trainer.global_step == 0, "no optimizer step on zero-variance groups"
    assert cli.model.skipped_steps == 3
    assert len(spy.batches) == 3 and not spy.trained, spy.summary()
    for batch in spy.batches:
        (refill,) = batch["refills"]
        assert (refill["n"], refill["round"]) == (4, 1) and all(i.startswith("refill|") for i in refill["ids"])
        assert [g["prompts"] for g in batch["generations"]] == [batch["prompts"], refill["prompts"]]
        assert batch["rollout"] is None  # nothing reached the log-prob forwards or the loss
    assert list(logged(tmp_path, "train/refill_rounds").values()) == [1.0, 1.0, 1.0]
    assert logged(tmp_path, "train/skipped_steps")
    assert all(not math.isnan(v) for v in logged(tmp_path, "reward/mean").values())


def test_dynamic_sampling_refills_zero_variance_groups_with_fresh_prompts(tmp_path, monkeypatch) -> None:
    """Even-gold prompts get rewards [0, 1, 0, 1] and odd-gold ones [0, 0, 0, 0] (``AlternateIfGoldEven``): each
    batch drops its odd-gold groups and refills with fresh prompts, round after round, until it has 4 groups with
    variance or ran max_refill_rounds=3 rounds. The trained rollout holds exactly the kept groups, in order: the
    batch's own first, then each round's."""
    spy = GRPOSpy(monkeypatch)
    cli = fit(grpo_config(tmp_path, max_steps=2, rewards=[{"class_path": "reward_fns.AlternateIfGoldEven"}],
                          dynamic_sampling=True, max_refill_rounds=3))
    assert cli.trainer.global_step == 2 and len(spy.batches) == len(spy.trained) == 2, spy.summary()

    def even(gold: str) -> bool:
        return int(float(gold)) % 2 == 0

    outcomes = []
    for batch in spy.trained:
        keep = [(p, "batch") for p, g in zip(batch["prompts"], batch["golds"], strict=True) if even(g)]
        assert 0 < len(keep) < 4  # this seed's batches mix both kinds of prompts: a refill is needed
        assert batch["refills"], "zero-variance groups but no refill"
        for k, refill in enumerate(batch["refills"], 1):
            assert (refill["round"], refill["n"]) == (k, 4 - len(keep))  # asks exactly for the missing groups
            assert all(i.startswith("refill|") for i in refill["ids"]) and len(refill["prompts"]) == refill["n"]
            assert batch["generations"][k]["prompts"] == refill["prompts"]  # the fresh prompts were sampled
            keep += [(p, "refill") for p, g in zip(refill["prompts"], refill["golds"], strict=True) if even(g)]
        assert len(batch["generations"]) == 1 + len(batch["refills"])
        assert len(keep) >= 4 or len(batch["refills"]) == 3  # stops when full or out of rounds
        expected = keep[:4]
        stored = batch["rollout"]
        assert stored.num_rows == len(expected) * G
        assert len(set(stored.group_ids.tolist())) == len(expected)
        for i, (prompt, _) in enumerate(expected):
            rows = range(i * G, (i + 1) * G)
            assert len(set(stored.group_ids[list(rows)].tolist())) == 1
            for row in rows:
                assert stored.prompt_ids[row][stored.prompt_mask[row].bool()].tolist() == prompt
            assert stored.rewards[list(rows)].tolist() == [0.0, 1.0, 0.0, 1.0]
        assert (stored.advantages != 0).all()
        assert sum(mb.num_rows for mb in batch["minibatches"]) == stored.num_rows  # the loss saw those rows
        outcomes.append((len(expected), len(batch["refills"]), sum(src == "refill" for _, src in expected)))
    # this seed: batch 0 keeps 2 + 0 + 0 + 0 over three rounds (3 groups: one refilled), batch 1 fills up with
    # one refilled group in one round
    assert [o[:2] for o in outcomes] == [(3, 3), (4, 1)] and all(o[2] >= 1 for o in outcomes), outcomes
    assert list(logged(tmp_path, "train/refill_rounds").values()) == [3.0, 1.0]


def test_failing_and_nan_rewards_fall_back_and_are_counted(tmp_path) -> None:
    fit(grpo_config(tmp_path, max_steps=1, rewards=[{"class_path": "reward_fns.ContainsDigit"},
                                                    {"class_path": "reward_fns.Raises"},
                                                    {"class_path": "reward_fns.NaNEveryOther"}],
                    reward_weights=[1.0, 1.0, 1.0], reward_fallback=-1.0))
    assert logged(tmp_path, "reward/raises_fallbacks")[0] == 16  # 4 prompts x 4 completions
    assert logged(tmp_path, "reward/nan_fallbacks")[0] == 8
    assert logged(tmp_path, "reward/raises_mean")[0] == -1.0
    assert logged(tmp_path, "reward/nan_mean")[0] == 0.0  # half 1.0, half the fallback -1.0


def test_bad_settings_fail_before_training() -> None:
    with pytest.raises(ValueError, match="num_generations must be >= 2"):
        GRPOModule(num_generations=1, rewards=[])
    with pytest.raises(ValueError, match="reward_weights has 2 entries for 1 rewards"):
        GRPOModule(rewards=[lambda c, g: [0.0] * len(c)], reward_weights=[1.0, 2.0])
    with pytest.raises(ValueError, match="loss_aggregation"):
        GRPOModule(loss_aggregation="mean", rewards=[])


def test_reference_and_old_logprobs_only_when_needed(tmp_path) -> None:
    spec = ModelSpec(tiny=TinyConfig(**SMALL_TINY))
    plain = GRPOModule(policy=spec, rewards=[])
    plain.configure_model()
    assert plain._reference == []  # beta = 0: no reference model at all
    lora = GRPOModule(policy=ModelSpec(tiny=TinyConfig(**SMALL_TINY), lora=LoRAConfig(r=4, alpha=8)), beta=0.1,
                      rewards=[])
    lora.configure_model()
    assert lora._reference == []  # LoRA: the reference is the base model with adapters disabled
    full = GRPOModule(policy=spec, beta=0.1, rewards=[])
    full.configure_model()
    assert len(full._reference) == 1 and not any(p.requires_grad for p in full._reference[0].parameters())
    assert not any(k.startswith("_reference") for k in full.state_dict())


def _rollout():
    from srlm_pl.rl.rollout import Rollout

    ids = torch.tensor([[5, 6, 7], [8, 9, 10]])
    mask = torch.tensor([[1, 1, 1], [1, 1, 0]])
    return Rollout(ids, torch.ones_like(ids), ids + 1, mask, torch.zeros(2), torch.zeros(2), torch.tensor([0, 0]))


def test_old_and_reference_logprobs_are_attached_only_when_needed() -> None:
    spec = ModelSpec(tiny=TinyConfig(**SMALL_TINY))
    lean = GRPOModule(policy=spec, rewards=[])
    lean.configure_model()
    r = lean.attach_logprobs(_rollout())
    assert r.old_logp is None and r.ref_logp is None  # mu = 1, beta = 0: no extra forward passes
    full = GRPOModule(policy=spec, rewards=[], mu=2, beta=0.1)
    full.configure_model()
    r = full.attach_logprobs(_rollout())
    # before any update the policy equals the reference: identical log-probs, so the k3 KL is exactly 0
    torch.testing.assert_close(r.old_logp, r.ref_logp)
    assert (r.old_logp[1, 2] == 0) and (r.old_logp[0] < 0).all()  # masked position stays 0


def test_kl_and_clipping_are_logged_with_mu2_and_beta(tmp_path, monkeypatch) -> None:
    """mu=2, beta=0.1: the old log-probs stored at rollout time reach the loss of both passes; the first pass's
    policy is the one that sampled (its log-probs equal the stored ones), the second pass's has moved (ratio != 1,
    some tokens clipped), and every loss, clip fraction and KL equals its float64 recomputation from the stored
    old and reference log-probs."""
    spy = GRPOSpy(monkeypatch)
    cli = fit(grpo_config(tmp_path, max_steps=4, beta=0.1, mu=2))
    batches = spy.trained
    assert cli.trainer.global_step == 4 and len(batches) == 2, spy.summary()
    clip_fracs = []
    for b, batch in enumerate(batches):
        stored = batch["rollout"]
        assert stored.old_logp is not None and stored.ref_logp is not None
        by_row = {tuple(stored.prompt_ids[i].tolist() + stored.completion_ids[i].tolist()): i
                  for i in range(stored.num_rows)}
        assert len(batch["losses"]) == len(batch["minibatches"]) == 2
        for call, mb in zip(batch["losses"], batch["minibatches"], strict=True):
            rows = [by_row[tuple(mb.prompt_ids[i].tolist() + mb.completion_ids[i].tolist())]
                    for i in range(mb.num_rows)]
            assert sorted(rows) == list(range(stored.num_rows))  # one pass: every stored row once
            assert call["old_logp"] is not None and torch.equal(call["old_logp"], stored.old_logp[rows])
            assert call["ref_logp"] is not None and torch.equal(call["ref_logp"], stored.ref_logp[rows])
            ref = reference_policy_loss(call, aggregation="dapo", max_new_tokens=8,
                                        num_global_tokens=float(stored.completion_mask.sum()), beta=0.1)
            assert call["loss"] == pytest.approx(ref["loss"], rel=1e-5, abs=1e-6)
            assert call["metrics"]["clip_frac"] == pytest.approx(ref["clip_frac"], abs=1e-6)
            assert call["metrics"]["kl"] == pytest.approx(ref["kl"], rel=1e-4, abs=1e-7)
        first, second = batch["losses"]
        mask1, mask2 = first["mask"].bool(), second["mask"].bool()
        # pass 1 runs the policy that sampled the rollout: its log-probs are the stored old ones
        torch.testing.assert_close(first["logp"][mask1], first["old_logp"][mask1], rtol=0, atol=1e-5)
        # pass 2 runs the policy after one optimizer step (lr 1e-2): the ratio to the stored values moved
        assert (second["logp"] - second["old_logp"])[mask2].abs().max() > 0.1
        clip_fracs.append(second["metrics"]["clip_frac"])
        if b == 0:  # the policy starts at the reference weights
            torch.testing.assert_close(first["logp"][mask1], first["ref_logp"][mask1], rtol=0, atol=1e-5)
        else:  # the reference stays at the starting weights while the policy moves
            assert (stored.old_logp - stored.ref_logp)[stored.completion_mask.bool()].abs().max() > 0.1
    assert max(clip_fracs) > 0, clip_fracs
    kl = logged(tmp_path, "train/kl")
    assert kl and all(v >= 0 for v in kl.values()) and max(kl.values()) > 0
    assert logged(tmp_path, "train/clip_frac")


def test_bf16_mixed_with_a_fused_optimizer_clips_gradients(tmp_path) -> None:
    """Lightning's clip_gradients refuses fused optimizers under mixed precision; GRPO clips itself there."""
    cli = fit(grpo_config(tmp_path, max_steps=2, max_grad_norm=0.01,
                          optimizer={"class_path": "srlm_pl.optim.AdamW", "init_args": {"lr": 1e-2, "fused": True}},
                          extra_callbacks=[{"class_path": "grad_probe.GradProbe"}]),
              "--trainer.precision", "bf16-mixed")
    probe = next(c for c in cli.trainer.callbacks if type(c).__name__ == "GradProbe")
    before_clipping = logged(tmp_path, "train/grad_norm")
    assert cli.trainer.global_step == 2 and len(probe.norms) == 2
    assert all(v > 0.01 for v in before_clipping.values()), before_clipping
    assert all(0 < n <= 0.01 * (1 + 1e-4) for n in probe.norms), probe.norms
    assert probe.after_batch and not any(probe.after_batch)  # freed right after each step


def test_lora_reference_logprobs_equal_the_base_model() -> None:
    module = GRPOModule(policy=ModelSpec(tiny=TinyConfig(**SMALL_TINY), lora=LoRAConfig(r=4, alpha=8, dropout=0.0)),
                        beta=0.1, rewards=[])
    module.configure_model()
    with torch.no_grad():
        for n, p in module.model.named_parameters():
            if "lora_B" in n:
                p.normal_(0, 0.5)
    r = _rollout()
    ref = module.attach_logprobs(r).ref_logp
    with module.model.disable_adapter():
        expected = module.logprobs(module.model, r)[0]
    adapted = module.logprobs(module.model, r)[0]
    torch.testing.assert_close(ref, expected)
    assert not torch.allclose(ref, adapted)




def test_trl_like_mode_trains_on_zero_variance_groups_without_nan(tmp_path) -> None:
    cli = fit(grpo_config(tmp_path, max_steps=2, rewards=[{"class_path": "reward_fns.Constant"}],
                          drop_zero_variance=False, skip_zero_gradient_steps=False))
    assert cli.trainer.global_step == 2 and cli.model.skipped_steps == 0
    losses = logged(tmp_path, "train/loss")
    assert losses and all(v == 0.0 for v in losses.values())  # zero advantages: exactly zero, never NaN
    assert all(v == 0.0 for v in logged(tmp_path, "train/grad_norm").values())
