"""Fitting a module for a fixed number of steps the way a user's run would (Lightning ``Trainer``, no logger,
no checkpoints), under the step timer; and the small settings every step worker shares."""

from __future__ import annotations

import time
from types import SimpleNamespace
from typing import Any

from benchlib.timing import step_timer


def setup_worker(cfg: SimpleNamespace) -> None:
    """Seed, and the number of torch threads when asked (``--threads``)."""
    import torch

    torch.manual_seed(0)
    if getattr(cfg, "threads", 0):
        torch.set_num_threads(cfg.threads)


def fit(module: Any, data: Any, *, steps: int, device: str = "cpu", precision: str = "bf16-mixed",
        metrics: tuple[str, ...] = (), callbacks: tuple[Any, ...] = ()) -> tuple[Any, float]:
    """Run ``steps`` training steps of ``module`` on ``data`` (a DataModule or a DataLoader) under a ``StepTimer``;
    returns the timer and the wall time of the whole fit."""
    import lightning as L

    timer = step_timer(device, metrics)
    trainer = L.Trainer(accelerator="gpu" if device.startswith("cuda") else "cpu", devices=1, precision=precision,
                        max_steps=steps, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                        enable_model_summary=False, callbacks=[timer, *callbacks], num_sanity_val_steps=0,
                        limit_val_batches=0)
    if device.startswith("cuda"):
        import torch

        torch.cuda.reset_peak_memory_stats()
    t0 = time.perf_counter()
    if isinstance(data, L.LightningDataModule):
        trainer.fit(module, datamodule=data)
    else:
        trainer.fit(module, train_dataloaders=data)
    return timer, time.perf_counter() - t0
