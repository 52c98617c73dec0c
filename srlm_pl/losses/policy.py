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
ImportanceLevel = Literal["token", "sequence"]
IMPORTANCE_LEVELS: tuple[str, ...] = ("token", "sequence")


def kl_k3(logp: Tensor, ref_logp: Tensor) -> Tensor:
    """Schulman's k3 estimator per token: exp(ref - logp) - (ref - logp) - 1 (>= 0, unbiased for KL)."""
    delta = ref_logp - logp
    return torch.exp(delta) - delta - 1.0


def kl_k2(logp: Tensor, other_logp: Tensor) -> Tensor:
    """The k2 estimator per token: ``0.5 * (logp - other_logp) ** 2`` on tokens sampled from the policy.

    Its value estimates KL(pi || other) to second order; on tokens sampled from pi itself, its gradient with the
    samples held fixed, ``(logp - other_logp) * grad logp``, is an unbiased estimate of the gradient of the
    per-token reverse KL KL(pi || other) given the prefix (the score-function term has mean 0); k3's gradient
    estimates the forward KL's instead (Tang & Munos, 2025, "On a few pitfalls in KL divergence gradient
    estimation for RL"). Samples from an older policy (mu > 1, later minibatches) carry no importance weight
    here. KDRL (Xu et al., 2025) uses k2 for the reverse KL to a teacher inside GRPO.
    """
    return 0.5 * (logp - other_logp) ** 2


def importance_log_ratio(logp: Tensor, old_logp: Tensor, mask: Tensor, level: ImportanceLevel = "token") -> Tensor:
    """log of the importance ratio: per token ``[B, T]``, or per sequence ``[B, 1]``.

    ``sequence`` is GSPO's (Zheng et al., 2025, "Group Sequence Policy Optimization"): the length-normalised
    sequence ratio ``s_i = exp(mean over the completion's tokens of (logp - old_logp))``, the same for every
    token of the sequence and clipped as one number (TRL ``importance_sampling_level="sequence"``, verl
    ``policy_loss.loss_mode: gspo``). A sequence with one token has the token-level ratio.
    """
    if level not in IMPORTANCE_LEVELS:
        raise ValueError(f"importance_sampling_level must be one of {IMPORTANCE_LEVELS}, got {level!r}")
    log_ratio = logp - old_logp  # [B, T]
    if level == "token":
        return log_ratio
    mask = mask.bool()
    return torch.where(mask, log_ratio, 0.0).sum(-1, keepdim=True) / mask.sum(-1, keepdim=True).clamp(min=1)


def entropy_threshold(entropies: Tensor, quantile: float) -> Tensor:
    """The entropy above which a token is among the top ``quantile`` fraction of ``entropies`` (1-D, the
    completion tokens that count; NaN entries, e.g. padding from a gather, are ignored): their ``1 - quantile``
    quantile, linearly interpolated as ``torch.quantile`` does, by sorting (``torch.quantile`` refuses more than
    2**24 values)."""
    if not 0.0 < quantile <= 1.0:
        raise ValueError(f"top_entropy_quantile must be in (0, 1], got {quantile}")
    values = entropies.detach().float().flatten()
    values = values[~torch.isnan(values)].sort().values
    if values.numel() == 0:
        return torch.zeros((), dtype=torch.float32, device=entropies.device)
    position = (1.0 - quantile) * (values.numel() - 1)
    low = int(position)
    high = min(low + 1, values.numel() - 1)
    return values[low] + (position - low) * (values[high] - values[low])


def entropy_quantile_mask(entropy: Tensor, mask: Tensor, quantile: float, *,
                          threshold: Tensor | None = None) -> Tensor:
    """bool ``[B, T]``: the masked tokens whose entropy is at least the ``1 - quantile`` quantile of the masked
    tokens' entropies, i.e. the top ``quantile`` fraction, the high-entropy "forking" tokens (Wang et al., 2025,
    "Beyond the 80/20 Rule"; TRL ``top_entropy_quantile``). ``quantile = 1`` keeps every masked token. Pass a
    ``threshold`` computed over a larger set (all ranks) to share it; ties at the threshold are kept."""
    keep = mask.bool()
    if threshold is None:
        threshold = entropy_threshold(entropy[keep], quantile)
    elif not 0.0 < quantile <= 1.0:
        raise ValueError(f"top_entropy_quantile must be in (0, 1], got {quantile}")
    if quantile == 1.0:
        return keep
    return keep & (entropy.detach() >= threshold)


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


