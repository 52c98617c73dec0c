"""What one training forward keeps for backward, counted on tensors rather than on the process.

``measure(step, params, vocab)`` runs ``step()`` (a forward returning a scalar loss), then its backward, and reports:

- ``saved_bytes``: unique storages autograd saved for backward, seen by ``torch.autograd.graph.saved_tensors_hooks``
  (keyed by storage, so views of one storage count once). Parameters are left out: they exist whatever the length.
  Under non-reentrant activation checkpointing the hooks see only each checkpointed region's inputs: what the
  region saves is recomputed in backward and never reaches them; tensors a region captures in a closure (a mask
  passed as a keyword) are not saved tensors either, hence the next figure.
- ``held_bytes``: storages allocated during the forward and still alive when it returns (a ``TorchDispatchMode``
  sees every allocation; a weak finalizer on each storage sees it freed): saved tensors, checkpoint inputs and
  anything a closure keeps, such as a dense attention mask.
- ``peak_bytes``: the peak of those live storages over forward and backward, checkpoint recomputation and
  gradients included (the process's own baseline, weights and optimizer state are not counted).
- ``vocab_rows``: the most rows of any tensor whose last dimension is the vocabulary (logits): at most the loss
  chunk on the chunked path, every position with full logits.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass
from typing import Any

import torch
from torch import Tensor
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves


@dataclass
class BackwardMemory:
    saved_bytes: int
    held_bytes: int
    peak_bytes: int
    vocab_rows: int

    def per_token(self, tokens: int) -> dict[str, float]:
        """The byte figures divided by the number of tokens in the batch."""
        return {f"{k}_per_token": v / tokens for k, v in asdict(self).items() if k.endswith("_bytes")}


class LiveStorages(TorchDispatchMode):
    """Counts the bytes of storages allocated while active (and alive), and their peak."""

    def __init__(self, exclude: set[int], vocab: int) -> None:
        super().__init__()
        self.exclude, self.vocab = exclude, vocab
        self.live = self.peak = self.vocab_rows = 0
        self.ids: set[int] = set()

    def __torch_dispatch__(self, func: Any, types: Any, args: tuple = (), kwargs: dict | None = None) -> Any:
        out = func(*args, **(kwargs or {}))
        for t in tree_leaves(out):
            if isinstance(t, Tensor):
                self._track(t)
        return out

    def _track(self, t: Tensor) -> None:
        if t.dim() and t.shape[-1] == self.vocab:
            self.vocab_rows = max(self.vocab_rows, t.numel() // self.vocab)
        storage = t.untyped_storage()
        key, size = id(storage), storage.nbytes()
        if key in self.ids or storage.data_ptr() in self.exclude or size == 0:
            return
        self.ids.add(key)
        self.live += size
        self.peak = max(self.peak, self.live)
        weakref.finalize(storage, self._free, key, size)

    def _free(self, key: int, size: int) -> None:
        self.ids.discard(key)
        self.live -= size


def measure(step: Callable[[], Tensor], params: Iterable[Tensor], vocab: int) -> BackwardMemory:
    """Run ``step()`` and backward from its scalar result under both counters (see the module docstring)."""
    exclude = {p.untyped_storage().data_ptr() for p in params}
    saved: dict[int, int] = {}

    def pack(t: Tensor) -> Tensor:
        storage = t.untyped_storage()
        if storage.data_ptr() not in exclude:
            saved[storage.data_ptr()] = max(saved.get(storage.data_ptr(), 0), storage.nbytes())
        return t

    with LiveStorages(exclude, vocab) as live:
        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            loss = step()
        held = live.live
        loss.backward()
        del loss
    return BackwardMemory(sum(saved.values()), held, live.peak, live.vocab_rows)
