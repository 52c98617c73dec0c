"""Checkpoints in a fixed folder, so ``fit --ckpt_path last`` finds them when a run is restarted.

Lightning's ``ModelCheckpoint`` defaults to ``<log_dir>/checkpoints``, and the log dir gets a new
``version_N`` on every run: a restarted run would not see the interrupted run's ``last.ckpt``. This
subclass defaults to ``<trainer.default_root_dir>/checkpoints`` and always keeps ``last.ckpt``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import lightning as L
from lightning.pytorch.callbacks import ModelCheckpoint


class Checkpoint(ModelCheckpoint):
    """``ModelCheckpoint`` with ``save_last`` on and an unversioned default folder."""

    def __init__(self, dirpath: str | None = None, every_n_train_steps: int | None = None,
                 save_top_k: int = 1, monitor: str | None = None, mode: str = "min", **kwargs: Any) -> None:
        """
        Args:
            dirpath: checkpoint folder (default ``<trainer.default_root_dir>/checkpoints``).
            every_n_train_steps: also save every n optimizer steps (``null``: at epoch ends / validation).
            save_top_k: best checkpoints to keep by ``monitor`` (with ``monitor: null``, the latest).
            monitor: metric to rank checkpoints by.
            mode: ``min`` or ``max`` for ``monitor``.
        """
        kwargs.setdefault("save_last", True)
        super().__init__(dirpath=dirpath, every_n_train_steps=every_n_train_steps, save_top_k=save_top_k,
                         monitor=monitor, mode=mode, **kwargs)

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        if self.dirpath is None:
            self.dirpath = str(Path(trainer.default_root_dir) / "checkpoints")
        super().setup(trainer, pl_module, stage)
