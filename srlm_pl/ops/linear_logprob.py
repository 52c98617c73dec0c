"""Fused LM head + per-token log-probabilities (and entropy) with an analytic backward, in chunks (GRPO's fast path).

For hidden rows ``h[N, H]``, head ``W[V, H]``, targets ``y[N]`` and temperature ``τ``: ``z = h Wᵀ / τ``,
``logp_n = z_n[y_n] − logsumexp(z_n)`` and ``H_n = −Σ_v p_nv log p_nv`` with ``p = softmax(z)``.

Forward computes each chunk's logits once, keeps only ``logsumexp`` and the entropy per row (``[N]`` floats)
and drops the logits. Backward receives ``g = ∂L/∂logp`` and ``e = ∂L/∂H`` (both ``[N]``, unknown in the
forward, which is why this cannot precompute the gradient the way ``linear_ce`` does), recomputes each chunk's
logits with one product and forms the logit gradient in place:

    ∂L/∂z_v = g (1[v = y] − p_v) − e p_v (log p_v + H)        (then ÷ τ)

then ``∂L/∂h = (∂L/∂z) W`` and ``∂L/∂W += (∂L/∂z)ᵀ h`` (float32 ``addmm_``). Four ``[n, H] × [H, V]`` products
per chunk, like checkpointing the generic path, but no autograd graph over the vocabulary: no division by
``τ = 1``, no zero-filled gather gradient, no separate log-softmax backward, fewer float32 temporaries.

Matmuls run in the autocast dtype when autocast is on, softmax and sums in float32. Used for a plain bias-free
``nn.Linear`` head when a gradient is needed; otherwise ``losses.chunked_token_logprobs`` takes its generic path.
``tests/ops/test_linear_logprob.py`` checks values and both gradients against float64.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from srlm_pl.ops.common import applies as applies  # the same dispatch rule as the fused CE
from srlm_pl.ops.common import matmul_dtype


class _Buffers:
    """Per-call scratch for one chunk of logits, reused across chunks: on a CPU every fresh ``[n, V]`` tensor costs
    its page faults again (a float32 ``[1024, 49152]`` cast took 53 ms allocated vs 8 ms into a reused buffer)."""

    def __init__(self, rows: int, vocab: int, mm_dtype: torch.dtype, device: torch.device) -> None:
        self.low = torch.empty((rows, vocab), dtype=mm_dtype, device=device)  # matmul output / input
        self.z = torch.empty((rows, vocab), dtype=torch.float32, device=device)
        self.e = torch.empty((rows, vocab), dtype=torch.float32, device=device)

    def logits(self, h: Tensor, w: Tensor, temperature: float) -> tuple[Tensor, Tensor, Tensor]:
        """``(z, e, low)`` views for ``h``'s rows, ``z = h wᵀ / τ`` in float32."""
        n = h.shape[0]
        low, z, e = self.low[:n], self.z[:n], self.e[:n]
        torch.mm(h.to(low.dtype), w.T, out=low)
        z.copy_(low)
        if temperature != 1.0:
            z.div_(temperature)
        return z, e, low


