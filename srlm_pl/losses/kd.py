"""Knowledge-distillation divergences (float32, per token) and the chunked KD loss.

``generalized_jsd`` follows the GKD paper (Agarwal et al., 2024) exactly as TRL's
``GKDTrainer.generalized_jsd_loss`` implements it. With student ``S`` and teacher ``T`` (tempered softmaxes):
``beta = 0`` is the forward KL(T || S), ``beta = 1`` the reverse KL(S || T), and for ``0 < beta < 1`` the
mixture is ``M = beta * T + (1 - beta) * S`` (TRL: ``logsumexp([log S + log(1 - beta), log T + log(beta)])``)
and the divergence is ``beta * KL(T || M) + (1 - beta) * KL(S || M)``. Like TRL, the endpoints are
special-cased: the mixture formula tends to 0 (not to a KL) as beta -> 0 or 1. Unlike TRL we multiply by
``temperature ** 2`` (Hinton et al., 2015) so gradient magnitudes do not shrink as the temperature grows.

``skew_kl`` / ``skew_rkl`` are DistiLLM's skew divergences (Ko et al., 2024, "DistiLLM: Towards Streamlined
Distillation for Large Language Models", ICML; Eq. of the alpha-skew KLD and alpha-skew RKLD, with the
teacher ``p`` and the student ``q_theta``): ``D_SKL^(a)(p, q) = KL(p || a p + (1 - a) q)`` and
``D_SRKL^(a)(p, q) = KL(q || (1 - a) p + a q)``, i.e. here ``skew_kl = KL(T || a T + (1 - a) S)`` and
``skew_rkl = KL(S || a S + (1 - a) T)`` with ``a = skew_alpha`` (DistiLLM's default 0.1). ``skew_alpha = 0`` is the
plain forward / reverse KL; the mixture is at least ``a`` times the first argument, so both are bounded by
``-log(a)`` (finite even where the other distribution has no mass). We compute the KL itself (0 when S = T),
not the cross-entropy DistiLLM's code minimises, which differs from it by the teacher's entropy (a constant
for ``skew_kl``); tempered and scaled by ``temperature ** 2`` like ``generalized_jsd``. No TRL / verl option
matches them.

``chunked_kd_loss`` returns ``alpha * CE + (1 - alpha) * KD`` (token means): ``alpha`` is the weight of the
hard-label cross-entropy (computed at temperature 1), so ``alpha = 0`` is pure distillation; ``divergence``
picks the KD term (``jsd``, the default, uses ``beta``; ``skew_kl`` / ``skew_rkl`` use ``skew_alpha``).
"""

from __future__ import annotations

import math
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor

from .chunked import Head, check_chunk, check_positive, check_unit, head_logits, maybe_checkpoint

Divergence = Literal["jsd", "skew_kl", "skew_rkl"]
DIVERGENCES: tuple[str, ...] = ("jsd", "skew_kl", "skew_rkl")


def _kl(p_log: Tensor, q_log: Tensor) -> Tensor:
    """KL(p || q) over the last dim from log-probabilities; 0 * log 0 terms are exactly 0 (NaN-free grads)."""
    p = p_log.exp()
    return (p * (p_log - q_log).masked_fill(p == 0, 0.0)).sum(-1)


def check_divergence(divergence: str, skew_alpha: float) -> None:
    """``divergence`` is one of ``DIVERGENCES`` and ``skew_alpha`` is in [0, 1) (1 makes the skew terms 0)."""
    if divergence not in DIVERGENCES:
        raise ValueError(f"divergence must be one of {', '.join(DIVERGENCES)}, got {divergence!r}")
    if not 0.0 <= skew_alpha < 1.0:
        raise ValueError(f"skew_alpha must be in [0, 1) (1 makes the skew divergence identically 0), got {skew_alpha}")


def skew_kl_logprobs(p_log: Tensor, q_log: Tensor, skew_alpha: float) -> Tensor:
    """``KL(p || a p + (1 - a) q)`` over the last dim from log-probabilities (``a = skew_alpha``)."""
    if skew_alpha == 0.0:
        return _kl(p_log, q_log)
    m_log = torch.logaddexp(p_log + math.log(skew_alpha), q_log + math.log1p(-skew_alpha))
    return _kl(p_log, m_log)