def _check_policy_args(aggregation: str, eps_low: float, eps_high: float, beta: float, ref_logp: Tensor | None,
                       entropy_coef: float, entropy: Tensor | None, teacher_kl_coef: float,
                       teacher_logp: Tensor | None) -> None:
    if aggregation not in AGGREGATIONS:
        raise ValueError(f"aggregation must be one of {AGGREGATIONS}, got {aggregation!r}")
    if eps_low < 0 or eps_high < 0:
        raise ValueError(f"eps_low and eps_high must be >= 0, got eps_low={eps_low}, eps_high={eps_high}")
    if beta < 0 or teacher_kl_coef < 0:
        raise ValueError(f"beta and teacher_kl_coef must be >= 0, got {beta} and {teacher_kl_coef}")
    if beta > 0 and ref_logp is None:
        raise ValueError("beta > 0 requires ref_logp")
    if teacher_kl_coef > 0 and teacher_logp is None:
        raise ValueError("teacher_kl_coef > 0 requires teacher_logp")
    if entropy_coef != 0 and entropy is None:
        raise ValueError("entropy_coef != 0 requires entropy")


def truncated_is(train_logp: Tensor, sampler_logp: Tensor, mask: Tensor,
                 cap: float | None) -> tuple[Tensor, dict[str, Tensor]]:
    """Truncated importance sampling for a sampler whose log-probs differ from the training forward's (another
    engine, other kernels, bf16): per-token weight ``min(exp(train_logp - sampler_logp), cap)`` (detached; 1 with
    ``cap=None``), as TRL's and verl's TIS. ``train_logp`` are the training log-probs at sampling time (GRPO's old
    log-probs). Metrics over ``mask``: ``logprob_diff_mean`` / ``logprob_diff_max`` of ``|train - sampler|``,
    ``tis_weight_mean`` and ``tis_capped_frac`` (tokens whose weight hit the cap)."""
    diff = (train_logp.detach() - sampler_logp).float()  # [B, T]
    valid = mask.bool()
    weight = torch.exp(diff) if cap is not None else torch.ones_like(diff)
    capped = weight > cap if cap is not None else torch.zeros_like(valid)
    weight = weight.clamp(max=cap) if cap is not None else weight
    abs_diff = diff.abs().masked_fill(~valid, 0.0)
    metrics = {"logprob_diff_mean": _masked_mean(abs_diff, mask),
               "logprob_diff_max": abs_diff.max() if abs_diff.numel() else abs_diff.sum(),
               "tis_weight_mean": _masked_mean(weight, mask), "tis_capped_frac": _masked_mean(capped.float(), mask)}
    return weight.masked_fill(~valid, 0.0).to(train_logp.dtype), metrics


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
    importance_sampling_level: ImportanceLevel = "token",
    policy_mask: Tensor | None = None,
    teacher_logp: Tensor | None = None,
    teacher_kl_coef: float = 0.0,
    sampler_logp: Tensor | None = None,
    tis_cap: float | None = 2.0,
) -> tuple[Tensor, dict[str, Tensor]]:
    """Clipped GRPO surrogate over ``logp[B, T]`` with ``advantages[B]`` (or per-token ``[B, T]``).

    ratio = exp(``importance_log_ratio(logp, old_logp, mask, importance_sampling_level)``): per token, or GSPO's
    per-sequence ratio; ``old_logp=None`` means one policy update per rollout (mu = 1): the ratio is 1 but its
    gradient is that of logp. Per token:
    ``-min(ratio * A, clip(ratio, 1 - eps_low, 1 + eps_high) * A) * policy_mask + beta * k3(logp, ref)
    + teacher_kl_coef * k2(logp, teacher) - entropy_coef * H``, then ``aggregate(..., aggregation)`` over
    ``mask``. ``policy_mask`` (e.g. ``entropy_quantile_mask``) removes the policy term of the tokens it leaves
    out, which still count in the normaliser and keep their KL terms (as TRL's ``top_entropy_quantile``).
    ``beta > 0`` requires ``ref_logp``; ``teacher_kl_coef > 0`` requires ``teacher_logp`` (log-probs of the
    sampled tokens under a teacher: the reverse KL to it, see ``kl_k2``); ``entropy_coef != 0`` requires
    ``entropy``. Metrics (masked token means, 0 on an empty mask): ``loss``, ``clip_frac_low`` (ratio <
    1 - eps_low with A < 0), ``clip_frac_high`` (ratio > 1 + eps_high with A > 0), ``clip_frac`` (either),
    ``kl`` (k3, when ``ref_logp`` is given, even with beta = 0), ``teacher_kl`` (the k1 estimate
    ``logp - teacher_logp`` of KL(pi || teacher), when ``teacher_logp`` is given), ``entropy`` (when given),
    ``policy_token_frac`` (share of the masked tokens ``policy_mask`` keeps, when given). ``sampler_logp``: the
    sampling engine's log-probs of the tokens when it is not the training forward (vLLM); see ``truncated_is``.
    Kept as one long function so the objective reads term by term in one place.
    """
    _check_policy_args(aggregation, eps_low, eps_high, beta, ref_logp, entropy_coef, entropy, teacher_kl_coef,
                       teacher_logp)
    adv = advantages[:, None] if advantages.dim() == 1 else advantages  # [B, 1] or [B, T]
    old = logp.detach() if old_logp is None else old_logp  # [B, T]
    ratio = torch.exp(importance_log_ratio(logp, old, mask, importance_sampling_level))  # [B, T] or [B, 1]
    clipped = torch.clamp(ratio, 1.0 - eps_low, 1.0 + eps_high)
    per_token = -torch.min(ratio * adv, clipped * adv).expand_as(logp)  # [B, T]
    metrics: dict[str, Tensor] = {}
    if sampler_logp is not None:
        weight, metrics = truncated_is(old, sampler_logp, mask, tis_cap)
        per_token = per_token * weight
    if policy_mask is not None:
        per_token = per_token * policy_mask.to(per_token.dtype)
        metrics["policy_token_frac"] = _masked_mean(policy_mask.float(), mask)
    if ref_logp is not None:
        k3 = kl_k3(logp, ref_logp)  # [B, T]
        if beta > 0:
            per_token = per_token + beta * k3
        metrics["kl"] = _masked_mean(k3.detach(), mask)
    if teacher_logp is not None:
        if teacher_kl_coef > 0:
            per_token = per_token + teacher_kl_coef * kl_k2(logp, teacher_logp)
        metrics["teacher_kl"] = _masked_mean((logp - teacher_logp).detach(), mask)
    if entropy is not None:
        if entropy_coef != 0:
            per_token = per_token - entropy_coef * entropy
        metrics["entropy"] = _masked_mean(entropy.detach(), mask)
    loss = aggregate(per_token, mask, aggregation, max_completion_length=max_completion_length,
                     num_global_tokens=num_global_tokens)
    ratio_d, adv_b = ratio.detach().expand_as(logp), adv.expand_as(logp)
    low = (ratio_d < 1.0 - eps_low) & (adv_b < 0)
    high = (ratio_d > 1.0 + eps_high) & (adv_b > 0)
    metrics["clip_frac_low"] = _masked_mean(low.float(), mask)
    metrics["clip_frac_high"] = _masked_mean(high.float(), mask)
    metrics["clip_frac"] = _masked_mean((low | high).float(), mask)
    metrics["loss"] = loss.detach()
    return loss, metrics
