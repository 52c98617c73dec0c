"""Top-k KD with the teacher's tail as one extra bucket (offline teacher logits; ``srlm_pl.kd.topk_store``).

The teacher is known only through its top-k token ids ``I`` and log-probabilities ``log t_i`` per position, plus
the log of its tail mass ``log t_tail``, ``t_tail = 1 - sum_i t_i`` (the probability of every other token,
measured as a log-sum-exp when the store was written, so a tail far below float32's smallest number is kept).
The student's tempered distribution ``s = softmax(z / tau)`` is projected onto the same ``k + 1``
buckets: ``s_i`` at the teacher's ids and ``s_tail = 1 - sum_i s_i`` (computed as the logsumexp of the logits
outside ``I``, so it is exact even when it is tiny). The divergence (``divergence_logprobs``: forward KL with
``jsd`` and ``beta = 0``, the generalized JSD, or DistiLLM's ``skew_kl`` / ``skew_rkl``) is taken between these two
``(k + 1)``-bucket distributions, times ``tau ** 2``. The teacher's top-k is NOT renormalised: the tail bucket
keeps the student from moving mass out of (or into) the teacher's tail unpunished, and with ``k = V`` the loss
is the full-vocabulary divergence. The forward KL over the buckets is a lower bound of the full forward KL
(grouping the tail tokens can only lose information, by the log-sum inequality).

Sources: the tail as one bucket is the tail token of TA-OPD (Tail-Aware Top-k On-Policy Distillation,
arXiv 2608.14728: reverse KL over the top-k plus a tail token, against the renormalised top-k it replaces) and
the ``other_bucket`` truncation of a MaxText KD fork (TaiMingLu/maxtext-with-distillation,
``kd_truncation_strategy: other_bucket`` vs ``renormalize``). verl's top-k distillation
(``distillation.distillation_loss.loss_mode: forward_kl_topk`` with ``topk: K``) sums the forward-KL terms over
the teacher's top-k only, without the tail term; ``jsd`` with ``beta = 0`` here is that sum plus
``t_tail * log(t_tail / s_tail)``.

The teacher's log-probs are taken as given: they were computed at the store's temperature (a stored top-k
cannot be re-tempered, since the tail's logits are gone), so only the student is divided by ``temperature``;
callers check that the two temperatures agree. Same conventions as ``chunked_kd_loss`` (gathered positions,
float32, chunks of ``chunk_size`` positions under activation checkpointing, ``alpha`` x CE on the labels).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

from .chunked import Head, check_chunk, check_positive, check_unit, head_logits, maybe_checkpoint
from .kd import Divergence, check_divergence, divergence_logprobs, kd_total


def teacher_buckets(topk_logprobs: Tensor, tail_log: Tensor) -> Tensor:
    """The teacher's ``k + 1`` bucket log-probs ``[n, k+1]``: its top-k log-probs and the tail's log-mass."""
    return torch.cat([topk_logprobs.float(), tail_log.float()[:, None]], dim=-1)


def student_buckets(student_logits: Tensor, topk_ids: Tensor, temperature: float) -> Tensor:
    """The student's tempered log-probs at ``topk_ids`` and of everything else (the tail): ``[n, k+1]``."""
    z = student_logits.float() / temperature  # [n, V]
    lse = torch.logsumexp(z, dim=-1, keepdim=True)  # [n, 1]
    at_ids = z.gather(-1, topk_ids) - lse  # [n, k]
    if topk_ids.shape[-1] >= z.shape[-1]:  # k = V: no tail (an all -inf logsumexp would give NaN gradients)
        tail_log = torch.full_like(lse, -torch.inf)  # (and topk_kd_divergence drops the bucket)
    else:
        tail_log = torch.logsumexp(z.scatter(-1, topk_ids, -torch.inf), dim=-1, keepdim=True) - lse  # [n, 1]
    return torch.cat([at_ids, tail_log], dim=-1)


def topk_kd_divergence(student_logits: Tensor, topk_ids: Tensor, topk_logprobs: Tensor, tail_log: Tensor, *,
                       divergence: Divergence = "jsd", beta: float = 0.0, skew_alpha: float = 0.1,
                       temperature: float = 1.0) -> Tensor:
    """Per-token divergence over the ``k + 1`` buckets (module docstring) -> ``[n]``, times ``temperature ** 2``.

    ``student_logits [n, V]``; ``topk_ids [n, k]`` (distinct ids < V); ``topk_logprobs [n, k]`` and
    ``tail_log [n]`` (log of the tail mass) describe the teacher. ``beta = 0`` (the default here) is the forward KL.
    """
    check_unit("beta", beta)
    check_positive("temperature", temperature)
    check_divergence(divergence, skew_alpha)
    if topk_ids.shape != topk_logprobs.shape or topk_ids.shape[:-1] != student_logits.shape[:-1]:
        raise ValueError(f"topk_ids {tuple(topk_ids.shape)}, topk_logprobs {tuple(topk_logprobs.shape)} and "
                         f"student_logits {tuple(student_logits.shape)} must share the leading [n] (and k) dims")
    s_log = student_buckets(student_logits, topk_ids.long(), temperature)
    t_log = teacher_buckets(topk_logprobs, tail_log)
    if topk_ids.shape[-1] >= student_logits.shape[-1]:  # k = V: no tail bucket (a stored 1 - sum is rounding error)
        s_log, t_log = s_log[..., :-1], t_log[..., :-1]
    return divergence_logprobs(s_log, t_log, divergence=divergence, beta=beta, skew_alpha=skew_alpha) * temperature**2


