"""Kernel or plain path: the LM-head losses every module calls.

Each function has the signature and the values of its namesake in ``srlm_pl.losses`` (the generic, chunked and
checkpointed path, which takes any head callable). A plain bias-free ``nn.Linear`` head under autograd goes to
the fused kernel instead (analytic backward, no recomputation, no ``[V, H]`` weight gradient for a frozen
head); ``SRLM_FUSED_CE=0`` sends every call down the generic path (benchmarks compare the two).
"""

from __future__ import annotations

from torch import Tensor

from srlm_pl import losses
from srlm_pl.losses import Head, kd, topk
from srlm_pl.losses.kd import Divergence
from srlm_pl.ops import fused_kd, fused_topk_kd, linear_ce, linear_logprob


def chunked_cross_entropy(hidden: Tensor, head: Head, targets: Tensor, *, chunk_size: int = 1024,
                          vocab_size: int | None = None, ignore_index: int = -100) -> tuple[Tensor, Tensor]:
    """Summed next-token NLL ``(loss_sum, n_tokens)``: see ``losses.chunked_cross_entropy``."""
    if linear_ce.applies(head):
        losses.check_chunk(chunk_size)
        return linear_ce.linear_cross_entropy(hidden, head, targets, chunk_size=chunk_size, vocab_size=vocab_size,
                                              ignore_index=ignore_index)
    return losses.chunked_cross_entropy(hidden, head, targets, chunk_size=chunk_size, vocab_size=vocab_size,
                                        ignore_index=ignore_index)


def chunked_token_logprobs(hidden: Tensor, head: Head, targets: Tensor, *, temperature: float = 1.0,
                           chunk_size: int = 1024, with_entropy: bool = False,
                           vocab_size: int | None = None) -> tuple[Tensor, Tensor | None]:
    """Per-token tempered log-probs (and entropies): see ``losses.chunked_token_logprobs``."""
    if linear_logprob.applies(head) and hidden.shape[0] > 0:
        losses.check_chunk(chunk_size)
        losses.check_positive("temperature", temperature)
        return linear_logprob.linear_token_logprobs(hidden, head, targets, temperature=temperature,
                                                    chunk_size=chunk_size, vocab_size=vocab_size,
                                                    with_entropy=with_entropy)
    return losses.chunked_token_logprobs(hidden, head, targets, temperature=temperature, chunk_size=chunk_size,
                                         with_entropy=with_entropy, vocab_size=vocab_size)


def chunked_kd_loss(student_hidden: Tensor, teacher_hidden: Tensor, student_head: Head, teacher_head: Head,
                    targets: Tensor, *, beta: float, temperature: float, alpha: float, chunk_size: int = 1024,
                    vocab_size: int | None = None, ignore_index: int = -100, divergence: Divergence = "jsd",
                    skew_alpha: float = 0.1) -> tuple[Tensor, dict[str, Tensor]]:
    """``alpha * CE + (1 - alpha) * KD`` and its metrics: see ``losses.chunked_kd_loss``. The fused kernel computes
    the generalized JSD only: ``divergence`` ``skew_kl`` / ``skew_rkl`` take the generic path."""
    kwargs = dict(beta=beta, temperature=temperature, alpha=alpha, chunk_size=chunk_size, vocab_size=vocab_size,
                  ignore_index=ignore_index)
    if divergence == "jsd" and fused_kd.applies(student_head):
        losses.check_kd_inputs(student_hidden, teacher_hidden, targets, beta=beta, alpha=alpha,
                               temperature=temperature, chunk_size=chunk_size)
        return fused_kd.fused_kd_loss(student_hidden, teacher_hidden, student_head, teacher_head, targets, **kwargs)
    return kd.chunked_kd_loss(student_hidden, teacher_hidden, student_head, teacher_head, targets, **kwargs,
                              divergence=divergence, skew_alpha=skew_alpha)


def chunked_topk_kd_loss(student_hidden: Tensor, student_head: Head, targets: Tensor, topk_ids: Tensor,
                         topk_logprobs: Tensor, tail_log: Tensor, *, alpha: float, temperature: float = 1.0,
                         divergence: Divergence = "jsd", beta: float = 0.0, skew_alpha: float = 0.1,
                         chunk_size: int = 1024, vocab_size: int | None = None,
                         ignore_index: int = -100) -> tuple[Tensor, dict[str, Tensor]]:
    """``alpha * CE + (1 - alpha) * top-k KD`` and its metrics: see ``losses.topk.chunked_topk_kd_loss``."""
    kwargs = dict(alpha=alpha, temperature=temperature, divergence=divergence, beta=beta, skew_alpha=skew_alpha,
                  chunk_size=chunk_size, vocab_size=vocab_size, ignore_index=ignore_index)
    if fused_topk_kd.applies(student_head) and targets.shape[0] > 0:
        topk.check_topk_inputs(student_hidden, targets, topk_ids, topk_logprobs, tail_log, alpha=alpha, beta=beta,
                               temperature=temperature, divergence=divergence, skew_alpha=skew_alpha,
                               chunk_size=chunk_size)
        return fused_topk_kd.fused_topk_kd_loss(student_hidden, student_head, targets, topk_ids, topk_logprobs,
                                                tail_log, **kwargs)
    return topk.chunked_topk_kd_loss(student_hidden, student_head, targets, topk_ids, topk_logprobs, tail_log, **kwargs)
