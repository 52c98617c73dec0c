"""Truncated importance sampling on a constructed sampler/trainer mismatch: weights, cap, gradients and metrics."""

from __future__ import annotations

import math

import pytest
import torch

from srlm_pl.losses import grpo_policy_loss, truncated_is


def _case():
    logp = torch.tensor([[-1.0, -2.0, -0.5], [-0.3, -1.2, -4.0]], dtype=torch.float64, requires_grad=True)
    mask = torch.tensor([[1, 1, 1], [1, 1, 0]])
    # the sampler gave these tokens other log-probs: ratio train/sampler = 1, 1.5, 3 | 0.5, 1, (masked) 10
    shift = torch.tensor([[0.0, math.log(1.5), math.log(3.0)], [math.log(0.5), 0.0, math.log(10.0)]],
                         dtype=torch.float64)
    return logp, mask, logp.detach() - shift


def test_weights_are_the_ratio_capped_and_masked() -> None:
    logp, mask, sampler = _case()
    weight, metrics = truncated_is(logp, sampler, mask, cap=2.0)
    torch.testing.assert_close(weight, torch.tensor([[1.0, 1.5, 2.0], [0.5, 1.0, 0.0]], dtype=torch.float64))
    diffs = [0.0, math.log(1.5), math.log(3.0), math.log(2.0), 0.0]  # |train - sampler| on the 5 masked tokens
    assert float(metrics["logprob_diff_mean"]) == pytest.approx(sum(diffs) / 5)
    assert float(metrics["logprob_diff_max"]) == pytest.approx(math.log(3.0))  # the masked log(10) is ignored
    assert float(metrics["tis_capped_frac"]) == pytest.approx(1 / 5)
    assert float(metrics["tis_weight_mean"]) == pytest.approx((1 + 1.5 + 2 + 0.5 + 1) / 5)
    uncapped, _ = truncated_is(logp, sampler, mask, cap=None)
    assert torch.equal(uncapped, mask.double())  # no cap: TIS off, weight 1 on every token


def test_policy_gradient_is_scaled_per_token_by_the_weight() -> None:
    """mu = 1: the surrogate's gradient wrt logp is -A * w / tokens per token (dapo aggregation)."""
    logp, mask, sampler = _case()
    adv = torch.tensor([1.0, -2.0], dtype=torch.float64)
    loss, metrics = grpo_policy_loss(logp, adv, mask, aggregation="dapo", num_global_tokens=5.0,
                                     sampler_logp=sampler, tis_cap=2.0)
    loss.backward()
    w = torch.tensor([[1.0, 1.5, 2.0], [0.5, 1.0, 0.0]], dtype=torch.float64)
    torch.testing.assert_close(logp.grad, -adv[:, None] * w / 5.0)
    assert "logprob_diff_mean" in metrics
    plain = logp.detach().clone().requires_grad_(True)
    grpo_policy_loss(plain, adv, mask, aggregation="dapo", num_global_tokens=5.0)[0].backward()
    torch.testing.assert_close(plain.grad, -adv[:, None] * mask / 5.0)  # no sampler log-probs: unweighted
