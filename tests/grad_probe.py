"""A callback for tests: whether gradients exist (and their norm) before each optimizer step and after each batch."""

from __future__ import annotations

from typing import Any

import lightning as L
import torch


class GradProbe(L.Callback):
    def __init__(self) -> None:
        self.before_step: list[bool] = []
        self.after_batch: list[bool] = []
        self.norms: list[float] = []  # total gradient norm as the optimizer sees it (after any clipping)

    @staticmethod
    def _any_grad(module: L.LightningModule) -> bool:
        return any(p.grad is not None for p in module.parameters())

    def on_before_optimizer_step(self, trainer: L.Trainer, pl_module: L.LightningModule, optimizer: Any) -> None:
        self.before_step.append(self._any_grad(pl_module))
        grads = [p.grad for p in pl_module.parameters() if p.grad is not None]
        self.norms.append(float(torch.nn.utils.get_total_norm(grads)) if grads else 0.0)

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, *args: Any) -> None:
        self.after_batch.append(self._any_grad(pl_module))
