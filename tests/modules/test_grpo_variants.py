"""GSPO, high-entropy token training and distillation inside RL reach the loss in a real (tiny, in-process) ``fit``,
seen through ``GRPOSpy``: each recorded loss is recomputed in float64 from the recorded tensors with the configured
settings, and the alternative settings give other values on the same records (so an unused setting is seen)."""

from __future__ import annotations

from typing import Any

import pytest
import torch

from cli_utils import fit, grpo_config, logged
from grpo_spy import VARIED, GRPOSpy
from srlm_pl.kd.teacher import VocabularyMismatchError
from srlm_pl.models.loading import ModelSpec
from srlm_pl.modules.grpo import GRPOModule
from srlm_pl.rl.logprobs import completion_logprobs


def reference_loss(call: dict[str, Any], *, level: str = "token", quantile: float = 1.0,
                   teacher_kl_coef: float = 0.0) -> float:
    """float64 objective of one recorded call: 'dapo' over the call's num_global_tokens, eps 0.2, no KL to a
    reference; GSPO's per-sequence ratio when ``level == 'sequence'``; the policy term only on the top
    ``quantile`` of the masked tokens by the recorded entropy; plus ``teacher_kl_coef`` x k2 to the teacher."""
    logp, m = call["logp"].double(), call["mask"].bool()
    old = logp if call["old_logp"] is None else call["old_logp"].double()
    adv = call["advantages"].double()[:, None]
    log_ratio = logp - old
    if level == "sequence":
        log_ratio = (torch.where(m, log_ratio, 0.0).sum(-1, keepdim=True) / m.sum(-1, keepdim=True).clamp(min=1))
    ratio = log_ratio.exp()
    per_token = -torch.minimum(ratio * adv, ratio.clamp(0.8, 1.2) * adv).expand_as(logp)
    if quantile < 1.0:
        ent = call["entropy"].double()
        per_token = per_token * (ent >= torch.quantile(ent[m], 1.0 - quantile))
    if teacher_kl_coef:
        per_token = per_token + teacher_kl_coef * 0.5 * (logp - call["teacher_logp"].double()) ** 2
    return float(torch.where(m, per_token, 0.0).sum() / float(call["num_global_tokens"]))


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
