"""Per-token log-probabilities of sampled completions under a model (policy, old policy or reference).

The prompt (left-padded) and completion (right-padded) are concatenated; position ids follow the
attention mask, so padding never shifts positions. Hidden states come from the model's own forward
(``modules.base.hidden_states``: no ``[B, T, V]`` logits) and the LM head is applied in chunks to the
completion positions only (``losses.chunked_token_logprobs``).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from srlm_pl.losses import chunked_token_logprobs


def completion_logprobs(
    model: nn.Module,
    prompt_ids: Tensor,
    prompt_mask: Tensor,
    completion_ids: Tensor,
    completion_mask: Tensor,
    *,
    temperature: float = 1.0,
    chunk_size: int = 1024,
    vocab_size: int | None = None,
    with_entropy: bool = False,
) -> tuple[Tensor, Tensor | None]:
    """``(logp[B, C], entropy[B, C] | None)``; zero where ``completion_mask`` is 0."""
    from srlm_pl.modules.base import hidden_states

    ids = torch.cat([prompt_ids, completion_ids], dim=1)  # [B, P+C]
    mask = torch.cat([prompt_mask, completion_mask], dim=1).long()  # [B, P+C]
    positions = (mask.cumsum(-1) - 1).clamp(min=0)
    hidden = hidden_states(model, {"input_ids": ids, "attention_mask": mask, "position_ids": positions})
    p, c = prompt_ids.shape[1], completion_ids.shape[1]
    keep = completion_mask.bool()  # [B, C]
    # a fully masked batch still runs the head on one position (times 0), so every parameter stays in the
    # graph: a DDP rank that joins a step with no tokens must produce (zero) gradients for all of them
    empty = not bool(keep.any())
    sel = keep.clone()
    if empty:
        sel[0, 0] = True
    h = hidden[:, p - 1: p + c - 1][sel]  # [n, H]: position t predicts completion token t
    head = model.get_output_embeddings()
    logp_sel, ent_sel = chunked_token_logprobs(h, head, completion_ids[sel], temperature=temperature,
                                               chunk_size=chunk_size, with_entropy=with_entropy,
                                               vocab_size=vocab_size)
    if empty:
        logp_sel = logp_sel * 0.0
        ent_sel = ent_sel * 0.0 if ent_sel is not None else None
    logp = torch.zeros(completion_ids.shape, dtype=torch.float32, device=hidden.device)
    logp = logp.masked_scatter(sel, logp_sel)
    entropy = None
    if with_entropy and ent_sel is not None:
        entropy = torch.zeros_like(logp).masked_scatter(sel, ent_sel)
    return logp, entropy
