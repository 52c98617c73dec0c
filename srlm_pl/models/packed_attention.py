"""``attn_implementation: sdpa_packed``: SDPA for packed rows without a dense ``[T, T]`` mask.

A packed row (``data.packing``) holds several examples; ``position_ids`` restart at 0 for each. With plain ``sdpa``,
transformers turns the restarts into a block-diagonal causal mask of shape ``[B, 1, T, T]`` (bool, kept until
backward), and on CPU every layer's SDPA call turns it into a float32 copy that it saves for backward; the kernel
also computes every masked-out block: memory and time grow with ``T**2``. ``sdpa_packed`` builds no mask for such
rows and calls SDPA with ``is_causal=True`` once per example (a segment of the row), so attention memory grows
with ``T`` and no token attends across examples; RoPE still uses the restarted position ids.

Everything else is plain ``sdpa``, mask included: a batch with an ``attention_mask`` (padding, generation), a KV
cache past its first chunk, or a row without restarts (a single causal call). Segments are found from
``position_ids`` the way transformers finds them (``find_packed_sequence_indices``): a new example starts wherever
a position is not its predecessor + 1. Sliding-window layers are refused (their window would need the mask).
On CUDA, ``flash_attention_2`` does the same from the position ids (varlen kernel) and is faster.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn
from transformers import AttentionInterface
from transformers.integrations.sdpa_attention import sdpa_attention_forward
from transformers.masking_utils import ALL_MASK_ATTENTION_FUNCTIONS, sdpa_mask

NAME = "sdpa_packed"


def segments(position_ids: Tensor) -> list[list[tuple[int, int]]]:
    """Per row, the ``[start, end)`` spans of the examples packed into it (a new one wherever a position id is not
    the previous one + 1)."""
    starts = torch.ones_like(position_ids, dtype=torch.bool)
    starts[:, 1:] = position_ids[:, 1:] != position_ids[:, :-1] + 1
    width = position_ids.shape[1]
    out = []
    for row in starts.cpu():
        bounds = row.nonzero().flatten().tolist() + [width]
        out.append(list(zip(bounds[:-1], bounds[1:], strict=True)))
    return out


def packed_mask(**kwargs: Any) -> Tensor | None:
    """The mask factory of ``sdpa_packed``: no mask for a first forward without padding mask (causality and example
    boundaries are applied per segment by ``packed_sdpa_attention``), ``sdpa``'s mask otherwise."""
    first = kwargs.get("attention_mask") is None and kwargs["q_length"] == kwargs["kv_length"]
    if first and isinstance(kwargs.get("q_offset", 0), int) and kwargs.get("q_offset", 0) == 0:
        return None
    return sdpa_mask(**kwargs)


def packed_sdpa_attention(module: nn.Module, query: Tensor, key: Tensor, value: Tensor,
                          attention_mask: Tensor | None, **kwargs: Any) -> tuple[Tensor, None]:
    """Attention of ``query/key/value [B, heads, T, D]`` -> ``([B, T, heads, D], None)`` like ``sdpa``'s; a row with
    position-id restarts is attended segment by segment, each causal on its own."""
    position_ids = kwargs.pop("position_ids", None)
    if attention_mask is not None or position_ids is None or query.shape[2] != key.shape[2]:
        return sdpa_attention_forward(module, query, key, value, attention_mask, **kwargs)
    if kwargs.get("sliding_window") is not None:
        raise ValueError("attn_implementation sdpa_packed does not support sliding-window attention layers "
                         "(model.init_args.policy.attn_implementation: use sdpa or flash_attention_2)")
    position_ids = position_ids.expand(query.shape[0], -1)
    spans = segments(position_ids)
    if all(len(row) == 1 for row in spans):
        return sdpa_attention_forward(module, query, key, value, None, **kwargs)
    rows = []
    for b, row in enumerate(spans):
        parts = [sdpa_attention_forward(module, query[b:b + 1, :, lo:hi], key[b:b + 1, :, lo:hi],
                                        value[b:b + 1, :, lo:hi], None, **kwargs)[0] for lo, hi in row]
        rows.append(torch.cat(parts, dim=1))  # [1, T, heads, D]
    return torch.cat(rows, dim=0), None


def register() -> None:
    """Make ``sdpa_packed`` a valid ``attn_implementation`` (attention and mask factory); idempotent."""
    AttentionInterface.register(NAME, packed_sdpa_attention)
    ALL_MASK_ATTENTION_FUNCTIONS.register(NAME, packed_mask)