def check_topk_inputs(student_hidden: Tensor, targets: Tensor, topk_ids: Tensor, topk_logprobs: Tensor,
                      tail_log: Tensor,
                      *, alpha: float, beta: float, temperature: float, divergence: str, skew_alpha: float,
                      chunk_size: int) -> None:
    """The argument checks of ``chunked_topk_kd_loss`` (shared with its fused kernel's dispatch)."""
    check_chunk(chunk_size)
    check_unit("alpha", alpha)
    check_unit("beta", beta)
    check_positive("temperature", temperature)
    check_divergence(divergence, skew_alpha)
    n = targets.shape[0]
    if not (student_hidden.shape[0] == topk_ids.shape[0] == topk_logprobs.shape[0] == tail_log.shape[0] == n):
        raise ValueError(f"student_hidden ({student_hidden.shape[0]} rows), targets ({n}), topk_ids "
                         f"({topk_ids.shape[0]}), topk_logprobs ({topk_logprobs.shape[0]}) and "
                         f"tail_log ({tail_log.shape[0]}) "
                         "must have the same number of rows N")
    if topk_ids.shape != topk_logprobs.shape:
        raise ValueError(f"topk_ids {tuple(topk_ids.shape)} and topk_logprobs {tuple(topk_logprobs.shape)} differ")


def chunked_topk_kd_loss(
    student_hidden: Tensor,
    student_head: Head,
    targets: Tensor,
    topk_ids: Tensor,
    topk_logprobs: Tensor,
    tail_log: Tensor,
    *,
    alpha: float,
    temperature: float = 1.0,
    divergence: Divergence = "jsd",
    beta: float = 0.0,
    skew_alpha: float = 0.1,
    chunk_size: int = 1024,
    vocab_size: int | None = None,
    ignore_index: int = -100,
) -> tuple[Tensor, dict[str, Tensor]]:
    """``alpha * CE + (1 - alpha) * topk_kd_divergence`` (token means) over gathered positions ``[N, H]``.

    The teacher rows (``topk_ids [N, k]``, ``topk_logprobs [N, k]``, ``tail_log [N]``) line up with ``targets [N]``;
    ignored rows get a finite stand-in teacher (so a tail log-mass of ``-inf`` there cannot make NaN gradients).
    The student head runs ``chunk_size`` positions at a time inside a checkpoint (O(chunk x V) peak memory).
    Metrics as ``chunked_kd_loss``: ``loss``, ``kd``, ``ce``, ``kd_sum``, ``ce_sum``, ``n_tokens``. This is the
    generic path; ``srlm_pl.ops.chunked_topk_kd_loss`` sends a plain ``nn.Linear`` head to a fused kernel.
    """
    check_topk_inputs(student_hidden, targets, topk_ids, topk_logprobs, tail_log, alpha=alpha, beta=beta,
                      temperature=temperature, divergence=divergence, skew_alpha=skew_alpha, chunk_size=chunk_size)
    n = targets.shape[0]

    def chunk_losses(s_h: Tensor, t: Tensor, ids: Tensor, lp: Tensor, tl: Tensor) -> tuple[Tensor, Tensor]:
        s_logits = head_logits(student_head, s_h, vocab_size)  # [n, V]
        valid = t != ignore_index  # ignored rows: a uniform k + 1 bucket teacher (finite D; its 0 weight gives 0 grads)
        flat = -math.log(ids.shape[-1] + 1)
        lp, tl = torch.where(valid[:, None], lp.float(), flat), torch.where(valid, tl.float(), flat)
        kd = topk_kd_divergence(s_logits, ids, lp, tl, divergence=divergence, beta=beta, skew_alpha=skew_alpha,
                                temperature=temperature)  # [n]
        kd_sum = torch.where(valid, kd, 0.0).sum()
        ce_sum = F.cross_entropy(s_logits, t, ignore_index=ignore_index, reduction="sum")
        return kd_sum, ce_sum

    chunks = []
    for lo in range(0, n, chunk_size):
        sl = slice(lo, lo + chunk_size)
        chunks.append(maybe_checkpoint(chunk_losses, student_hidden[sl], targets[sl], topk_ids[sl].long(),
                                       topk_logprobs[sl], tail_log[sl]))
    return kd_total(chunks, targets, alpha, ignore_index, student_hidden.device)
