"""Checkpoints in a fixed folder, so ``fit --ckpt_path last`` finds them when a run is restarted.

Lightning's ``ModelCheckpoint`` defaults to ``<log_dir>/checkpoints``, and the log dir gets a new
``version_N`` on every run: a restarted run would not see the interrupted run's ``last.ckpt``. This
subclass defaults to ``<trainer.default_root_dir>/checkpoints`` and always keeps ``last.ckpt``.
"""

from __future__ import annotations

from pathlib import Path

import lightning as L
from lightning.pytorch.callbacks import ModelCheckpoint


class Checkpoint(ModelCheckpoint):
    """``ModelCheckpoint`` with ``save_last`` on and an unversioned default folder."""

    def __init__(self, dirpath: str | None = None, every_n_train_steps: int | None = None,
                 every_n_epochs: int | None = None, save_top_k: int = 1, monitor: str | None = None,
                 mode: str = "min", filename: str | None = None, save_last: bool = True) -> None:
        """
        Args:
            dirpath: checkpoint folder (default ``<trainer.default_root_dir>/checkpoints``).
            every_n_train_steps: save every n optimizer steps (``null``: at epoch ends / validation).
            every_n_epochs: save every n epochs.
            save_top_k: best checkpoints to keep by ``monitor`` (with ``monitor: null``, the latest).
            monitor: metric to rank checkpoints by.
            mode: ``min`` or ``max`` for ``monitor``.
            filename: checkpoint file name pattern (Lightning's default when ``null``).
            save_last: also keep ``last.ckpt``, which ``--ckpt_path last`` resumes from.
        """
        super().__init__(dirpath=dirpath, filename=filename, monitor=monitor, mode=mode, save_top_k=save_top_k,
                         every_n_train_steps=every_n_train_steps, every_n_epochs=every_n_epochs,
                         save_last=save_last)

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        if self.dirpath is None:
            self.dirpath = str(Path(trainer.default_root_dir) / "checkpoints")
        super().setup(trainer, pl_module, stage)