def divergence_logprobs(s_log: Tensor, t_log: Tensor, *, divergence: Divergence = "jsd", beta: float = 0.5,
                        skew_alpha: float = 0.1) -> Tensor:
    """Per-row divergence of student / teacher log-probabilities ``[..., K]`` (any normalised buckets) -> ``[...]``."""
    if divergence == "skew_kl":
        return skew_kl_logprobs(t_log, s_log, skew_alpha)
    if divergence == "skew_rkl":
        return skew_kl_logprobs(s_log, t_log, skew_alpha)
    if beta == 0.0:
        return _kl(t_log, s_log)  # forward KL(T || S)
    if beta == 1.0:
        return _kl(s_log, t_log)  # reverse KL(S || T)
    m_log = torch.logaddexp(s_log + math.log1p(-beta), t_log + math.log(beta))  # M = beta*T + (1-beta)*S
    return beta * _kl(t_log, m_log) + (1.0 - beta) * _kl(s_log, m_log)


def _tempered(student_logits: Tensor, teacher_logits: Tensor, temperature: float) -> tuple[Tensor, Tensor]:
    check_positive("temperature", temperature)
    if student_logits.shape != teacher_logits.shape:
        raise ValueError(
            f"student_logits {tuple(student_logits.shape)} and teacher_logits {tuple(teacher_logits.shape)} "
            "differ; slice both to the tokenizer vocabulary (vocab_size)"
        )
    s_log = F.log_softmax(student_logits.float() / temperature, dim=-1)  # [..., V]
    t_log = F.log_softmax(teacher_logits.float() / temperature, dim=-1)  # [..., V]
    return s_log, t_log


def kd_divergence(student_logits: Tensor, teacher_logits: Tensor, *, divergence: Divergence = "jsd",
                  beta: float = 0.5, skew_alpha: float = 0.1, temperature: float = 1.0) -> Tensor:
    """Per-token KD divergence (module docstring) of ``[..., V]`` logits -> ``[...]``, tempered and x ``tau**2``."""
    check_unit("beta", beta)
    check_divergence(divergence, skew_alpha)
    s_log, t_log = _tempered(student_logits, teacher_logits, temperature)
    per_token = divergence_logprobs(s_log, t_log, divergence=divergence, beta=beta, skew_alpha=skew_alpha)
    return per_token * temperature**2  # [...]


def generalized_jsd(
    student_logits: Tensor, teacher_logits: Tensor, *, beta: float, temperature: float = 1.0
) -> Tensor:
    """Per-token generalized JSD (TRL/GKD convention, module docstring) of ``[..., V]`` logits -> ``[...]``.

    Both logits are divided by ``temperature`` before the float32 log-softmax; the result is multiplied by
    ``temperature ** 2``.
    """
    return kd_divergence(student_logits, teacher_logits, divergence="jsd", beta=beta, temperature=temperature)


def skew_kl(student_logits: Tensor, teacher_logits: Tensor, *, skew_alpha: float = 0.1,
            temperature: float = 1.0) -> Tensor:
    """Per-token DistiLLM skew KL ``KL(T || a T + (1 - a) S)`` of ``[..., V]`` logits (module docstring)."""
    return kd_divergence(student_logits, teacher_logits, divergence="skew_kl", skew_alpha=skew_alpha,
                         temperature=temperature)


def skew_rkl(student_logits: Tensor, teacher_logits: Tensor, *, skew_alpha: float = 0.1,
             temperature: float = 1.0) -> Tensor:
    """Per-token DistiLLM skew reverse KL ``KL(S || a S + (1 - a) T)`` of ``[..., V]`` logits (module docstring)."""
    return kd_divergence(student_logits, teacher_logits, divergence="skew_rkl", skew_alpha=skew_alpha,
                         temperature=temperature)


