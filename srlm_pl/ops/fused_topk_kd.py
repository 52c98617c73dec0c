"""Fused student LM head + top-k KD loss (teacher top-k + tail bucket, ``losses.topk``), gradient in the forward.

Same value as ``losses.topk.chunked_topk_kd_loss``. Per chunk of positions the forward pass computes the student's
logits once, the loss of the chunk, and right away its gradient with respect to those logits, then the gradients
of the hidden states and of the head weight; the logits are dropped and backward only scales the stored
gradients. The gradient is
analytic over the vocabulary (``_chunk_value_and_grad``): only the divergence over the ``k + 1`` buckets goes
through autograd. Versus the generic path (each chunk checkpointed, so backward recomputes the ``[n, H] x [H, V]``
head matmul and differentiates every ``[n, V]`` op) this is one big matmul per chunk fewer and a handful of
``[n, V]`` passes. A frozen head (LoRA) gets no ``[V, H]`` gradient.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from srlm_pl.losses.kd import Divergence, divergence_logprobs, kd_metrics
from srlm_pl.ops.common import applies, head_grads, matmul_dtype, save_head_grads
from srlm_pl.ops.fused_kd import TAIL


def _bucket_grad(s_b: Tensor, t_b: Tensor, valid: Tensor, opts: dict, scale: float) -> tuple[Tensor, Tensor]:
    """Summed divergence over the valid rows and its gradient ``[n, B]`` with respect to the student's bucket
    log-probs ``s_b``, times ``scale``; autograd over ``[n, k + 1]`` tensors only."""
    s_b = s_b.detach().requires_grad_(True)
    t_b = torch.where(valid[:, None], t_b, s_b.detach())  # ignored rows: D = 0 with finite gradients (not 0 * inf)
    with torch.enable_grad():
        kd = divergence_logprobs(s_b, t_b, divergence=opts["divergence"], beta=opts["beta"],
                                 skew_alpha=opts["skew_alpha"]) * opts["tau"] ** 2
        kd_sum = torch.where(valid, kd, 0.0).sum()
        (g,) = torch.autograd.grad(kd_sum * scale, s_b)
    return kd_sum.detach(), g


def _chunk_value_and_grad(z: Tensor, targets: Tensor, valid: Tensor, ids: Tensor, lp: Tensor, t_tail_log: Tensor,
                          opts: dict, n_tokens: float) -> tuple[Tensor, Tensor, Tensor]:
    """Summed KD and CE of the valid rows of one chunk, and the gradient of the chunk's share of the loss
    ``(alpha * CE + (1 - alpha) * KD) / n_tokens`` with respect to the float32 logits ``z [n, V]`` (overwritten).

    With ``u = z / tau``, ``s = softmax(u)``, bucket log-probs ``b_i = u_i - lse(u)`` (i in the top-k ``I``) and
    ``b_tail = lse(u outside I) - lse(u)``, and ``g = dKD/db`` (from ``_bucket_grad``), ``G = sum(g)``:
    ``dKD/du_j = g_j - s_j G`` for j in I and ``s_j (g_tail / s_tail - G) = r_j (g_tail - s_tail G)`` elsewhere,
    with ``r = softmax(u outside I)`` (no division by a tiny tail); ``dKD/dz = dKD/du / tau``. Log-probs are
    formed in log space, so nothing underflows to ``log 0``.
    """
    tau, alpha, k = opts["tau"], opts["alpha"], ids.shape[-1]
    safe_t = torch.where(valid, targets, 0)
    lse1 = torch.logsumexp(z, dim=-1)
    ce = lse1 - z.gather(-1, safe_t[:, None]).squeeze(-1)  # CE at temperature 1
    ce_grad = torch.softmax(z, dim=-1) if alpha > 0 else None  # [n, V]
    u = z.div_(tau) if tau != 1.0 else z
    lse = torch.logsumexp(u, dim=-1, keepdim=True) if tau != 1.0 else lse1[:, None]  # [n, 1]
    top_log = u.gather(-1, ids) - lse  # [n, k]
    no_tail = k >= u.shape[-1]
    s_b, t_b = top_log, lp
    if not no_tail:
        rest = u.scatter_(-1, ids, -torch.inf)  # u outside the top-k (in place)
        lse_rest = torch.logsumexp(rest, dim=-1, keepdim=True)
        tail_log = lse_rest - lse  # [n, 1]
        s_b = torch.cat([top_log, tail_log], -1)
        t_b = torch.cat([lp, t_tail_log[:, None]], -1)
    kd_sum, g = _bucket_grad(s_b, t_b, valid, opts, (1 - alpha) / n_tokens / tau)
    big_g = g.sum(-1, keepdim=True)  # [n, 1]
    s_top = top_log.exp()
    if no_tail:
        grad = u.zero_()
    else:
        grad = rest.sub_(lse_rest).exp_().mul_(g[:, -1:] - tail_log.exp() * big_g)  # r_j (g_tail - s_tail G)
    grad.scatter_(-1, ids, g[:, :k] - s_top * big_g)
    if ce_grad is not None:
        ce_grad.scatter_add_(-1, safe_t[:, None], torch.full_like(ce_grad[:, :1], -1.0))
        grad.add_(ce_grad.mul_(torch.where(valid, alpha / n_tokens, 0.0)[:, None]))
    return kd_sum, torch.where(valid, ce, 0.0).sum(), grad


def _pad(n_extra: int, hidden: Tensor, targets: Tensor, ids: Tensor, lp: Tensor, tail_log: Tensor, ignore: int
         ) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
    """Ignored rows with a well-defined (finite) teacher, so the last chunk comes in few shapes."""
    k = ids.shape[1]
    return (torch.cat([hidden, hidden.new_zeros(n_extra, hidden.shape[1])]),
            torch.cat([targets, targets.new_full((n_extra,), ignore)]),
            torch.cat([ids, torch.arange(k, device=ids.device).expand(n_extra, k)]),
            torch.cat([lp, lp.new_full((n_extra, k), -math.log(k + 1))]),
            torch.cat([tail_log, tail_log.new_full((n_extra,), -math.log(k + 1))]))


class _FusedTopKKD(torch.autograd.Function):
    @staticmethod
    def forward(ctx, hidden: Tensor, weight: Tensor, targets: Tensor, ids: Tensor, lp: Tensor,  # noqa: ANN001
                tail: Tensor, opts: dict) -> tuple[Tensor, Tensor, Tensor]:
        with torch.autocast(hidden.device.type, enabled=False):
            return _FusedTopKKD._run(ctx, hidden, weight, targets, ids, lp, tail, opts)

    @staticmethod
    def _run(ctx, hidden: Tensor, weight: Tensor, targets: Tensor, ids: Tensor, lp: Tensor, tail: Tensor,  # noqa: ANN001
             opts: dict) -> tuple[Tensor, Tensor, Tensor]:
        mm_dtype, chunk, vocab, ignore = opts["mm_dtype"], opts["chunk"], opts["vocab"], opts["ignore"]
        w = weight[:vocab].to(mm_dtype)  # [V, H]
        n_rows = hidden.shape[0]
        extra = (-n_rows) % min(chunk, TAIL)
        if extra:
            hidden, targets, ids, lp, tail = _pad(extra, hidden, targets, ids, lp, tail, ignore)
        valid_all = targets != ignore
        n_tokens = float(valid_all.sum().clamp(min=1))
        need_h, need_w = ctx.needs_input_grad[:2]
        grad_h = torch.zeros_like(hidden, dtype=torch.float32) if need_h else None
        grad_w = torch.zeros(weight.shape, dtype=torch.float32, device=weight.device) if need_w else None
        kd_sum = torch.zeros((), dtype=torch.float32, device=hidden.device)
        ce_sum = torch.zeros_like(kd_sum)
        for lo in range(0, hidden.shape[0], chunk):
            sl = slice(lo, lo + chunk)
            h = hidden[sl].to(mm_dtype)
            z = (h @ w.T).float()  # [n, V]
            kd, ce, grad = _chunk_value_and_grad(z, targets[sl], valid_all[sl], ids[sl], lp[sl], tail[sl], opts,
                                                 n_tokens)
            kd_sum += kd
            ce_sum += ce
            if grad_h is not None:
                grad_h[sl] = (grad.to(mm_dtype) @ w).float()
            if grad_w is not None:
                grad_w[:vocab].addmm_(grad.T, h.float())
        save_head_grads(ctx, grad_h[:n_rows] if grad_h is not None else None, grad_w, (hidden.dtype, weight.dtype))
        ctx.mark_non_differentiable(kd_sum, ce_sum)
        alpha = opts["alpha"]
        return (alpha * ce_sum + (1 - alpha) * kd_sum) / n_tokens, kd_sum, ce_sum

    @staticmethod
    def backward(ctx, grad_out: Tensor, _kd: Tensor, _ce: Tensor):  # noqa: ANN001, ANN205
        return (*head_grads(ctx, grad_out), None, None, None, None, None)


def fused_topk_kd_loss(student_hidden: Tensor, student_head: nn.Linear, targets: Tensor, topk_ids: Tensor,
                       topk_logprobs: Tensor, tail_log: Tensor, *, alpha: float, temperature: float,
                       divergence: Divergence, beta: float, skew_alpha: float, chunk_size: int,
                       vocab_size: int | None, ignore_index: int = -100) -> tuple[Tensor, dict[str, Tensor]]:
    """``(loss, metrics)`` exactly like ``losses.topk.chunked_topk_kd_loss`` (see the module docstring)."""
    weight = student_head.weight
    opts = {"alpha": alpha, "tau": temperature, "divergence": divergence, "beta": beta, "skew_alpha": skew_alpha,
            "chunk": chunk_size, "vocab": vocab_size if vocab_size is not None else weight.shape[0],
            "ignore": ignore_index, "mm_dtype": matmul_dtype(weight)}
    loss, kd_sum, ce_sum = _FusedTopKKD.apply(student_hidden, weight, targets, topk_ids.long(),
                                              topk_logprobs.float(), tail_log.float(), opts)
    return loss, kd_metrics(loss, kd_sum, ce_sum, targets, ignore_index)


__all__ = ["applies", "fused_topk_kd_loss"]
