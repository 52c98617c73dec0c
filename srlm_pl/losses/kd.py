"""Knowledge-distillation divergences (float32, per token) and the chunked KD loss.

``generalized_jsd`` follows the GKD paper (Agarwal et al., 2024) exactly as TRL's
``GKDTrainer.generalized_jsd_loss`` implements it. With student ``S`` and teacher ``T`` (tempered softmaxes):
``beta = 0`` is the forward KL(T || S), ``beta = 1`` the reverse KL(S || T), and for ``0 < beta < 1`` the
mixture is ``M = beta * T + (1 - beta) * S`` (TRL: ``logsumexp([log S + log(1 - beta), log T + log(beta)])``)
and the divergence is ``beta * KL(T || M) + (1 - beta) * KL(S || M)``. Like TRL, the endpoints are
special-cased: the mixture formula tends to 0 (not to a KL) as beta -> 0 or 1. Unlike TRL we multiply by
``temperature ** 2`` (Hinton et al., 2015) so gradient magnitudes do not shrink as the temperature grows.
``chunked_kd_loss`` returns ``alpha * CE + (1 - alpha) * KD`` (token means): ``alpha`` is the weight of the
hard-label cross-entropy (computed at temperature 1), so ``alpha = 0`` is pure distillation.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

from .chunked import Head, check_chunk, check_positive, check_unit, head_logits, maybe_checkpoint


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
        s_logits = head_logits(student_head, s_h, vocab_size)  # [n, V]
        with torch.no_grad():
            t_logits = head_logits(teacher_head, t_h.detach(), vocab_size)  # [n, V]
        kd = generalized_jsd(s_logits, t_logits, beta=beta, temperature=temperature)  # [n]
        kd_sum = torch.where(t != ignore_index, kd, 0.0).sum()
        ce_sum = F.cross_entropy(s_logits, t, ignore_index=ignore_index, reduction="sum")
        return kd_sum, ce_sum

    kd_sum = torch.zeros((), dtype=torch.float32, device=student_hidden.device)
    ce_sum = torch.zeros((), dtype=torch.float32, device=student_hidden.device)
    for lo in range(0, targets.shape[0], chunk_size):
        sl = slice(lo, lo + chunk_size)
        kd_c, ce_c = maybe_checkpoint(chunk_losses, student_hidden[sl], teacher_hidden[sl], targets[sl])
        kd_sum, ce_sum = kd_sum + kd_c, ce_sum + ce_c
    n_tokens = (targets != ignore_index).sum()
    denom = n_tokens.clamp(min=1).float()
    kd_mean, ce_mean = kd_sum / denom, ce_sum / denom
    loss = alpha * ce_mean + (1.0 - alpha) * kd_mean
    metrics = {"loss": loss, "kd": kd_mean, "ce": ce_mean, "kd_sum": kd_sum, "ce_sum": ce_sum}
    metrics = {k: v.detach() for k, v in metrics.items()}
    metrics["n_tokens"] = n_tokens.detach()
    return loss, metrics
