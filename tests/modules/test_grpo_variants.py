"""GSPO, high-entropy token training and distillation inside RL reach the loss in a real (tiny, in-process) ``fit``,
seen through ``GRPOSpy``: each recorded loss is recomputed in float64 from the recorded tensors with the configured
settings, and the alternative settings give other values on the same records (so an unused setting is seen)."""

from __future__ import annotations

from typing import Any

import pytest
import torch

from cli_utils import edit_config, fit, grpo_config, logged
from grpo_spy import VARIED, G, GRPOSpy, reference_advantages
from srlm_pl.kd.teacher import VocabularyMismatchError
from srlm_pl.models.loading import ModelSpec
from srlm_pl.modules.grpo import GRPOModule
from srlm_pl.rl.logprobs import completion_logprobs
from srlm_pl.rl.rollout import Rollout, group_advantages


def reference_loss(call: dict[str, Any], *, level: str = "token", quantile: float = 1.0,
                   teacher_kl_coef: float = 0.0, eps: tuple[float, float] = (0.2, 0.2),
                   aggregation: str = "dapo") -> float:
    """float64 objective of one recorded call, no KL to a reference: clip range ``eps`` (low, high); GSPO's
    per-sequence ratio when ``level == 'sequence'``; the policy term only on the top ``quantile`` of the masked
    tokens by the recorded entropy; plus ``teacher_kl_coef`` x k2 to the teacher; 'dapo' over the call's
    num_global_tokens or 'grpo' (mean of the sequences' token means)."""
    logp, m = call["logp"].double(), call["mask"].bool()
    old = logp if call["old_logp"] is None else call["old_logp"].double()
    adv = call["advantages"].double()[:, None]
    log_ratio = logp - old
    if level == "sequence":
        log_ratio = (torch.where(m, log_ratio, 0.0).sum(-1, keepdim=True) / m.sum(-1, keepdim=True).clamp(min=1))
    ratio = log_ratio.exp()
    per_token = -torch.minimum(ratio * adv, ratio.clamp(1 - eps[0], 1 + eps[1]) * adv).expand_as(logp)
    if quantile < 1.0:
        ent = call["entropy"].double()
        per_token = per_token * (ent >= torch.quantile(ent[m], 1.0 - quantile))
    if teacher_kl_coef:
        per_token = per_token + teacher_kl_coef * 0.5 * (logp - call["teacher_logp"].double()) ** 2
    masked = torch.where(m, per_token, 0.0)
    if aggregation == "grpo":
        return float((masked.sum(-1) / m.sum(-1).clamp(min=1)).mean())
    return float(masked.sum() / float(call["num_global_tokens"]))


@pytest.mark.parametrize("level", ["token", "sequence"])
def test_importance_sampling_level_reaches_the_loss(tmp_path, monkeypatch, level: str) -> None:
    """mu = 2: the second pass runs after an optimizer step, so its ratios differ from 1 and the token-level and
    GSPO objectives differ; each call equals the configured one."""
    spy = GRPOSpy(monkeypatch)
    fit(grpo_config(tmp_path, max_steps=2, mu=2, importance_sampling_level=level, **VARIED))
    (batch,) = spy.trained
    calls = batch["losses"]
    assert len(calls) == 2 and all(c["importance_sampling_level"] == level for c in calls)
    for call in calls:
        assert call["loss"] == pytest.approx(reference_loss(call, level=level), rel=1e-5, abs=1e-7)
    other = "token" if level == "sequence" else "sequence"
    second = calls[1]
    assert abs(reference_loss(second, level=other) - reference_loss(second, level=level)) > 1e-4


def test_the_gspo_overlay_settings_correct_the_second_minibatch(tmp_path, monkeypatch) -> None:
    """configs/variants/grpo_gspo.yaml's settings (mu 1, two minibatches, sequence ratio, eps 3e-4 / 4e-4): the old
    log-probs are stored, so the second minibatch, drawn after an optimizer step, sees ratios away from 1 and
    clips them."""
    spy = GRPOSpy(monkeypatch)
    settings = {"importance_sampling_level": "sequence", "eps_low": 3e-4, "eps_high": 4e-4,
                "loss_aggregation": "grpo", "num_minibatches": 2}
    fit(grpo_config(tmp_path, max_steps=2, **settings, **VARIED))
    (batch,) = spy.trained
    first, second = batch["losses"]
    assert first["old_logp"] is not None and second["old_logp"] is not None
    assert first["metrics"]["clip_frac"] == 0.0 and second["metrics"]["clip_frac"] > 0.1
    for call in (first, second):
        expected = reference_loss(call, level="sequence", eps=(3e-4, 4e-4), aggregation="grpo")
        assert call["loss"] == pytest.approx(expected, rel=1e-5, abs=1e-7)