class _LinearLogprob(torch.autograd.Function):
    @staticmethod
    def forward(ctx, hidden: Tensor, weight: Tensor, targets: Tensor, temperature: float, chunk_size: int,  # noqa: ANN001
                vocab_size: int, mm_dtype: torch.dtype, with_entropy: bool) -> tuple[Tensor, Tensor]:
        with torch.autocast(hidden.device.type, enabled=False):  # dtypes are explicit below
            w = weight[:vocab_size].to(mm_dtype)  # [V, H]
            n_rows = hidden.shape[0]
            buf = _Buffers(min(chunk_size, n_rows), vocab_size, mm_dtype, hidden.device)
            logp = torch.empty(n_rows, dtype=torch.float32, device=hidden.device)
            lse = torch.empty_like(logp)
            entropy = torch.zeros_like(logp)
            for lo in range(0, n_rows, chunk_size):
                sl = slice(lo, lo + chunk_size)
                z, e, _ = buf.logits(hidden[sl], w, temperature)  # [n, V]
                picked = z.gather(-1, targets[sl, None]).squeeze(-1)
                top = z.amax(-1, keepdim=True)  # logsumexp by hand: torch.logsumexp took 356 ms here, this 30
                z.sub_(top)
                total = torch.exp(z, out=e).sum(-1)  # [n]
                log_total = total.log()
                lse[sl] = top.squeeze(-1) + log_total
                logp[sl] = picked - lse[sl]
                if with_entropy:  # H = log Σe - Σ e (z - max) / Σe
                    entropy[sl] = log_total - torch.bmm(e[:, None], z[:, :, None]).view(-1) / total
        ctx.save_for_backward(hidden, weight, targets, lse, entropy)
        ctx.opts = (temperature, chunk_size, vocab_size, mm_dtype)
        if not with_entropy:
            ctx.mark_non_differentiable(entropy)
        return logp, entropy

    @staticmethod
    def backward(ctx, grad_logp: Tensor | None, grad_entropy: Tensor | None):  # noqa: ANN205
        hidden, weight, targets, lse, entropy = ctx.saved_tensors
        temperature, chunk_size, vocab_size, mm_dtype = ctx.opts
        with torch.autocast(hidden.device.type, enabled=False):
            w = weight[:vocab_size].to(mm_dtype)  # [V, H]
            buf = _Buffers(min(chunk_size, hidden.shape[0]), vocab_size, mm_dtype, hidden.device)
            need_h, need_w = ctx.needs_input_grad[:2]  # a frozen head (LoRA): no [V, H] gradient, one product less
            grad_h = torch.empty(hidden.shape, dtype=hidden.dtype, device=hidden.device) if need_h else None
            grad_w = torch.zeros(weight.shape, dtype=torch.float32, device=weight.device) if need_w else None
            grad_w_low = (torch.empty((vocab_size, weight.shape[1]), dtype=mm_dtype, device=weight.device)
                          if need_w else None)
            for lo in range(0, hidden.shape[0], chunk_size):
                sl = slice(lo, lo + chunk_size)
                h = hidden[sl].to(mm_dtype)
                z, probs, low = buf.logits(h, w, temperature)
                logp_all = z.sub_(lse[sl, None])  # [n, V] log p
                torch.exp(logp_all, out=probs)
                if grad_entropy is not None:
                    # -e p (log p + H), then the -g p term and the one-hot below
                    grad = logp_all.add_(entropy[sl, None]).mul_(probs).mul_(-grad_entropy[sl, None])
                    if grad_logp is not None:
                        grad.sub_(probs.mul_(grad_logp[sl, None]))
                else:
                    grad = probs.mul_(-grad_logp[sl, None])
                if grad_logp is not None:
                    grad.scatter_add_(-1, targets[sl, None], grad_logp[sl, None].float())
                if temperature != 1.0:
                    grad.div_(temperature)
                low.copy_(grad)
                if grad_h is not None:
                    grad_h[sl] = (low @ w).to(hidden.dtype)
                if grad_w is not None:
                    # the weight's gradient in the matmul dtype, accumulated in float32 (at 1024 rows this beat a
                    # float32 addmm_, 105 vs 257 ms per chunk)
                    grad_w[:vocab_size].add_(torch.mm(low.T, h, out=grad_w_low))
        return (grad_h, grad_w.to(weight.dtype) if grad_w is not None else None,
                None, None, None, None, None, None)


def linear_token_logprobs(hidden: Tensor, head: nn.Linear, targets: Tensor, *, temperature: float = 1.0,
                          chunk_size: int = 1024, vocab_size: int | None = None,
                          with_entropy: bool = False) -> tuple[Tensor, Tensor | None]:
    """``(logp[N], entropy[N] | None)`` of ``head(hidden[N, H]) / temperature`` at ``targets[N]`` (module doc)."""
    weight = head.weight
    vocab = vocab_size if vocab_size is not None else weight.shape[0]
    logp, entropy = _LinearLogprob.apply(hidden, weight, targets, temperature, chunk_size, vocab,
                                         matmul_dtype(weight), with_entropy)
    return logp, (entropy if with_entropy else None)
