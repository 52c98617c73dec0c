"""GRPO-family policy losses: the k3 KL estimator, loss aggregation and the clipped surrogate.

``kl_k3`` is Schulman's k3 estimator of KL(pi || pi_ref): ``exp(ref - logp) - (ref - logp) - 1 >= 0``
(as in TRL and verl's ``low_var_kl``, without clamping). ``aggregate`` reduces a per-token loss like TRL's
``GRPOTrainer`` loss types:

* ``grpo``: mean over the ``B`` sequences of each sequence's masked token mean; a row with an empty mask
  contributes 0 and still counts in the denominator ``B`` (per-row count clamped to >= 1, as in TRL).
* ``bnpo``: masked token mean over the local batch (denominator clamped to >= 1).
* ``dr_grpo``: masked sum / (B * max_completion_length) (Dr. GRPO, constant normaliser).
* ``dapo``: masked sum / ``num_global_tokens`` (DAPO token-level mean over the whole global batch; the caller
  counts tokens across gradient-accumulation micro-batches and ranks; falls back to the local count). Under
  DDP, which averages gradients over W ranks, pass ``num_global_tokens / W`` to get the true global mean.

``grpo_policy_loss`` is the PPO-clip objective with asymmetric clipping (DAPO's clip-higher); the KL and
entropy terms are added per token before aggregation, so they are normalised like the policy term.
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import Tensor

Aggregation = Literal["grpo", "bnpo", "dr_grpo", "dapo"]
AGGREGATIONS: tuple[str, ...] = ("grpo", "bnpo", "dr_grpo", "dapo")


def kl_k3(logp: Tensor, ref_logp: Tensor) -> Tensor:
    """Schulman's k3 estimator per token: exp(ref - logp) - (ref - logp) - 1 (>= 0, unbiased for KL)."""
    delta = ref_logp - logp
    return torch.exp(delta) - delta - 1.0


def _masked_mean(x: Tensor, mask: Tensor) -> Tensor:
    """Mean of ``x`` over ``mask`` (binary); 0 when the mask is empty. Masked entries may be NaN/inf."""
    mask = mask.bool()
    return torch.where(mask, x, 0.0).sum() / mask.sum().clamp(min=1)


def aggregate(
    per_token: Tensor,
    mask: Tensor,
    mode: Aggregation,
    *,
    max_completion_length: int | None = None,
    num_global_tokens: float | Tensor | None = None,
) -> Tensor:
    """Reduce ``per_token[B, T]`` over binary ``mask[B, T]`` to a scalar; modes in the module docstring."""
    if mode not in AGGREGATIONS:
        raise ValueError(f"mode must be one of {AGGREGATIONS}, got {mode!r}")
    mask = mask.bool()
    masked = torch.where(mask, per_token, 0.0)  # [B, T]
    if mode == "grpo":
        per_row = masked.sum(-1) / mask.sum(-1).clamp(min=1)  # [B]
        return per_row.mean()
    if mode == "bnpo":
        return masked.sum() / mask.sum().clamp(min=1)
    if mode == "dr_grpo":
        if max_completion_length is None or max_completion_length < 1:
            raise ValueError(
                f"max_completion_length (>= 1) is required for mode 'dr_grpo', got {max_completion_length}"
            )
        return masked.sum() / (per_token.shape[0] * max_completion_length)
    if num_global_tokens is None:
        return masked.sum() / mask.sum().clamp(min=1)
    if isinstance(num_global_tokens, Tensor):
        return masked.sum() / num_global_tokens.to(masked.dtype).clamp(min=1)
    if num_global_tokens < 0:
        raise ValueError(f"num_global_tokens must be >= 0, got {num_global_tokens}")
    return masked.sum() / max(float(num_global_tokens), 1.0)


def grpo_policy_loss(
    logp: Tensor,
    advantages: Tensor,
    mask: Tensor,
    *,
    old_logp: Tensor | None = None,
    ref_logp: Tensor | None = None,
    beta: float = 0.0,
    eps_low: float = 0.2,
    eps_high: float = 0.2,
    aggregation: Aggregation = "grpo",
    max_completion_length: int | None = None,
    num_global_tokens: float | Tensor | None = None,
    entropy: Tensor | None = None,
    entropy_coef: float = 0.0,
) -> tuple[Tensor, dict[str, Tensor]]:
    """Clipped GRPO surrogate over ``logp[B, T]`` with ``advantages[B]`` (or per-token ``[B, T]``).

    ratio = exp(logp - old_logp); ``old_logp=None`` means one policy update per rollout (mu = 1): the ratio is
    1 but its gradient is that of logp. Per token:
    ``-min(ratio * A, clip(ratio, 1 - eps_low, 1 + eps_high) * A) + beta * k3(logp, ref) - entropy_coef * H``,
    then ``aggregate(..., aggregation)``. ``beta > 0`` requires ``ref_logp``; ``entropy_coef != 0`` requires
    ``entropy``. Metrics (masked token means, 0 on an empty mask): ``loss``, ``clip_frac_low`` (ratio <
    1 - eps_low with A < 0), ``clip_frac_high`` (ratio > 1 + eps_high with A > 0), ``clip_frac`` (either),
    ``kl`` (when ``ref_logp`` is given, even with beta = 0), ``entropy`` (when given).
    Kept as one long function so the objective reads term by term in one place.
    """
    if aggregation not in AGGREGATIONS:
        raise ValueError(f"aggregation must be one of {AGGREGATIONS}, got {aggregation!r}")
    if eps_low < 0 or eps_high < 0:
        raise ValueError(f"eps_low and eps_high must be >= 0, got eps_low={eps_low}, eps_high={eps_high}")
    if beta < 0:
        raise ValueError(f"beta must be >= 0, got {beta}")
    if beta > 0 and ref_logp is None:
        raise ValueError("beta > 0 requires ref_logp")
    if entropy_coef != 0 and entropy is None:
        raise ValueError("entropy_coef != 0 requires entropy")
    adv = advantages[:, None] if advantages.dim() == 1 else advantages  # [B, 1] or [B, T]
    old = logp.detach() if old_logp is None else old_logp  # [B, T]
    ratio = torch.exp(logp - old)  # [B, T]
    clipped = torch.clamp(ratio, 1.0 - eps_low, 1.0 + eps_high)  # [B, T]
    per_token = -torch.min(ratio * adv, clipped * adv)  # [B, T]
    metrics: dict[str, Tensor] = {}
    if ref_logp is not None:
        k3 = kl_k3(logp, ref_logp)  # [B, T]
        if beta > 0:
            per_token = per_token + beta * k3
        metrics["kl"] = _masked_mean(k3.detach(), mask)
    if entropy is not None:
        if entropy_coef != 0:
            per_token = per_token - entropy_coef * entropy
        metrics["entropy"] = _masked_mean(entropy.detach(), mask)
    loss = aggregate(
        per_token,
        mask,
        aggregation,
        max_completion_length=max_completion_length,
        num_global_tokens=num_global_tokens,
    )
    ratio_d, adv_b = ratio.detach(), adv.expand_as(ratio)
    low = (ratio_d < 1.0 - eps_low) & (adv_b < 0)
    high = (ratio_d > 1.0 + eps_high) & (adv_b > 0)
    metrics["clip_frac_low"] = _masked_mean(low.float(), mask)
    metrics["clip_frac_high"] = _masked_mean(high.float(), mask)
    metrics["clip_frac"] = _masked_mean((low | high).float(), mask)
    metrics["loss"] = loss.detach()
    return loss, metrics
