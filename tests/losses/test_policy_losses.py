"""The GRPO-family additions of srlm_pl.losses.policy against float64 references written out here: GSPO's
sequence-level ratio, the entropy-quantile token mask, and the k2 reverse KL to a teacher."""

from __future__ import annotations

import math

import pytest
import torch

from srlm_pl.losses import (
    entropy_quantile_mask,
    entropy_threshold,
    grpo_policy_loss,
    importance_log_ratio,
    kl_k2,
)

B, T = 5, 6


def _batch(seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    logp = -torch.rand(B, T, generator=g, dtype=torch.float64) * 3
    old = logp + torch.randn(B, T, generator=g, dtype=torch.float64) * 0.3  # some ratios leave the clip range
    lengths = torch.tensor([6, 1, 4, 3, 5])
    mask = torch.arange(T)[None, :] < lengths[:, None]
    adv = torch.tensor([1.0, -0.5, 0.8, -1.2, 0.3], dtype=torch.float64)
    return {"logp": logp, "old": old, "mask": mask, "adv": adv}


def _gspo_reference(logp, old, mask, adv, eps_low, eps_high):
    """Per-sequence GSPO objective in float64, loop by loop; 'grpo' aggregation = the mean over sequences."""
    terms = []
    for i in range(logp.shape[0]):
        idx = mask[i].nonzero().flatten().tolist()
        s = torch.exp(sum(logp[i, t] - old[i, t] for t in idx) / len(idx))
        clipped = min(max(s, 1 - eps_low), 1 + eps_high)
        terms.append(-torch.minimum(s * adv[i], clipped * adv[i]))
    return torch.stack(terms).mean()


def test_gspo_matches_a_float64_reference_in_value_and_gradient():
    b = _batch()
    eps_low, eps_high = 0.05, 0.08
    ratios = torch.exp(importance_log_ratio(b["logp"], b["old"], b["mask"], "sequence")).flatten()
    assert ((ratios < 1 - eps_low) | (ratios > 1 + eps_high)).any() and ((ratios > 1 - eps_low)
                                                                          & (ratios < 1 + eps_high)).any()
    x64 = b["logp"].clone().requires_grad_(True)
    ref = _gspo_reference(x64, b["old"], b["mask"], b["adv"], eps_low, eps_high)
    (ref_grad,) = torch.autograd.grad(ref, x64)
    x32 = b["logp"].float().requires_grad_(True)
    loss, metrics = grpo_policy_loss(x32, b["adv"].float(), b["mask"], old_logp=b["old"].float(), eps_low=eps_low,
                                     eps_high=eps_high, aggregation="grpo", importance_sampling_level="sequence")
    (grad,) = torch.autograd.grad(loss, x32)
    assert loss.item() == pytest.approx(ref.item(), rel=1e-5)
    torch.testing.assert_close(grad.double(), ref_grad, rtol=1e-5, atol=1e-7)
    assert torch.equal(grad[~b["mask"]], torch.zeros_like(grad[~b["mask"]]))  # padding gets no gradient
    # a sequence's clip counts for all of its tokens
    seq_clipped = ((ratios < 1 - eps_low) & (b["adv"] < 0)) | ((ratios > 1 + eps_high) & (b["adv"] > 0))
    expected = (seq_clipped.double() * b["mask"].sum(-1)).sum() / b["mask"].sum()
    assert metrics["clip_frac"].item() == pytest.approx(expected.item())


@pytest.mark.parametrize("aggregation", ["grpo", "bnpo", "dr_grpo", "dapo"])
def test_gspo_equals_token_level_grpo_when_every_sequence_has_one_token(aggregation):
    b = _batch(1)
    mask = torch.zeros(B, T, dtype=torch.bool)
    mask[:, 2] = True
    outs = {}
    for level in ("token", "sequence"):
        x = b["logp"].float().requires_grad_(True)
        loss, _ = grpo_policy_loss(x, b["adv"].float(), mask, old_logp=b["old"].float(), eps_low=0.1, eps_high=0.2,
                                   aggregation=aggregation, max_completion_length=T, importance_sampling_level=level)
        outs[level] = (loss, torch.autograd.grad(loss, x)[0])
    assert outs["token"][0].item() != 0.0
    torch.testing.assert_close(outs["sequence"][0], outs["token"][0])
    torch.testing.assert_close(outs["sequence"][1], outs["token"][1])


def test_sequence_ratio_ignores_padding_and_rejects_unknown_levels():
    b = _batch(2)
    noisy = b["logp"].masked_fill(~b["mask"], float("nan"))
    log_ratio = importance_log_ratio(noisy, b["old"], b["mask"], "sequence")
    assert log_ratio.shape == (B, 1) and torch.isfinite(log_ratio).all()
    expected = [(b["logp"][i] - b["old"][i])[b["mask"][i]].mean().item() for i in range(B)]
    assert log_ratio.flatten().tolist() == pytest.approx(expected)
    with pytest.raises(ValueError, match="importance_sampling_level must be one of"):
        importance_log_ratio(b["logp"], b["old"], b["mask"], "seq")


def test_entropy_quantile_mask_hand_computed():
    entropy = torch.tensor([[0.1, 0.5, 0.9, 9.0], [0.3, 0.7, 9.0, 9.0]])
    mask = torch.tensor([[1, 1, 1, 0], [1, 1, 0, 0]])
    # the five real tokens' entropies [0.1, 0.5, 0.9, 0.3, 0.7]: median 0.5 -> keep 0.5, 0.9, 0.7 (ties kept)
    top_half = entropy_quantile_mask(entropy, mask, 0.5)
    assert top_half.tolist() == [[False, True, True, False], [False, True, False, False]]
    # quantile 0.2 -> the 0.8 quantile of the five: 0.7 + 0.2 * (0.9 - 0.7) = 0.74 -> only 0.9
    assert entropy_threshold(torch.tensor([0.1, 0.5, 0.9, 0.3, 0.7]), 0.2).item() == pytest.approx(0.74)
    assert entropy_quantile_mask(entropy, mask, 0.2).sum().item() == 1
    assert torch.equal(entropy_quantile_mask(entropy, mask, 1.0), mask.bool())  # 1.0 = every real token
    shared = entropy_quantile_mask(entropy, mask, 0.5, threshold=torch.tensor(0.8))  # a threshold from all ranks
    assert shared.tolist() == [[False, False, True, False], [False, False, False, False]]
    for bad in (0.0, -0.1, 1.5):
        with pytest.raises(ValueError, match="top_entropy_quantile must be in"):
            entropy_quantile_mask(entropy, mask, bad)


def test_policy_mask_drops_the_policy_term_but_keeps_the_tokens_in_the_normaliser_and_their_kl():
    b = _batch(3)
    keep = b["mask"].clone()
    keep[:, ::2] = False  # leave out every other token's policy term
    ref_logp = b["logp"].float() - 0.2
    x = b["logp"].float().requires_grad_(True)
    loss, metrics = grpo_policy_loss(x, b["adv"].float(), b["mask"], ref_logp=ref_logp, beta=0.5,
                                     aggregation="bnpo", policy_mask=keep)
    (grad,) = torch.autograd.grad(loss, x)
    # float64 reference: -A on kept tokens (mu = 1: the ratio's value is 1, its gradient is that of logp) plus
    # 0.5 * k3 on every real token, over all real tokens
    x64 = b["logp"].clone().requires_grad_(True)
    delta = ref_logp.double() - x64
    per_token = -b["adv"][:, None] * torch.exp(x64 - x64.detach()) * keep + 0.5 * (torch.exp(delta) - delta - 1)
    ref = (per_token * b["mask"]).sum() / b["mask"].sum()
    (ref_grad,) = torch.autograd.grad(ref, x64)
    assert loss.item() == pytest.approx(ref.item(), rel=1e-5)
    torch.testing.assert_close(grad.double(), ref_grad, rtol=1e-5, atol=1e-7)
    assert metrics["policy_token_frac"].item() == pytest.approx(keep.sum().item() / b["mask"].sum().item())


def test_teacher_kl_term_value_gradient_and_metric():
    b = _batch(4)
    teacher = b["logp"].float() + torch.linspace(-1, 1, T)
    x = b["logp"].float().requires_grad_(True)
    zero_adv = torch.zeros(B)
    loss, metrics = grpo_policy_loss(x, zero_adv, b["mask"], aggregation="grpo", teacher_logp=teacher,
                                     teacher_kl_coef=0.3)
    (grad,) = torch.autograd.grad(loss, x)
    diff = (b["logp"] - teacher.double()) * b["mask"]
    n = b["mask"].sum(-1, keepdim=True).double()
    ref = (0.3 * 0.5 * diff**2 / n).sum(-1).mean()  # 'grpo': mean over sequences of the token means
    assert loss.item() == pytest.approx(ref.item(), rel=1e-5)
    torch.testing.assert_close(grad.double(), 0.3 * diff / n / B, rtol=1e-5, atol=1e-7)
    assert metrics["teacher_kl"].item() == pytest.approx((diff.sum() / b["mask"].sum()).item(), rel=1e-5)
    with pytest.raises(ValueError, match="teacher_kl_coef > 0 requires teacher_logp"):
        grpo_policy_loss(x, zero_adv, b["mask"], teacher_kl_coef=0.1)


def test_k2_gradient_on_policy_samples_estimates_the_reverse_kl_gradient():
    """The reason k2 is the teacher term: on tokens sampled from pi, the gradient of mean k2 is an unbiased estimate
    of grad KL(pi || teacher) (exact here in float64); k3's gradient estimates that of the forward KL instead."""
    g = torch.Generator().manual_seed(0)
    theta = torch.tensor([0.5, -1.0, 0.2, 1.5, 0.0], dtype=torch.float64, requires_grad=True)
    teacher_log = torch.log_softmax(torch.tensor([-1.0, 2.0, -0.5, -1.0, 1.8], dtype=torch.float64), -1)
    log_pi = torch.log_softmax(theta, -1)
    (exact,) = torch.autograd.grad((log_pi.exp() * (log_pi - teacher_log)).sum(), theta)
    log_pi = torch.log_softmax(theta, -1)
    (forward,) = torch.autograd.grad((teacher_log.exp() * (teacher_log - log_pi)).sum(), theta)  # KL(teacher || pi)
    samples = torch.multinomial(log_pi.detach().exp(), 400_000, replacement=True, generator=g)
    log_pi = torch.log_softmax(theta, -1)
    (k2_grad,) = torch.autograd.grad(kl_k2(log_pi[samples], teacher_log[samples]).mean(), theta)
    delta = teacher_log[samples] - torch.log_softmax(theta, -1)[samples]
    (k3_grad,) = torch.autograd.grad((torch.exp(delta) - delta - 1).mean(), theta)
    scale = exact.norm().item()
    assert (k2_grad - exact).norm().item() < 0.02 * scale
    assert (k3_grad - exact).norm().item() > 0.2 * scale
    assert (k3_grad - forward).norm().item() < 0.02 * forward.norm().item()  # k3's gradient: the forward KL's
    assert math.isfinite(scale) and scale > 0.1