def test_top_entropy_quantile_trains_on_the_high_entropy_tokens_only(tmp_path, monkeypatch) -> None:
    spy = GRPOSpy(monkeypatch)
    fit(grpo_config(tmp_path, max_steps=1, top_entropy_quantile=0.25, **VARIED))
    (batch,) = spy.trained
    (call,) = batch["losses"]
    m, ent = call["mask"].bool(), call["entropy"]
    threshold = torch.quantile(ent[m].double(), 0.75)
    assert torch.equal(call["policy_mask"], m & (ent >= threshold))
    kept = int(call["policy_mask"].sum())
    assert 0 < kept < int(m.sum()) and kept == pytest.approx(0.25 * int(m.sum()), abs=2)
    assert call["loss"] == pytest.approx(reference_loss(call, quantile=0.25), rel=1e-5, abs=1e-7)
    assert abs(reference_loss(call) - call["loss"]) > 1e-4  # training on every token gives another loss
    assert list(logged(tmp_path, "train/policy_token_frac").values()) == pytest.approx([kept / int(m.sum())])


@pytest.mark.parametrize("value", [0.0, 1.5, -0.2])
def test_top_entropy_quantile_outside_the_unit_interval_names_the_key(value: float) -> None:
    with pytest.raises(ValueError, match="model.init_args: top_entropy_quantile must be in"):
        GRPOModule(policy=ModelSpec("tiny"), top_entropy_quantile=value)


def test_bad_variant_settings_name_their_keys() -> None:
    with pytest.raises(ValueError, match="importance_sampling_level must be one of"):
        GRPOModule(policy=ModelSpec("tiny"), importance_sampling_level="seq")
    with pytest.raises(ValueError, match="teacher_kl_coef > 0 needs model.init_args.teacher"):
        GRPOModule(policy=ModelSpec("tiny"), teacher_kl_coef=0.1)


def test_teacher_kl_distils_inside_rl(tmp_path, monkeypatch, teacher_dir) -> None:
    """A student made of the teacher's layers 0 and 2 trains with the k2 reverse KL to the full teacher: the
    stored teacher log-probs are the teacher's own log-probs of the sampled tokens, the loss includes the term,
    ``train/teacher_kl`` is logged, and the teacher stays out of the checkpoint."""
    spy = GRPOSpy(monkeypatch)
    cfg = grpo_config(tmp_path, max_steps=1, every=1, teacher_kl_coef=0.5, teacher={"name_or_path": str(teacher_dir)},
                      policy={"name_or_path": str(teacher_dir), "layer_stride": 2}, **VARIED)
    cli = fit(cfg)
    (batch,) = spy.trained
    rollout, (call,) = batch["rollout"], batch["losses"]
    teacher = GRPOModule(policy=ModelSpec(str(teacher_dir)))
    teacher.configure_model()
    with torch.no_grad():
        expected, _ = completion_logprobs(teacher.model, rollout.prompt_ids, rollout.prompt_mask,
                                          rollout.completion_ids, rollout.completion_mask,
                                          vocab_size=len(teacher.tokenizer))
    m = rollout.completion_mask.bool()
    torch.testing.assert_close(rollout.teacher_logp[m], expected[m], rtol=1e-4, atol=1e-4)
    assert call["teacher_kl_coef"] == 0.5
    assert call["loss"] == pytest.approx(reference_loss(call, teacher_kl_coef=0.5), rel=1e-5, abs=1e-7)
    assert abs(reference_loss(call) - call["loss"]) > 1e-4
    k1 = (call["logp"] - call["teacher_logp"])[call["mask"].bool()].mean()
    assert list(logged(tmp_path, "train/teacher_kl").values()) == pytest.approx([float(k1)], rel=1e-4)
    state = torch.load(tmp_path / "checkpoints" / "last.ckpt", weights_only=False)["state_dict"]
    assert state and all(k.startswith("model.") for k in state)
    student = cli.model.model
    assert len(state) == len(student.state_dict())  # the student's tensors only: no teacher copy


