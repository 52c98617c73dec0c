"""Chunked LM-head losses and log-probs, and the conventions every loss in ``srlm_pl.losses`` follows.

Conventions
-----------
* Positions are gathered by the caller: ``hidden[N, H]`` / ``logits[N, V]`` hold only the positions that
  count, in next-token order: ``hidden[b, t]`` predicts ``input_ids[b, t + 1]``, so a caller with a loss mask
  ``m[B, T]`` over the *target* tokens passes ``hidden[:, :-1][m[:, 1:]]`` and ``input_ids[:, 1:][m[:, 1:]]``.
  Targets equal to ``ignore_index`` (-100) are also skipped by the CE / KD helpers.
* All log-softmax / divergence arithmetic is float32, whatever the logits dtype.
* Chunked LM-head helpers run ``head`` on ``chunk_size`` positions at a time inside
  ``torch.utils.checkpoint`` (non-reentrant), so neither forward nor backward ever holds more than one chunk
  of full-vocabulary logits: backward recomputes a chunk's logits from its hidden rows. ``vocab_size`` slices
  logits to the tokenizer length (embedding rows past it are padding, e.g. Qwen2.5 151,936 rows vs 151,665
  tokens); it also lets teacher and student heads of different padded widths be compared.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.utils.checkpoint import checkpoint

Head = Callable[[Tensor], Tensor]
# float32 elements per chunk in selective_log_softmax when no chunk size is given (256 MiB).
_DEFAULT_CHUNK_ELEMENTS = 1 << 26


def check_positive(name: str, value: float) -> None:
    if not value > 0:
        raise ValueError(f"{name} must be > 0, got {value}")


def check_unit(name: str, value: float) -> None:
    if not 0.0 <= value <= 1.0:
        raise ValueError(f"{name} must be in [0, 1], got {value}")


def check_chunk(chunk_size: int) -> None:
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")


def maybe_checkpoint(fn: Callable, *args: Tensor):
    """Run ``fn`` under non-reentrant activation checkpointing when autograd is recording."""
    if torch.is_grad_enabled():
        return checkpoint(fn, *args, use_reentrant=False)
    return fn(*args)


def head_logits(head: Head, hidden: Tensor, vocab_size: int | None) -> Tensor:
    logits = head(hidden)  # [n, V_head]
    if vocab_size is not None:
        logits = logits[..., :vocab_size]
    return logits.float()  # [n, V]


def _row_logp(rows: Tensor, targets: Tensor) -> Tensor:
    rows = rows.float()  # [n, V]
    return rows.gather(-1, targets[:, None]).squeeze(-1) - torch.logsumexp(rows, dim=-1)  # [n]


def selective_log_softmax(logits: Tensor, targets: Tensor, *, chunk_size: int | None = None) -> Tensor:
    """log p(target) for ``logits[..., V]`` and ``targets[...]``; float32 output of shape ``targets.shape``.

    Rows are processed ``chunk_size`` at a time (default: ~2**26 elements per chunk) with the logsumexp trick,
    so at most one chunk is up-cast to float32; with autograd each chunk is checkpointed, so backward does not
    keep float32 copies either.
    """
    vocab = logits.shape[-1]
    flat, flat_t = logits.reshape(-1, vocab), targets.reshape(-1)  # [R, V], [R]
    if flat.shape[0] == 0:
        return torch.zeros(targets.shape, dtype=torch.float32, device=logits.device)
    rows = chunk_size if chunk_size is not None else max(1, _DEFAULT_CHUNK_ELEMENTS // vocab)
    check_chunk(rows)
    out = [
        maybe_checkpoint(_row_logp, flat[lo : lo + rows], flat_t[lo : lo + rows])
        for lo in range(0, flat.shape[0], rows)
    ]
    return torch.cat(out).reshape(targets.shape)


def chunked_cross_entropy(
    hidden: Tensor,
    head: Head,
    targets: Tensor,
    *,
    chunk_size: int = 1024,
    vocab_size: int | None = None,
    ignore_index: int = -100,
) -> tuple[Tensor, Tensor]:
    """Summed next-token NLL of ``head(hidden[N, H])`` against ``targets[N]`` -> ``(loss_sum, n_tokens)``.

    ``loss_sum`` is a float32 scalar (sum, not mean, so callers normalise over accumulation / ranks);
    ``n_tokens`` counts targets != ``ignore_index``. This is the generic path (any head callable);
    ``srlm_pl.ops.chunked_cross_entropy`` sends a plain ``nn.Linear`` head to the fused kernel instead.
    """
    check_chunk(chunk_size)

    def chunk_nll(h: Tensor, t: Tensor) -> Tensor:
        logits = head_logits(head, h, vocab_size)  # [n, V]
        return F.cross_entropy(logits, t, ignore_index=ignore_index, reduction="sum")

    total = torch.zeros((), dtype=torch.float32, device=hidden.device)
    for lo in range(0, hidden.shape[0], chunk_size):
        sl = slice(lo, lo + chunk_size)
        total = total + maybe_checkpoint(chunk_nll, hidden[sl], targets[sl])
    return total, (targets != ignore_index).sum()


def chunked_token_logprobs(
    hidden: Tensor,
    head: Head,
    targets: Tensor,
    *,
    temperature: float = 1.0,
    chunk_size: int = 1024,
    with_entropy: bool = False,
    vocab_size: int | None = None,
) -> tuple[Tensor, Tensor | None]:
    """Per-token ``log softmax(head(hidden) / temperature)[target]`` -> ``(logp[N], entropy[N] | None)``.

    The entropy (of the same tempered distribution, in nats) keeps its graph so it can serve as a bonus term.
    Every target must be a valid token id (pad ids are fine: mask them later). This is the generic path;
    ``srlm_pl.ops.chunked_token_logprobs`` sends a plain ``nn.Linear`` head to the fused kernel instead.
    """
    check_chunk(chunk_size)
    check_positive("temperature", temperature)

    def chunk_logp(h: Tensor, t: Tensor) -> Tensor | tuple[Tensor, Tensor]:
        logp_all = (head_logits(head, h, vocab_size) / temperature).log_softmax(-1)  # [n, V]
        logp = logp_all.gather(-1, t[:, None]).squeeze(-1)  # [n]
        if not with_entropy:
            return logp
        return logp, -(logp_all.exp() * logp_all).sum(-1)

    logps, ents = [], []
    for lo in range(0, hidden.shape[0], chunk_size):
        out = maybe_checkpoint(chunk_logp, hidden[lo : lo + chunk_size], targets[lo : lo + chunk_size])
        if with_entropy:
            logps.append(out[0])
            ents.append(out[1])
        else:
            logps.append(out)
    if not logps:
        empty = torch.zeros(0, dtype=torch.float32, device=hidden.device)
        return empty, (empty.clone() if with_entropy else None)
    return torch.cat(logps), (torch.cat(ents) if with_entropy else None)
