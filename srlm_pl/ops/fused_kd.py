"""Fused student LM head + distillation loss with an analytic gradient, in chunks (the KD loss's fast path).

Same value as ``losses.chunked_kd_loss``: ``alpha · CE + (1 − alpha) · τ² · JSD_β(S_τ, T_τ)`` as token means
over the ``N`` non-ignored positions. For each chunk the forward pass computes both models' logits once, the
loss, and right away its gradient with respect to the student's logits, then the gradients of the student's
hidden states and head weight; the logits are dropped. Backward only scales the stored gradients. Versus
checkpointing each chunk (recompute both heads, keep ~12 float32 ``[chunk, V]`` tensors for autograd) this
is one matmul fewer per chunk and about half the peak memory.

Gradients with respect to the student logits ``z`` (``s = softmax(z/τ)``, ``t`` the teacher's), per token,
before the ``τ²`` factor and the token mean:

- ``β = 0``, forward KL(T‖S): ``(s − t) / τ``;
- ``β = 1``, reverse KL(S‖T): ``s ⊙ (d − Σ s d) / τ`` with ``d = log s − log t``;
- otherwise, with ``M = βT + (1 − β)S``: ``∂JSD/∂s = (1 − β) log(s / m)``, then through the softmax:
  ``s ⊙ (g − Σ s g) / τ``;
- CE at temperature 1: ``softmax(z) − onehot(y)``.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable

import torch
from torch import Tensor, nn

from srlm_pl.losses.kd import kd_metrics
from srlm_pl.ops.common import applies, head_grads, logsumexp_into, matmul_dtype, save_head_grads

TAIL = 32  # the last chunk's row count is rounded up to a multiple of this


def _chunk_value_and_grad(z_s: Tensor, z_t: Tensor, targets: Tensor, scratch: list[Tensor], beta: float,
                          tau: float, alpha: float) -> tuple[Tensor, Tensor, Tensor]:
    """Per-token ``(τ² · JSD_β, CE)`` and the gradient of ``alpha · CE + (1 − alpha) · τ² · JSD_β`` w.r.t. the
    student logits, computed in place: ``z_s`` and ``z_t`` (float32 ``[n, V]``) are overwritten and the gradient is
    a view of one of the buffers. ``scratch`` holds two (three for ``0 < β < 1``) more float32 ``[n, V]`` buffers."""
    c, d = scratch[0], scratch[1]
    ce = logsumexp_into(z_s, c) - z_s.gather(-1, targets[:, None]).squeeze(-1)  # c = exp(z_s - max)
    if alpha > 0:  # CE gradient at temperature 1: softmax - onehot, kept in c
        c.div_(c.sum(-1, keepdim=True))
        c.scatter_add_(-1, targets[:, None], torch.full_like(c[:, :1], -1.0))
    if tau != 1.0:
        z_s.div_(tau)
        z_t.div_(tau)
    s_log = z_s.sub_(logsumexp_into(z_s, d)[:, None])  # log softmax(z_s / τ), in place
    t_log = z_t.sub_(logsumexp_into(z_t, d)[:, None])
    if beta == 0.0:  # forward KL(T || S): value Σ t (log t − log s), gradient (s − t) / τ
        t = torch.exp(t_log, out=d)
        kd = t_log.sub_(s_log).mul_(t).masked_fill_(t == 0, 0.0).sum(-1)
        grad = torch.exp(s_log, out=z_t).sub_(t).div_(tau)
    elif beta == 1.0:  # reverse KL(S || T): g = log s − log t, value Σ s g, gradient s (g − Σ s g) / τ
        s_ = torch.exp(s_log, out=d)
        g = t_log.neg_().add_(s_log)
        kd = torch.mul(s_, g, out=z_s).masked_fill_(s_ == 0, 0.0).sum(-1)
        grad = g.sub_(kd[:, None]).mul_(s_).div_(tau)
    else:  # M = βT + (1 − β)S: value β KL(T || M) + (1 − β) KL(S || M), g = (1 − β) log(s / m)
        e = scratch[2]
        m_log = torch.logaddexp(torch.add(s_log, math.log1p(-beta), out=d), torch.add(t_log, math.log(beta), out=e),
                                out=d)
        t = torch.exp(t_log, out=e)
        kd_t = t_log.sub_(m_log).mul_(t).masked_fill_(t == 0, 0.0).sum(-1)
        s_ = torch.exp(s_log, out=e)
        diff = s_log.sub_(m_log)  # log s − log m
        kd_s = torch.mul(s_, diff, out=z_t).masked_fill_(s_ == 0, 0.0).sum(-1)
        kd = beta * kd_t + (1 - beta) * kd_s
        grad = diff.mul_(1 - beta).sub_((1 - beta) * kd_s[:, None]).mul_(s_).div_(tau)
    grad.mul_(tau**2)
    if alpha > 0:
        grad = c.mul_(alpha).add_(grad, alpha=1 - alpha)
    elif alpha != 0:
        grad.mul_(1 - alpha)
    return kd * tau**2, ce, grad


class _FusedKD(torch.autograd.Function):
    @staticmethod
    def forward(ctx, s_hidden: Tensor, s_weight: Tensor, t_hidden: Tensor, teacher_head: Callable,  # noqa: ANN001
                targets: Tensor, opts: dict) -> Tensor:
        with torch.autocast(s_hidden.device.type, enabled=False):
            return _FusedKD._run(ctx, s_hidden, s_weight, t_hidden, teacher_head, targets, **opts)

    @staticmethod
    def _run(ctx, s_hidden: Tensor, s_weight: Tensor, t_hidden: Tensor, teacher_head: Callable,  # noqa: ANN001
             targets: Tensor, *, beta: float, tau: float, alpha: float, chunk: int, vocab: int, ignore: int,
             mm_dtype: torch.dtype, t_dtype: torch.dtype | None) -> Tensor:
        w = s_weight[:vocab].to(mm_dtype)  # [V, H]
        n_rows = s_hidden.shape[0]
        # pad the positions to a multiple of min(chunk, TAIL) (ignored targets): the last chunk then comes in a
        # few shapes, not one per token count, so the CPU matmul primitive cache does not grow every step
        extra = (-n_rows) % min(chunk, TAIL)
        if extra:
            s_hidden = torch.cat([s_hidden, s_hidden.new_zeros(extra, s_hidden.shape[1])])
            t_hidden = torch.cat([t_hidden, t_hidden.new_zeros(extra, t_hidden.shape[1])])
            targets = torch.cat([targets, targets.new_full((extra,), ignore)])
        valid_all = targets != ignore
        n_tokens = float(valid_all.sum().clamp(min=1))
        need_h, need_w = ctx.needs_input_grad[:2]  # a frozen head (LoRA) needs no [V, H] gradient at all
        grad_h = torch.zeros_like(s_hidden, dtype=torch.float32) if need_h else None
        grad_w = torch.zeros(s_weight.shape, dtype=torch.float32, device=s_weight.device) if need_w else None
        kd_sum = torch.zeros((), dtype=torch.float32, device=s_hidden.device)
        ce_sum = torch.zeros_like(kd_sum)
        rows = min(chunk, s_hidden.shape[0])
        # float32 [chunk, V] buffers reused by every chunk (fresh ones per chunk cost page faults and peak memory)
        z_s_buf, z_t_buf, *scratch = (torch.empty((rows, vocab), dtype=torch.float32, device=s_hidden.device)
                                      for _ in range(4 + (0.0 < beta < 1.0)))
        for lo in range(0, s_hidden.shape[0], chunk):
            sl = slice(lo, lo + chunk)
            h, t, valid = s_hidden[sl].to(mm_dtype), targets[sl], valid_all[sl]
            n = h.shape[0]
            safe_t = torch.where(valid, t, 0)
            z_s = z_s_buf[:n].copy_(h @ w.T)  # [n, V]
            with torch.autocast(s_hidden.device.type, dtype=t_dtype) if t_dtype else contextlib.nullcontext():
                z_t = z_t_buf[:n].copy_(teacher_head(t_hidden[sl])[..., :vocab])  # as under the caller's autocast
            kd, ce, grad = _chunk_value_and_grad(z_s, z_t, safe_t, [b[:n] for b in scratch], beta, tau, alpha)
            kd_sum += (kd * valid).sum()
            ce_sum += (ce * valid).sum()
            grad.mul_(valid[:, None] / n_tokens)
            if grad_h is not None:
                grad_h[sl] = (grad.to(mm_dtype) @ w).float()
            if grad_w is not None:  # float32 addmm in place: no [V, H] temporaries, faster on CPU than bf16 + add
                grad_w[:vocab].addmm_(grad.T, h.float())
        save_head_grads(ctx, grad_h[:n_rows] if grad_h is not None else None, grad_w, (s_hidden.dtype, s_weight.dtype))
        ctx.mark_non_differentiable(kd_sum, ce_sum)
        return (alpha * ce_sum + (1 - alpha) * kd_sum) / n_tokens, kd_sum, ce_sum

    @staticmethod
    def backward(ctx, grad_out: Tensor, _kd: Tensor, _ce: Tensor):  # noqa: ANN001, ANN205
        return (*head_grads(ctx, grad_out), None, None, None, None)


def fused_kd_loss(student_hidden: Tensor, teacher_hidden: Tensor, student_head: nn.Linear, teacher_head: Callable,
                  targets: Tensor, *, beta: float, temperature: float, alpha: float, chunk_size: int,
                  vocab_size: int | None, ignore_index: int = -100) -> tuple[Tensor, dict[str, Tensor]]:
    """``(loss, metrics)`` exactly like ``losses.chunked_kd_loss`` (see the module docstring)."""
    weight = student_head.weight
    t_weight = getattr(teacher_head, "weight", None)
    if vocab_size is None and t_weight is not None and t_weight.shape[0] != weight.shape[0]:
        raise ValueError(f"student head ({weight.shape[0]} rows) and teacher head ({t_weight.shape[0]} rows) "
                         "differ; slice both to the tokenizer vocabulary (vocab_size)")
    device = student_hidden.device.type
    opts = {"beta": beta, "tau": temperature, "alpha": alpha, "chunk": chunk_size,
            "vocab": vocab_size if vocab_size is not None else weight.shape[0], "ignore": ignore_index,
            "mm_dtype": matmul_dtype(weight),
            "t_dtype": torch.get_autocast_dtype(device) if torch.is_autocast_enabled(device) else None}
    # the teacher's head runs inside forward (autograd is off there); its hidden states are detached
    loss, kd_sum, ce_sum = _FusedKD.apply(student_hidden, weight, teacher_hidden.detach(), teacher_head, targets,
                                          opts)
    return loss, kd_metrics(loss, kd_sum, ce_sum, targets, ignore_index)


__all__ = ["applies", "fused_kd_loss"]
