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

from srlm_pl.linear_ce import _matmul_dtype, applies

TAIL = 32  # the last chunk's row count is rounded up to a multiple of this


def _kd_value_and_grad(z_s: Tensor, z_t: Tensor, beta: float, tau: float) -> tuple[Tensor, Tensor]:
    """Per-token ``τ² · JSD_β`` and its gradient w.r.t. the student logits (float32 ``[n, V]``)."""
    s_log = torch.log_softmax(z_s / tau, dim=-1)
    t_log = torch.log_softmax(z_t / tau, dim=-1)
    s = s_log.exp()
    if beta == 0.0:
        t = t_log.exp()
        value = (t * (t_log - s_log)).masked_fill(t == 0, 0.0).sum(-1)
        grad = (s - t) / tau
    else:
        if beta == 1.0:
            g = s_log - t_log  # d KL(S||T) / d s_j, up to a constant that the softmax Jacobian removes
            value = (s * g).masked_fill(s == 0, 0.0).sum(-1)
        else:
            m_log = torch.logaddexp(s_log + math.log1p(-beta), t_log + math.log(beta))
            t = t_log.exp()
            value = beta * (t * (t_log - m_log)).masked_fill(t == 0, 0.0).sum(-1) + \
                (1 - beta) * (s * (s_log - m_log)).masked_fill(s == 0, 0.0).sum(-1)
            g = (1 - beta) * (s_log - m_log)
        grad = s * (g - (s * g).sum(-1, keepdim=True)) / tau
    return value * tau**2, grad * tau**2


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
        grad_h = torch.zeros_like(s_hidden, dtype=torch.float32)
        grad_w = torch.zeros(s_weight.shape, dtype=torch.float32, device=s_weight.device)
        kd_sum = torch.zeros((), dtype=torch.float32, device=s_hidden.device)
        ce_sum = torch.zeros_like(kd_sum)
        for lo in range(0, s_hidden.shape[0], chunk):
            sl = slice(lo, lo + chunk)
            h, t, valid = s_hidden[sl].to(mm_dtype), targets[sl], valid_all[sl]
            safe_t = torch.where(valid, t, 0)
            z_s = (h @ w.T).float()  # [n, V]
            with torch.autocast(s_hidden.device.type, dtype=t_dtype) if t_dtype else contextlib.nullcontext():
                z_t = teacher_head(t_hidden[sl])[..., :vocab].float()  # [n, V], as under the caller's autocast
            kd, g_kd = _kd_value_and_grad(z_s, z_t, beta, tau)
            del z_t
            lse = torch.logsumexp(z_s, dim=-1)
            ce = lse - z_s.gather(-1, safe_t[:, None]).squeeze(-1)
            kd_sum += (kd * valid).sum()
            ce_sum += (ce * valid).sum()
            grad = torch.softmax(z_s, dim=-1)  # CE gradient: softmax - onehot
            grad.scatter_add_(-1, safe_t[:, None], -torch.ones_like(grad[:, :1]))
            grad.mul_(alpha).add_(g_kd, alpha=1 - alpha).mul_(valid[:, None] / n_tokens)
            grad_mm = grad.to(mm_dtype)
            grad_h[sl] = (grad_mm @ w).float()
            # float32 addmm in place: no [V, H] temporaries, and faster on CPU than bf16 + cast + add
            grad_w[:vocab].addmm_(grad.T, h.float())
        ctx.save_for_backward(grad_h[:n_rows], grad_w)
        ctx.dtypes = (s_hidden.dtype, s_weight.dtype)
        ctx.mark_non_differentiable(kd_sum, ce_sum)
        return (alpha * ce_sum + (1 - alpha) * kd_sum) / n_tokens, kd_sum, ce_sum

    @staticmethod
    def backward(ctx, grad_out: Tensor, _kd: Tensor, _ce: Tensor):  # noqa: ANN001, ANN205
        grad_h, grad_w = ctx.saved_tensors
        h_dtype, w_dtype = ctx.dtypes
        # scale in place: no second copy of the weight-sized gradient
        return grad_h.mul_(grad_out).to(h_dtype), grad_w.mul_(grad_out).to(w_dtype), None, None, None, None


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
            "mm_dtype": _matmul_dtype(weight),
            "t_dtype": torch.get_autocast_dtype(device) if torch.is_autocast_enabled(device) else None}
    # the teacher's head runs inside forward (autograd is off there); its hidden states are detached
    loss, kd_sum, ce_sum = _FusedKD.apply(student_hidden, weight, teacher_hidden.detach(), teacher_head, targets,
                                          opts)
    n_tokens = (targets != ignore_index).sum()
    denom = n_tokens.clamp(min=1).float()
    metrics = {"loss": loss.detach(), "kd": kd_sum / denom, "ce": ce_sum / denom, "kd_sum": kd_sum,
               "ce_sum": ce_sum, "n_tokens": n_tokens}
    return loss, metrics


__all__ = ["applies", "fused_kd_loss"]