def check_kd_inputs(student_hidden: Tensor, teacher_hidden: Tensor, targets: Tensor, *, beta: float, alpha: float,
                    temperature: float, chunk_size: int, divergence: str = "jsd", skew_alpha: float = 0.1) -> None:
    """The argument checks of ``chunked_kd_loss`` (shared with its fused kernel's dispatch)."""
    check_chunk(chunk_size)
    check_unit("beta", beta)
    check_unit("alpha", alpha)
    check_positive("temperature", temperature)
    check_divergence(divergence, skew_alpha)
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
    divergence: Divergence = "jsd",
    skew_alpha: float = 0.1,
) -> tuple[Tensor, dict[str, Tensor]]:
    """``alpha * CE + (1 - alpha) * KD`` (token means) over gathered positions ``[N, H]``.

    ``KD`` is ``kd_divergence(divergence, beta, skew_alpha, temperature)``: the generalized JSD by default.
    ``alpha`` weighs the student's hard-label CE on ``targets`` (temperature 1); ``alpha = 0`` is pure KD.
    The teacher gets no gradient (its hidden rows are detached and its head runs under ``no_grad``). Per chunk
    both heads run inside one checkpoint, so backward recomputes the teacher logits too: one extra teacher
    head matmul buys O(chunk_size x V) peak memory instead of O(N x V).
    Metrics: ``loss``, ``kd``, ``ce`` (means), ``kd_sum``, ``ce_sum``, ``n_tokens`` for re-normalisation.
    This is the generic path; ``srlm_pl.ops.chunked_kd_loss`` sends a plain ``nn.Linear`` student head to the
    fused kernel instead (``jsd`` only).
    """
    check_kd_inputs(student_hidden, teacher_hidden, targets, beta=beta, alpha=alpha, temperature=temperature,
                    chunk_size=chunk_size, divergence=divergence, skew_alpha=skew_alpha)

    def chunk_losses(s_h: Tensor, t_h: Tensor, t: Tensor) -> tuple[Tensor, Tensor]:
        s_logits = head_logits(student_head, s_h, vocab_size)  # [n, V]
        with torch.no_grad():
            t_logits = head_logits(teacher_head, t_h.detach(), vocab_size)  # [n, V]
        kd = kd_divergence(s_logits, t_logits, divergence=divergence, beta=beta, skew_alpha=skew_alpha,
                           temperature=temperature)  # [n]
        kd_sum = torch.where(t != ignore_index, kd, 0.0).sum()
        ce_sum = F.cross_entropy(s_logits, t, ignore_index=ignore_index, reduction="sum")
        return kd_sum, ce_sum

    chunks = [maybe_checkpoint(chunk_losses, student_hidden[lo : lo + chunk_size], teacher_hidden[lo : lo + chunk_size],
                               targets[lo : lo + chunk_size]) for lo in range(0, targets.shape[0], chunk_size)]
    return kd_total(chunks, targets, alpha, ignore_index, student_hidden.device)


def kd_total(chunks: list[tuple[Tensor, Tensor]], targets: Tensor, alpha: float, ignore_index: int,
             device: torch.device) -> tuple[Tensor, dict[str, Tensor]]:
    """``alpha * CE + (1 - alpha) * KD`` token means and the metrics from per-chunk ``(kd_sum, ce_sum)``."""
    kd_sum = torch.zeros((), dtype=torch.float32, device=device)
    ce_sum = torch.zeros((), dtype=torch.float32, device=device)
    for kd_c, ce_c in chunks:
        kd_sum, ce_sum = kd_sum + kd_c, ce_sum + ce_c
    denom = (targets != ignore_index).sum().clamp(min=1).float()
    loss = alpha * ce_sum / denom + (1.0 - alpha) * kd_sum / denom
    return loss, kd_metrics(loss, kd_sum, ce_sum, targets, ignore_index)


def kd_metrics(loss: Tensor, kd_sum: Tensor, ce_sum: Tensor, targets: Tensor, ignore_index: int) -> dict[str, Tensor]:
    """The KD losses' metrics (detached): ``loss``, ``kd`` and ``ce`` token means, ``kd_sum``, ``ce_sum`` and
    ``n_tokens`` (targets != ``ignore_index``) for re-normalisation over processes."""
    n_tokens = (targets != ignore_index).sum()
    denom = n_tokens.clamp(min=1).float()
    metrics = {"loss": loss, "kd": kd_sum / denom, "ce": ce_sum / denom, "kd_sum": kd_sum, "ce_sum": ce_sum,
               "n_tokens": n_tokens}
    return {k: v.detach() for k, v in metrics.items()}
