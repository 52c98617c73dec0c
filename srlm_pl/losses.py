"""Pure tensor losses for SFT, knowledge distillation and GRPO (no Lightning, no optimizer code).

Conventions
-----------
* Positions are gathered by the caller: ``hidden[N, H]`` / ``logits[N, V]`` hold only the positions that
  count, in next-token order: ``hidden[b, t]`` predicts ``input_ids[b, t + 1]``, so a caller with a loss mask
  ``m[B, T]`` over the *target* tokens passes ``hidden[:, :-1][m[:, 1:]]`` and ``input_ids[:, 1:][m[:, 1:]]``.
  Targets equal to ``ignore_index`` (-100) are also skipped by the CE / KD helpers.
* All log-softmax / divergence arithmetic is float32, whatever the logits dtype.
* Chunked LM-head helpers run ``head`` on ``chunk_size`` positions at a time inside
  ``torch.utils.checkpoint`` (non-reentrant), so neither forward nor backward ever holds more than one chunk
  of full-vocabulary logits: backward recomputes a chunk's logits from its hidden rows. ``vocab_size`` slices
  logits to the tokenizer length (embedding rows past it are padding, e.g. Qwen2.5 151,936 rows vs 151,665
  tokens); it also lets teacher and student heads of different padded widths be compared.

Knowledge distillation
----------------------
``generalized_jsd`` follows the GKD paper (Agarwal et al., 2024) exactly as TRL's
``GKDTrainer.generalized_jsd_loss`` implements it. With student ``S`` and teacher ``T`` (tempered softmaxes):
``beta = 0`` is the forward KL(T || S), ``beta = 1`` the reverse KL(S || T), and for ``0 < beta < 1`` the
mixture is ``M = beta * T + (1 - beta) * S`` (TRL: ``logsumexp([log S + log(1 - beta), log T + log(beta)])``)
and the divergence is ``beta * KL(T || M) + (1 - beta) * KL(S || M)``. Like TRL, the endpoints are
special-cased: the mixture formula tends to 0 (not to a KL) as beta -> 0 or 1. Unlike TRL we multiply by
``temperature ** 2`` (Hinton et al., 2015) so gradient magnitudes do not shrink as the temperature grows.
``chunked_kd_loss`` returns ``alpha * CE + (1 - alpha) * KD`` (token means): ``alpha`` is the weight of the
hard-label cross-entropy (computed at temperature 1), so ``alpha = 0`` is pure distillation.

GRPO
----
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

import math
from collections.abc import Callable
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.utils.checkpoint import checkpoint

Head = Callable[[Tensor], Tensor]
Aggregation = Literal["grpo", "bnpo", "dr_grpo", "dapo"]
AGGREGATIONS: tuple[str, ...] = ("grpo", "bnpo", "dr_grpo", "dapo")
# float32 elements per chunk in selective_log_softmax when no chunk size is given (256 MiB).
_DEFAULT_CHUNK_ELEMENTS = 1 << 26


def check_positive(name: str, value: float) -> None:
    if not value > 0:
        raise ValueError(f"{name} must be > 0, got {value}")


def check_unit(name: str, value: float) -> None:
    if not 0.0 <= value <= 1.0:
        raise ValueError(f"{name} must be in [0, 1], got {value}")


def check_chunk(chunk_size: int) -> None:
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")


def _maybe_checkpoint(fn: Callable, *args: Tensor):
    """Run ``fn`` under non-reentrant activation checkpointing when autograd is recording."""
    if torch.is_grad_enabled():
        return checkpoint(fn, *args, use_reentrant=False)
    return fn(*args)


def _head_logits(head: Head, hidden: Tensor, vocab_size: int | None) -> Tensor:
    logits = head(hidden)  # [n, V_head]
    if vocab_size is not None:
        logits = logits[..., :vocab_size]
    return logits.float()  # [n, V]


def _row_logp(rows: Tensor, targets: Tensor) -> Tensor:
    rows = rows.float()  # [n, V]
    return rows.gather(-1, targets[:, None]).squeeze(-1) - torch.logsumexp(rows, dim=-1)  # [n]


def selective_log_softmax(logits: Tensor, targets: Tensor, *, chunk_size: int | None = None) -> Tensor:
    """log p(target) for ``logits[..., V]`` and ``targets[...]``; float32 output of shape ``targets.shape``.

    Rows are processed ``chunk_size`` at a time (default: ~2**26 elements per chunk) with the logsumexp trick,
    so at most one chunk is up-cast to float32; with autograd each chunk is checkpointed, so backward does not
    keep float32 copies either.
    """
    vocab = logits.shape[-1]
    flat, flat_t = logits.reshape(-1, vocab), targets.reshape(-1)  # [R, V], [R]
    if flat.shape[0] == 0:
        return torch.zeros(targets.shape, dtype=torch.float32, device=logits.device)
    rows = chunk_size if chunk_size is not None else max(1, _DEFAULT_CHUNK_ELEMENTS // vocab)
    check_chunk(rows)
    out = [
        _maybe_checkpoint(_row_logp, flat[lo : lo + rows], flat_t[lo : lo + rows])
        for lo in range(0, flat.shape[0], rows)
    ]
    return torch.cat(out).reshape(targets.shape)


def chunked_cross_entropy(
    hidden: Tensor,
    head: Head,
    targets: Tensor,
    *,
    chunk_size: int = 1024,
    vocab_size: int | None = None,
    ignore_index: int = -100,
) -> tuple[Tensor, Tensor]:
    """Summed next-token NLL of ``head(hidden[N, H])`` against ``targets[N]`` -> ``(loss_sum, n_tokens)``.

    ``loss_sum`` is a float32 scalar (sum, not mean, so callers normalise over accumulation / ranks);
    ``n_tokens`` counts targets != ``ignore_index``. This is the generic path (any head callable);
    ``srlm_pl.ops.chunked_cross_entropy`` sends a plain ``nn.Linear`` head to the fused kernel instead.
    """
    check_chunk(chunk_size)

    def chunk_nll(h: Tensor, t: Tensor) -> Tensor:
        logits = _head_logits(head, h, vocab_size)  # [n, V]
        return F.cross_entropy(logits, t, ignore_index=ignore_index, reduction="sum")

    total = torch.zeros((), dtype=torch.float32, device=hidden.device)
    for lo in range(0, hidden.shape[0], chunk_size):
        sl = slice(lo, lo + chunk_size)
        total = total + _maybe_checkpoint(chunk_nll, hidden[sl], targets[sl])
    return total, (targets != ignore_index).sum()


def chunked_token_logprobs(
    hidden: Tensor,
    head: Head,
    targets: Tensor,
    *,
    temperature: float = 1.0,
    chunk_size: int = 1024,
    with_entropy: bool = False,
    vocab_size: int | None = None,
) -> tuple[Tensor, Tensor | None]:
    """Per-token ``log softmax(head(hidden) / temperature)[target]`` -> ``(logp[N], entropy[N] | None)``.

    The entropy (of the same tempered distribution, in nats) keeps its graph so it can serve as a bonus term.
    Every target must be a valid token id (pad ids are fine: mask them later). This is the generic path;
    ``srlm_pl.ops.chunked_token_logprobs`` sends a plain ``nn.Linear`` head to the fused kernel instead.
    """
    check_chunk(chunk_size)
    check_positive("temperature", temperature)

    def chunk_logp(h: Tensor, t: Tensor) -> Tensor | tuple[Tensor, Tensor]:
        logp_all = (_head_logits(head, h, vocab_size) / temperature).log_softmax(-1)  # [n, V]
        logp = logp_all.gather(-1, t[:, None]).squeeze(-1)  # [n]
        if not with_entropy:
            return logp
        return logp, -(logp_all.exp() * logp_all).sum(-1)

    logps, ents = [], []
    for lo in range(0, hidden.shape[0], chunk_size):
        out = _maybe_checkpoint(chunk_logp, hidden[lo : lo + chunk_size], targets[lo : lo + chunk_size])
        if with_entropy:
            logps.append(out[0])
            ents.append(out[1])
        else:
            logps.append(out)
    if not logps:
        empty = torch.zeros(0, dtype=torch.float32, device=hidden.device)
        return empty, (empty.clone() if with_entropy else None)
    return torch.cat(logps), (torch.cat(ents) if with_entropy else None)


def _kl(p_log: Tensor, q_log: Tensor) -> Tensor:
    """KL(p || q) over the last dim from log-probabilities; 0 * log 0 terms are exactly 0 (NaN-free grads)."""
    p = p_log.exp()
    return (p * (p_log - q_log).masked_fill(p == 0, 0.0)).sum(-1)


def generalized_jsd(
    student_logits: Tensor, teacher_logits: Tensor, *, beta: float, temperature: float = 1.0
) -> Tensor:
    """Per-token generalized JSD (TRL/GKD convention, module docstring) of ``[..., V]`` logits -> ``[...]``.

    Both logits are divided by ``temperature`` before the float32 log-softmax; the result is multiplied by
    ``temperature ** 2``.
    """
    check_unit("beta", beta)
    check_positive("temperature", temperature)
    if student_logits.shape != teacher_logits.shape:
        raise ValueError(
            f"student_logits {tuple(student_logits.shape)} and teacher_logits {tuple(teacher_logits.shape)} "
            "differ; slice both to the tokenizer vocabulary (vocab_size)"
        )
    s_log = F.log_softmax(student_logits.float() / temperature, dim=-1)  # [..., V]
    t_log = F.log_softmax(teacher_logits.float() / temperature, dim=-1)  # [..., V]
    if beta == 0.0:
        per_token = _kl(t_log, s_log)  # forward KL(T || S)
    elif beta == 1.0:
        per_token = _kl(s_log, t_log)  # reverse KL(S || T)
    else:
        m_log = torch.logaddexp(s_log + math.log1p(-beta), t_log + math.log(beta))  # M = beta*T + (1-beta)*S
        per_token = beta * _kl(t_log, m_log) + (1.0 - beta) * _kl(s_log, m_log)
    return per_token * temperature**2  # [...]


def check_kd_inputs(student_hidden: Tensor, teacher_hidden: Tensor, targets: Tensor, *, beta: float, alpha: float,
                    temperature: float, chunk_size: int) -> None:
    """The argument checks of ``chunked_kd_loss`` (shared with its fused kernel's dispatch)."""
    check_chunk(chunk_size)
    check_unit("beta", beta)
    check_unit("alpha", alpha)
    check_positive("temperature", temperature)
    if student_hidden.shape[0] != teacher_hidden.shape[0] or student_hidden.shape[0] != targets.shape[0]:
        raise ValueError("student_hidden, teacher_hidden and targets must have the same number of rows N")


def chunked_kd_loss(
    student_hidden: Tensor,
    teacher_hidden: Tensor,
    student_head: Head,
    teacher_head: Head,
    targets: Tensor,
    *,
    beta: float,
    temperature: float,
    alpha: float,
    chunk_size: int = 1024,
    vocab_size: int | None = None,
    ignore_index: int = -100,
) -> tuple[Tensor, dict[str, Tensor]]:
    """``alpha * CE + (1 - alpha) * generalized_jsd`` (token means) over gathered positions ``[N, H]``.

    ``alpha`` weighs the student's hard-label CE on ``targets`` (temperature 1); ``alpha = 0`` is pure KD.
    The teacher gets no gradient (its hidden rows are detached and its head runs under ``no_grad``). Per chunk
    both heads run inside one checkpoint, so backward recomputes the teacher logits too: one extra teacher
    head matmul buys O(chunk_size x V) peak memory instead of O(N x V).
    Metrics: ``loss``, ``kd``, ``ce`` (means), ``kd_sum``, ``ce_sum``, ``n_tokens`` for re-normalisation.
    This is the generic path; ``srlm_pl.ops.chunked_kd_loss`` sends a plain ``nn.Linear`` student head to the
    fused kernel instead.
    """
    check_kd_inputs(student_hidden, teacher_hidden, targets, beta=beta, alpha=alpha, temperature=temperature,
                    chunk_size=chunk_size)
    def chunk_losses(s_h: Tensor, t_h: Tensor, t: Tensor) -> tuple[Tensor, Tensor]:
        s_logits = _head_logits(student_head, s_h, vocab_size)  # [n, V]
        with torch.no_grad():
            t_logits = _head_logits(teacher_head, t_h.detach(), vocab_size)  # [n, V]
        kd = generalized_jsd(s_logits, t_logits, beta=beta, temperature=temperature)  # [n]
        kd_sum = torch.where(t != ignore_index, kd, 0.0).sum()
        ce_sum = F.cross_entropy(s_logits, t, ignore_index=ignore_index, reduction="sum")
        return kd_sum, ce_sum

    kd_sum = torch.zeros((), dtype=torch.float32, device=student_hidden.device)
    ce_sum = torch.zeros((), dtype=torch.float32, device=student_hidden.device)
    for lo in range(0, targets.shape[0], chunk_size):
        sl = slice(lo, lo + chunk_size)
        kd_c, ce_c = _maybe_checkpoint(chunk_losses, student_hidden[sl], teacher_hidden[sl], targets[sl])
        kd_sum, ce_sum = kd_sum + kd_c, ce_sum + ce_c
    n_tokens = (targets != ignore_index).sum()
    denom = n_tokens.clamp(min=1).float()
    kd_mean, ce_mean = kd_sum / denom, ce_sum / denom
    loss = alpha * ce_mean + (1.0 - alpha) * kd_mean
    metrics = {"loss": loss, "kd": kd_mean, "ce": ce_mean, "kd_sum": kd_sum, "ce_sum": ce_sum}
    metrics = {k: v.detach() for k, v in metrics.items()}
    metrics["n_tokens"] = n_tokens.detach()
    return loss, metrics


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
