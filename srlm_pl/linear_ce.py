"""Fused LM head + cross-entropy with an analytic gradient, in chunks (the SFT loss's fast path).

``loss = Σ_n [logsumexp(h_n Wᵀ) − (h_n Wᵀ)[y_n]]`` over the positions whose target is not ignored. For each
chunk of positions the forward pass computes the logits once, the loss, and right away the gradient of the
summed loss with respect to the logits, ``softmax − onehot``; it then turns that into the gradients of the
hidden states and of the weight and drops the logits. Backward only scales the stored gradients by the
incoming scalar. Compared with checkpointing each chunk and letting autograd recompute it, this does three
``[n, H] × [H, V]``-sized matmuls per chunk instead of four and keeps no autograd graph over the vocabulary;
peak memory is one chunk of float32 logits plus the weight's gradient (which training needs anyway).

Matmuls run in the autocast dtype when autocast is on (bf16 under ``bf16-mixed``), softmax and sums in
float32, like the generic path. Only for a plain ``nn.Linear`` head without bias and when a gradient is
needed; everything else (LoRA-wrapped heads, evaluation) takes the generic chunked path in ``losses``.
"""

from __future__ import annotations

import os

import torch
from torch import Tensor, nn


def _lse(x: Tensor, tmp: Tensor) -> Tensor:
    """Row logsumexp of ``x[n, V]``, leaving ``exp(x - max)`` in ``tmp`` (``torch.logsumexp`` allocates and took
    356 ms against ~30 ms for this on a float32 ``[1024, 49152]`` on the 2-core CPU)."""
    top = x.amax(-1, keepdim=True)
    torch.sub(x, top, out=tmp).exp_()
    return top.squeeze(-1) + tmp.sum(-1).log()


def _once(ctx) -> None:  # noqa: ANN001
    """The saved gradients are scaled in place (no second weight-sized copy), so a second backward through the
    same graph (``retain_graph=True``) would compound the scale: refuse it instead."""
    if getattr(ctx, "used", False):
        raise RuntimeError("the fused loss's backward can run once per forward (it scales its saved gradients in "
                           "place); recompute the loss instead of backward(retain_graph=True) twice")
    ctx.used = True


def applies(head: object) -> bool:
    """True when ``head`` is a plain bias-free ``nn.Linear`` and autograd is recording (and the fused path is
    not switched off with ``SRLM_FUSED_CE=0``, which benchmarks use to measure the generic path)."""
    enabled = os.environ.get("SRLM_FUSED_CE", "1") != "0"
    return enabled and type(head) is nn.Linear and head.bias is None and torch.is_grad_enabled()


def _matmul_dtype(weight: Tensor) -> torch.dtype:
    device = weight.device.type
    if torch.is_autocast_enabled(device):
        return torch.get_autocast_dtype(device)
    return weight.dtype


class _LinearCrossEntropy(torch.autograd.Function):
    @staticmethod
    def forward(ctx, hidden: Tensor, weight: Tensor, targets: Tensor, chunk_size: int, vocab_size: int,  # noqa: ANN001
                ignore_index: int, mm_dtype: torch.dtype) -> Tensor:
        with torch.autocast(hidden.device.type, enabled=False):  # dtypes are explicit below
            return _LinearCrossEntropy._run(ctx, hidden, weight, targets, chunk_size, vocab_size, ignore_index,
                                            mm_dtype)

    @staticmethod
    def _run(ctx, hidden: Tensor, weight: Tensor, targets: Tensor, chunk_size: int, vocab_size: int,  # noqa: ANN001
             ignore_index: int, mm_dtype: torch.dtype) -> Tensor:
        w = weight[:vocab_size].to(mm_dtype)  # [V, H]
        need_h, need_w = ctx.needs_input_grad[:2]  # a frozen head (LoRA) needs no [V, H] gradient at all
        grad_h = torch.zeros_like(hidden, dtype=torch.float32) if need_h else None  # [N, H]
        grad_w = torch.zeros(weight.shape, dtype=torch.float32, device=weight.device) if need_w else None
        total = torch.zeros((), dtype=torch.float32, device=hidden.device)
        rows = min(chunk_size, hidden.shape[0])
        # one float32 chunk of logits reused by every chunk: fresh [n, V] tensors cost page faults on a CPU
        z_buf, e_buf = (torch.empty((rows, vocab_size), dtype=torch.float32, device=hidden.device) for _ in range(2))
        for lo in range(0, hidden.shape[0], chunk_size):
            h = hidden[lo: lo + chunk_size].to(mm_dtype)  # [n, H]
            t = targets[lo: lo + chunk_size]  # [n]
            valid = t != ignore_index
            safe_t = torch.where(valid, t, 0)
            logits = z_buf[: h.shape[0]].copy_(h @ w.T)  # [n, V]
            grad = e_buf[: h.shape[0]]
            lse = _lse(logits, grad)  # grad = exp(logits - max)
            picked = logits.gather(-1, safe_t[:, None]).squeeze(-1)
            total = total + ((lse - picked) * valid).sum()
            grad.div_(grad.sum(-1, keepdim=True))  # d loss / d logits = softmax - onehot, zero on ignored rows
            grad.scatter_add_(-1, safe_t[:, None], -torch.ones_like(grad[:, :1]))
            grad *= valid[:, None]
            if grad_h is not None:
                grad_h[lo: lo + chunk_size] = (grad.to(mm_dtype) @ w).float()
            if grad_w is not None:  # float32 addmm in place: no [V, H] temporaries, faster on CPU than bf16 + add
                grad_w[:vocab_size].addmm_(grad.T, h.float())
        ctx.save_for_backward(grad_h, grad_w)
        ctx.dtypes = (hidden.dtype, weight.dtype)
        return total

    @staticmethod
    def backward(ctx, grad_out: Tensor):  # noqa: ANN001, ANN205
        _once(ctx)
        grad_h, grad_w = ctx.saved_tensors
        h_dtype, w_dtype = ctx.dtypes
        return (_scaled(grad_h, grad_out, h_dtype), _scaled(grad_w, grad_out, w_dtype),
                None, None, None, None, None)


def _scaled(grad: Tensor | None, grad_out: Tensor, dtype: torch.dtype) -> Tensor | None:
    """A saved gradient times the upstream scalar, in place (no second copy of a weight-sized gradient)."""
    return grad.mul_(grad_out).to(dtype) if grad is not None else None


def linear_cross_entropy(hidden: Tensor, head: nn.Linear, targets: Tensor, *, chunk_size: int = 1024,
                         vocab_size: int | None = None, ignore_index: int = -100) -> tuple[Tensor, Tensor]:
    """Summed NLL of ``head(hidden[N, H])`` against ``targets[N]`` -> ``(loss_sum, n_tokens)`` (see module doc)."""
    weight = head.weight
    vocab = vocab_size if vocab_size is not None else weight.shape[0]
    loss = _LinearCrossEntropy.apply(hidden, weight, targets, chunk_size, vocab, ignore_index,
                                     _matmul_dtype(weight))
    return loss, (targets != ignore_index).sum()
