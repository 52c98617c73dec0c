"""Keep the LM head's input contiguous when a forward asks for the last position's logits only.

``model(..., logits_to_keep=1)`` hands the LM head ``hidden[:, -1:, :]``, a strided view of ``[B, T, H]``. On CPU
(torch 2.13) a bfloat16 ``F.linear`` on such a 3-D view computes over the whole underlying ``[B, T, H]`` storage:
with a bf16 SmolLM2 head and ``[4, 288]`` tokens it took 214 ms and a transient 216 MiB (``[B, T, V]`` float32)
against 4.4 ms and nothing on the contiguous copy, and the bf16 teacher's whole forward 898 vs 690 ms
(``tools/bench_head_input.py``). float32 inputs (the policy's residual stream under autocast) are unaffected.
A forward pre-hook that copies the ``[B, 1, H]`` slice costs nothing and makes every such call cheap.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from torch import Tensor, nn


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
