"""Per-token log-probabilities of sampled completions under a model (policy, old policy or reference).

The prompt (left-padded) and completion (right-padded) are concatenated; position ids follow the
attention mask, so padding never shifts positions. Hidden states come from the model's own forward
(``modules.base.hidden_states``: no ``[B, T, V]`` logits) and the LM head is applied in chunks to the
completion positions only (``losses.chunked_token_logprobs``).

GRPO batches hold each prompt G times. With ``share_prompt`` (the default) the prompt rows are
de-duplicated: each distinct prompt runs through the model once with ``use_cache=True``, its KV cache
is indexed out to every row that shares it (an autograd-tracked gather, so the prompt still receives
the gradient of all G completions), and only the completions run on top of it. Log-probs and
gradients equal the concatenated forward's (``tests/rl/test_logprobs.py``); the prompt costs 1/G of the
compute. Models with gradient checkpointing (which turns the cache off in training) use the
concatenated forward.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from srlm_pl.models.forward import contiguous_head_input, forward_params, hidden_states, output_cache
from srlm_pl.ops import chunked_token_logprobs


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
    share_prompt: bool = True,
) -> tuple[Tensor, Tensor | None]:
    """``(logp[B, C], entropy[B, C] | None)``; zero where ``completion_mask`` is 0.

    ``share_prompt``: run each distinct prompt once and reuse its KV cache for every row that repeats it.
    """
    groups = prompt_groups(prompt_ids, prompt_mask) if share_prompt and _can_share(model) else None
    if groups is None:
        hidden = _concatenated_hidden(model, prompt_ids, prompt_mask, completion_ids, completion_mask)
    else:
        hidden = _shared_prompt_hidden(model, prompt_ids, prompt_mask, completion_ids, completion_mask, *groups)
    keep = completion_mask.bool()  # [B, C]
    # a fully masked batch still runs the head on one position (times 0), so every parameter stays in the
    # graph: a DDP rank that joins a step with no tokens must produce (zero) gradients for all of them
    empty = not bool(keep.any())
    sel = keep.clone()
    if empty:
        sel[0, 0] = True
    h = hidden[sel]  # [n, H]: row t predicts completion token t
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


def prompt_groups(prompt_ids: Tensor, prompt_mask: Tensor) -> tuple[Tensor, Tensor] | None:
    """``(first[U], inverse[B])`` for the ``U`` distinct (ids, mask) prompt rows: ``first[u]`` is a row holding
    prompt ``u`` and ``inverse[b]`` the prompt of row ``b``; ``None`` when every row is distinct."""
    key = torch.cat([prompt_ids, prompt_mask.to(prompt_ids.dtype)], dim=1)  # [B, 2P]
    unique, inverse = torch.unique(key, dim=0, return_inverse=True)
    n_rows, n_unique = key.shape[0], unique.shape[0]
    if n_unique == n_rows:
        return None
    rows = torch.arange(n_rows, device=key.device)
    first = torch.full((n_unique,), n_rows, dtype=torch.long, device=key.device)
    first = first.scatter_reduce(0, inverse, rows, reduce="amin")
    return first, inverse


def _can_share(model: nn.Module) -> bool:
    """The prompt's KV cache is needed with gradients: off when gradient checkpointing disables the cache."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    flag = getattr(base, "is_activation_checkpointing", None)  # transformers >= 5.x name
    if flag is None:
        flag = getattr(base, "is_gradient_checkpointing", False)
    return not (torch.is_grad_enabled() and bool(flag))


def _concatenated_hidden(model: nn.Module, prompt_ids: Tensor, prompt_mask: Tensor, completion_ids: Tensor,
                         completion_mask: Tensor) -> Tensor:
    """``[B, C, H]``: hidden state of the position that predicts each completion token, one forward over
    prompt + completion."""

    ids = torch.cat([prompt_ids, completion_ids], dim=1)  # [B, P+C]
    mask = torch.cat([prompt_mask, completion_mask], dim=1).long()  # [B, P+C]
    positions = (mask.cumsum(-1) - 1).clamp(min=0)
    hidden = hidden_states(model, {"input_ids": ids, "attention_mask": mask, "position_ids": positions})
    p, c = prompt_ids.shape[1], completion_ids.shape[1]
    return hidden[:, p - 1: p + c - 1]


def _shared_prompt_hidden(model: nn.Module, prompt_ids: Tensor, prompt_mask: Tensor, completion_ids: Tensor,
                          completion_mask: Tensor, first: Tensor, inverse: Tensor) -> Tensor:
    """Same as ``_concatenated_hidden``, with each distinct prompt run once and its KV cache gathered per row."""

    params = forward_params(model)
    cache_kw = "cache" if "cache" in params else "past_key_values"  # transformers 5.x renamed the kwarg
    u_mask = prompt_mask[first].long()  # [U, P]
    with contiguous_head_input(model):
        out = model(input_ids=prompt_ids[first], attention_mask=u_mask,
                    position_ids=(u_mask.cumsum(-1) - 1).clamp(min=0), use_cache=True, logits_to_keep=1,
                    output_hidden_states=True)
    cache = output_cache(out)
    cache.batch_select_indices(inverse)  # [U, ...] -> [B, ...], differentiable indexing
    last = out.hidden_states[-1][:, -1][inverse]  # [B, H]: the prompt's last position predicts token 0
    mask = torch.cat([prompt_mask, completion_mask], dim=1).long()  # [B, P+C]
    positions = (mask.cumsum(-1) - 1).clamp(min=0)[:, prompt_ids.shape[1]:]  # [B, C]
    with contiguous_head_input(model):
        out = model(input_ids=completion_ids, attention_mask=mask, position_ids=positions, use_cache=True,
                    logits_to_keep=1, output_hidden_states=True, **{cache_kw: cache})
    hidden = out.hidden_states[-1]  # [B, C, H]
    return torch.cat([last[:, None], hidden[:, :-1]], dim=1)
