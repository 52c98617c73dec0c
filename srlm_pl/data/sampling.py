"""A sampler and DataLoader that resume mid-epoch exactly where a checkpoint was taken.

``ResumableSampler`` is a ``DistributedSampler`` (so Lightning does not replace it): each epoch's order
is a pure function of ``(seed, epoch)``, split across ranks, and it can skip the samples a checkpointed
run had already consumed. ``ResumableDataLoader`` implements ``state_dict``/``load_state_dict``, which
Lightning saves in every checkpoint; the position comes from the trainer's own batch progress (the
batches *processed* in this epoch), not from counting yields, which prefetching would skew.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

from torch.utils.data import DataLoader, DistributedSampler


class ResumableSampler(DistributedSampler):
    """Seeded per-epoch shuffle, split across ranks, with a one-shot skip for mid-epoch resume."""

    def __init__(self, num_items: int, *, num_replicas: int = 1, rank: int = 0, shuffle: bool = True,
                 seed: int = 0, drop_last: bool = False) -> None:
        super().__init__(range(num_items), num_replicas=num_replicas, rank=rank, shuffle=shuffle, seed=seed,
                         drop_last=drop_last)
        self.skip = 0

    def __iter__(self) -> Iterator[int]:
        indices = list(super().__iter__())
        skip, self.skip = self.skip, 0
        return iter(indices[skip:])


class ResumableDataLoader(DataLoader):
    """A DataLoader whose checkpointed state is (epoch, batches processed in it)."""

    def __init__(self, *args: Any, progress: Callable[[], tuple[int, int]] | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._progress = progress

    def state_dict(self) -> dict[str, int]:
        epoch, done = self._progress() if self._progress is not None else (0, 0)
        if done >= len(self):  # saved at the end of an epoch: the next one starts from its beginning
            epoch, done = epoch + 1, 0
        return {"epoch": epoch, "batches_done": done}

    def load_state_dict(self, state: dict[str, int]) -> None:
        sampler = self.sampler
        if not isinstance(sampler, ResumableSampler):
            raise TypeError("ResumableDataLoader needs a ResumableSampler")
        sampler.set_epoch(state["epoch"])
        sampler.skip = state["batches_done"] * (self.batch_size or 1)