def test_a_teacher_with_another_vocabulary_is_refused(tmp_path, teacher_dir) -> None:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    other = tmp_path / "other_vocab"
    tok = AutoTokenizer.from_pretrained(teacher_dir)
    model = AutoModelForCausalLM.from_pretrained(teacher_dir)
    tok.add_tokens(["<extra_tok>"])
    model.resize_token_embeddings(len(tok), mean_resizing=False)
    model.save_pretrained(other)
    tok.save_pretrained(other)
    module = GRPOModule(policy=ModelSpec(str(teacher_dir)), teacher=ModelSpec(str(other)), teacher_kl_coef=0.1)
    with pytest.raises(VocabularyMismatchError, match="token ids differ"):
        module.configure_model()


def test_the_teacher_term_trains_groups_without_reward_variance(tmp_path, monkeypatch, teacher_dir) -> None:
    """With a constant reward every group has zero variance; with a teacher term they are kept (not dropped, the
    step not skipped) and the loss is the teacher term alone."""
    spy = GRPOSpy(monkeypatch)
    cfg = grpo_config(tmp_path, max_steps=1, teacher_kl_coef=0.5, teacher={"name_or_path": str(teacher_dir)},
                      policy={"name_or_path": str(teacher_dir), "layer_stride": 2},
                      rewards=[{"class_path": "reward_fns.Constant"}], dynamic_sampling=True)
    cli = fit(edit_config(cfg, lambda c: c["trainer"].update(max_epochs=1, limit_train_batches=2)))  # ends if skipped
    assert cli.trainer.global_step == 1 and cli.model.skipped_steps == 0
    (batch,) = spy.trained
    assert batch["rollout"].num_rows == 4 * G and not batch["refills"]  # kept, and nothing refilled
    (call,) = batch["losses"]
    assert torch.equal(call["advantages"], torch.zeros_like(call["advantages"]))
    assert call["loss"] > 0 and call["loss"] == pytest.approx(reference_loss(call, teacher_kl_coef=0.5), rel=1e-5)


@pytest.mark.parametrize("mode", ["batch_std", "reinforce_pp"])
def test_batch_advantages_are_taken_over_the_kept_groups(tmp_path, monkeypatch, mode: str) -> None:
    """Zero-variance groups are dropped before the batch std is taken (as verl's DAPO filter does): the stored
    advantages are the float64 ``mode`` advantages of the kept rewards alone."""
    spy = GRPOSpy(monkeypatch)
    fit(grpo_config(tmp_path, max_steps=1, advantage=mode, max_new_tokens=4,
                    rewards=[{"class_path": "reward_fns.AlternateIfGoldEven"}]))
    (batch,) = spy.trained
    stored = batch["rollout"]
    assert 0 < stored.num_rows < 4 * G  # some groups were dropped, some kept
    assert stored.advantages.tolist() == pytest.approx(reference_advantages(stored.rewards, mode), rel=1e-5)


@pytest.mark.parametrize("mode", ["batch_std", "reinforce_pp"])
def test_batch_advantages_are_taken_over_every_process(monkeypatch, mode: str) -> None:
    """Two processes' kept groups: each process's advantages are its rows of the advantages of both processes'
    rewards together (the std comes from summed statistics), not of its own rewards."""
    rewards = {0: torch.tensor([1.0, 0.0, 0.0, 0.0, 1.0, 1.0, 0.0, 1.0]),
               1: torch.tensor([3.0, 0.0, 1.0, 0.0, 2.0, 2.0, 2.0, 0.0, 5.0, 1.0, 1.0, 1.0])}
    module = GRPOModule(policy=ModelSpec("tiny"), num_generations=4, advantage=mode)
    sums: dict[int, torch.Tensor] = {}

    def rollout(r: torch.Tensor) -> Rollout:
        n = r.numel()
        ids = torch.ones(n, 2, dtype=torch.long)
        return Rollout(ids, ids, ids, ids, r, torch.zeros(n), torch.arange(n) // 4)

    for rank, other in ((1, None), (0, 1)):  # rank 1 first, to record its statistics
        def global_sum(value, rank=rank, other=other):  # noqa: ANN001, ANN202
            sums[rank] = value.detach().clone()
            return value.float() + (sums[other].float() if other is not None else 0.0)

        monkeypatch.setattr(module, "global_sum", global_sum)
        got = module.batch_normalised(rollout(rewards[rank])).advantages
    expected = group_advantages(torch.cat([rewards[0], rewards[1]]), 4, mode)[:8]
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-6)
    alone = group_advantages(rewards[0], 4, mode)
    assert not torch.allclose(got, alone, atol=1e-3)  # one process's std alone gives other values
