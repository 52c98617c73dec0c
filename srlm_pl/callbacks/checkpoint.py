"""Checkpoints in a fixed folder, so ``fit --ckpt_path last`` finds them when a run is restarted.

Lightning's ``ModelCheckpoint`` defaults to ``<log_dir>/checkpoints``, and the log dir gets a new
``version_N`` on every run: a restarted run would not see the interrupted run's ``last.ckpt``. This
subclass defaults to ``<trainer.default_root_dir>/checkpoints`` and always keeps ``last.ckpt``.

The default folder must be known *before* ``setup``: ``Trainer.fit(ckpt_path="last")`` looks for
``last.ckpt`` (through ``ModelCheckpoint._find_last_checkpoints``) before any callback hook runs, so the
folder is resolved there too, not only in ``setup``. ``check_resume`` is the CLI's guard around it: a
``--ckpt_path last`` that finds nothing is an error naming the folders searched (Lightning would only warn
and silently start over), and a fresh run into a folder that already holds ``last.ckpt`` warns once.
"""

from __future__ import annotations

from pathlib import Path

import lightning as L
from lightning.pytorch.callbacks import ModelCheckpoint, OnExceptionCheckpoint
from lightning.pytorch.utilities import rank_zero_warn


class ResumeError(RuntimeError):
    """``--ckpt_path last`` found no checkpoint; the message names the folders searched."""


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

    def resolve_dirpath(self, trainer: L.Trainer) -> Path:
        """Fix the default folder (``<default_root_dir>/checkpoints``) on first use and return it."""
        if self.dirpath is None:
            self.dirpath = str(Path(trainer.default_root_dir) / "checkpoints")
        return Path(self.dirpath)

    def _find_last_checkpoints(self, trainer: L.Trainer) -> set[str]:
        # Lightning calls this to resolve ckpt_path="last", before setup: resolve the default folder first.
        self.resolve_dirpath(trainer)
        return super()._find_last_checkpoints(trainer)

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        self.resolve_dirpath(trainer)
        super().setup(trainer, pl_module, stage)


def checkpoint_dirs(trainer: L.Trainer) -> list[Path]:
    """The folders the trainer's checkpoint callbacks write to (and ``"last"`` is looked up in)."""
    dirs = []
    for cb in trainer.checkpoint_callbacks:
        if isinstance(cb, Checkpoint):
            dirs.append(cb.resolve_dirpath(trainer))
        elif isinstance(cb, ModelCheckpoint):  # a plain ModelCheckpoint resolves its folder from the logger
            dirs.append(Path(cb.dirpath) if cb.dirpath else Path(trainer.log_dir or trainer.default_root_dir)
                        / "checkpoints")
    return dirs


def exception_checkpoints(trainer: L.Trainer) -> set[str]:
    """Checkpoints written by ``OnExceptionCheckpoint`` callbacks, which Lightning also resumes from as "last"."""
    return {str(cb.ckpt_path) for cb in trainer.callbacks
            if isinstance(cb, OnExceptionCheckpoint) and Path(cb.ckpt_path).exists()}


def last_checkpoints(trainer: L.Trainer) -> set[str]:
    """Every checkpoint that ``fit(ckpt_path="last")`` would choose from: ``last*.ckpt`` (a file, or a folder of
    shards) of the checkpoint callbacks, and ``OnExceptionCheckpoint``'s file."""
    found = exception_checkpoints(trainer)
    for cb in trainer.checkpoint_callbacks:
        if isinstance(cb, ModelCheckpoint):
            found |= cb._find_last_checkpoints(trainer)
    return found


def check_resume(trainer: L.Trainer, ckpt_path: str | Path | None) -> None:
    """Refuse ``ckpt_path="last"`` when nothing is there; warn once when a fresh run starts over a checkpoint."""
    if ckpt_path == "last":
        if not trainer.checkpoint_callbacks and not any(isinstance(cb, OnExceptionCheckpoint)
                                                        for cb in trainer.callbacks):
            raise ResumeError("--ckpt_path last: this run has no checkpoint callback (trainer.enable_checkpointing "
                              "is false), so there is no last checkpoint to resume from")
        if not last_checkpoints(trainer):
            searched = ", ".join(str(d) for d in checkpoint_dirs(trainer)) or "(no checkpoint folder)"
            hint = ""
            if any(type(cb) is ModelCheckpoint and cb.dirpath is None for cb in trainer.checkpoint_callbacks):
                hint = (" A ModelCheckpoint without dirpath writes into each run's new logs/version_N folder: set its "
                        "dirpath, or use srlm_pl.callbacks.Checkpoint.")
            raise ResumeError(f"--ckpt_path last: no last.ckpt in {searched}; nothing to resume (drop --ckpt_path "
                              "to start a fresh run, or point trainer.default_root_dir at the interrupted run)." + hint)
    elif ckpt_path is None and trainer.checkpoint_callbacks:
        if exception_checkpoints(trainer) or getattr(trainer._checkpoint_connector, "_hpc_resume_path", None):
            return  # Lightning resumes these by itself (OnExceptionCheckpoint, a SLURM requeue's hpc checkpoint)
        old = sorted(last_checkpoints(trainer))
        if old:
            rank_zero_warn(f"{old[0]} is from an earlier run: starting over (its checkpoints will be overwritten); "
                           "pass --ckpt_path last to resume it instead")
