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

import torch
from torch import Tensor, nn

from srlm_pl.ops.common import applies as applies  # the dispatch rule, public here for callers
from srlm_pl.ops.common import head_grads, logsumexp_into, matmul_dtype, save_head_grads


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
            lse = logsumexp_into(logits, grad)  # grad = exp(logits - max)
            picked = logits.gather(-1, safe_t[:, None]).squeeze(-1)
            total = total + ((lse - picked) * valid).sum()
            grad.div_(grad.sum(-1, keepdim=True))  # d loss / d logits = softmax - onehot, zero on ignored rows
            grad.scatter_add_(-1, safe_t[:, None], -torch.ones_like(grad[:, :1]))
            grad *= valid[:, None]
            if grad_h is not None:
                grad_h[lo: lo + chunk_size] = (grad.to(mm_dtype) @ w).float()
            if grad_w is not None:  # float32 addmm in place: no [V, H] temporaries, faster on CPU than bf16 + add
                grad_w[:vocab_size].addmm_(grad.T, h.float())
        save_head_grads(ctx, grad_h, grad_w, (hidden.dtype, weight.dtype))
        return total

    @staticmethod
    def backward(ctx, grad_out: Tensor):  # noqa: ANN001, ANN205
        return (*head_grads(ctx, grad_out), None, None, None, None, None)


def linear_cross_entropy(hidden: Tensor, head: nn.Linear, targets: Tensor, *, chunk_size: int = 1024,
                         vocab_size: int | None = None, ignore_index: int = -100) -> tuple[Tensor, Tensor]:
    """Summed NLL of ``head(hidden[N, H])`` against ``targets[N]`` -> ``(loss_sum, n_tokens)`` (see module doc)."""
    weight = head.weight
    vocab = vocab_size if vocab_size is not None else weight.shape[0]
    loss = _LinearCrossEntropy.apply(hidden, weight, targets, chunk_size, vocab, ignore_index,
                                     matmul_dtype(weight))
    return loss, (targets != ignore_index).sum()
