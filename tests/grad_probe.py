"""A callback for tests: records whether gradients exist before each optimizer step and after each batch."""

from __future__ import annotations

from typing import Any

import lightning as L


class GradProbe(L.Callback):
    def __init__(self) -> None:
        self.before_step: list[bool] = []
        self.after_batch: list[bool] = []

    @staticmethod
    def _any_grad(module: L.LightningModule) -> bool:
        return any(p.grad is not None for p in module.parameters())

    def on_before_optimizer_step(self, trainer: L.Trainer, pl_module: L.LightningModule, optimizer: Any) -> None:
        self.before_step.append(self._any_grad(pl_module))

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, *args: Any) -> None:
        self.after_batch.append(self._any_grad(pl_module))
