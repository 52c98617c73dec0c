"""The one home of model-forward helpers shared by modules, generation, log-probs, the teacher and tools.

- ``hidden_states``: final hidden states through the model's own forward, LM head on the last position only.
- ``lm_head``, ``completion_positions``: the head module and the next-token target positions of a batch.
- ``eos_token_ids``: every token that ends a completion (tokenizer and generation config), for every generator.
- ``forward_params``, ``output_cache``, ``positions``: what a forward accepts, its KV cache, position ids.
- ``contiguous_head_input``: ``model(..., logits_to_keep=1)`` hands the LM head ``hidden[:, -1:, :]``, a strided
  view of ``[B, T, H]``; on CPU a bfloat16 ``F.linear`` on such a 3-D view computes over the whole underlying
  storage (``tools/bench.py ops`` measures it). A forward pre-hook that copies the ``[B, 1, H]`` slice costs
  nothing and makes every such call cheap; float32 inputs are unaffected.
"""

from __future__ import annotations

import inspect
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from torch import Tensor, nn

from srlm_pl.models.loading import unwrap_peft


def _contiguous(module: nn.Module, args: tuple[Any, ...]) -> tuple[Any, ...] | None:
    if args and isinstance(args[0], Tensor) and not args[0].is_contiguous():
        return (args[0].contiguous(), *args[1:])
    return None


@contextmanager
def contiguous_head_input(model: nn.Module) -> Iterator[None]:
    """While active, the model's output embedding (LM head) receives a contiguous input tensor.

    Only for the duration of one forward: a permanent hook would make the lean decoder fall back to the HF loop.
    """
    get = getattr(model, "get_output_embeddings", None)
    head = get() if callable(get) else None
    if not isinstance(head, nn.Module):
        yield
        return
    handle = head.register_forward_pre_hook(_contiguous)
    try:
        yield
    finally:
        handle.remove()


def hidden_states(model: nn.Module, batch: dict[str, Tensor]) -> Tensor:
    """Final (normed) hidden states ``[B, T, H]`` through the model's own forward, with the LM head
    evaluated on the last position only, so no ``[B, T, V]`` logits are ever materialised."""
    with contiguous_head_input(model):
        out = model(input_ids=batch["input_ids"], attention_mask=batch.get("attention_mask"),
                    position_ids=batch.get("position_ids"), use_cache=False, logits_to_keep=1,
                    output_hidden_states=True)
    return out.hidden_states[-1]


def lm_head(model: nn.Module) -> nn.Module:
    return model.get_output_embeddings()


def completion_positions(labels: Tensor) -> tuple[Tensor, Tensor]:
    """Boolean mask of positions ``t`` whose next token ``labels[t+1]`` is a target, and those targets."""
    mask = labels[:, 1:] != -100  # [B, T-1]
    return mask, labels[:, 1:][mask]


def eos_token_ids(tokenizer: Any, model: nn.Module | None = None) -> list[int]:
    """Every token id that ends a completion: the tokenizer's EOS, then the model's ``generation_config.eos_token_id``
    (an int or a list; Qwen2.5-Instruct stops at both ``<|im_end|>`` and ``<|endoftext|>``), through a peft wrapper.

    Deduplicated, first occurrence kept (tokenizer first), ``None`` dropped. Every generation call site uses it.
    """
    candidates: list[Any] = [getattr(tokenizer, "eos_token_id", None)]
    if model is not None:
        cfg = getattr(unwrap_peft(model), "generation_config", None)
        extra = getattr(cfg, "eos_token_id", None) if cfg is not None else None
        candidates += list(extra) if isinstance(extra, list | tuple) else [extra]
    ids: list[int] = []
    for i in candidates:
        if i is not None and int(i) not in ids:
            ids.append(int(i))
    return ids


def forward_params(model: nn.Module) -> set[str]:
    """Parameter names of the underlying HF model's forward (through a peft wrapper); empty if unknown."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    try:
        return set(inspect.signature(base.forward).parameters)
    except (TypeError, ValueError):
        return set()


def output_cache(out: Any) -> Any:
    cache = out.get("cache") if hasattr(out, "get") else None  # transformers >= 5.x name
    return cache if cache is not None else out.past_key_values


def positions(mask: Tensor) -> Tensor:
    return (mask.cumsum(-1) - 1).clamp(min=0)  # [N, L]
