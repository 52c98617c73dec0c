"""Optimizer and learning-rate schedules selectable by ``class_path``.

``AdamW`` is ``torch.optim.AdamW`` with post-training defaults. Schedules take ``(optimizer,
total_steps)``: the module supplies ``total_steps`` (the trainer's estimated optimizer steps), so a
config never has to repeat it.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

import torch
from torch.optim.lr_scheduler import LambdaLR


class AdamW(torch.optim.AdamW):
    """AdamW with defaults for fine-tuning small LMs."""

    def __init__(self, params: Iterable, lr: float = 2e-5, betas: tuple[float, float] = (0.9, 0.999),
                 eps: float = 1e-8, weight_decay: float = 0.0, fused: bool | None = None) -> None:
        """
        Args:
            params: parameters (supplied by the module).
            lr: peak learning rate (the paper's full SFT: 4e-5; LoRA: 1e-4; GRPO: 1e-6).
            betas: Adam moment decay rates.
            eps: Adam epsilon.
            weight_decay: decoupled weight decay.
            fused: use the fused kernel (``null``: torch decides).
        """
        super().__init__(params, lr=lr, betas=betas, eps=eps, weight_decay=weight_decay, fused=fused)


def _warmup_steps(warmup: float, total_steps: int) -> int:
    return int(warmup) if warmup >= 1 else int(round(warmup * total_steps))


class WarmupCosine(LambdaLR):
    """Linear warmup from 0 to the peak, then cosine decay to ``min_lr_ratio`` × peak at ``total_steps``."""

    def __init__(self, optimizer: torch.optim.Optimizer, total_steps: int, warmup: float = 0.03,
                 min_lr_ratio: float = 0.0) -> None:
        """
        Args:
            optimizer: the optimizer (supplied by the module).
            total_steps: optimizer steps of the whole run (supplied by the module).
            warmup: warmup length: a fraction of ``total_steps`` when < 1, else a number of steps.
            min_lr_ratio: final learning rate as a fraction of the peak.
        """
        self.total_steps = max(1, int(total_steps))
        self.warmup_steps = _warmup_steps(warmup, self.total_steps)
        self.min_lr_ratio = min_lr_ratio
        super().__init__(optimizer, self._factor)

    def _factor(self, step: int) -> float:
        if step < self.warmup_steps:
            return (step + 1) / (self.warmup_steps + 1)
        progress = min(1.0, (step - self.warmup_steps) / max(1, self.total_steps - self.warmup_steps))
        return self.min_lr_ratio + (1 - self.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress))


class WarmupConstant(LambdaLR):
    """Linear warmup, then a constant learning rate (common for GRPO)."""

    def __init__(self, optimizer: torch.optim.Optimizer, total_steps: int, warmup: float = 0.0) -> None:
        """
        Args:
            optimizer: the optimizer (supplied by the module).
            total_steps: optimizer steps of the whole run (supplied by the module).
            warmup: warmup length: a fraction of ``total_steps`` when < 1, else a number of steps.
        """
        self.warmup_steps = _warmup_steps(warmup, max(1, int(total_steps)))
        super().__init__(optimizer, self._factor)

    def _factor(self, step: int) -> float:
        return (step + 1) / (self.warmup_steps + 1) if step < self.warmup_steps else 1.0
