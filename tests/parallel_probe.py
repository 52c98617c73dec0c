"""Probes for the multi-process tests (referenced by class_path from configs run as subprocesses): each rank
writes what it saw to ``<out>/<name>_rank<R>.json``, so the test can check the path under test really ran.

- ``ShardProbe``: whether a frozen model (the distillation teacher, the GRPO reference) has DTensor parameters
  at the start of training (and how many still are at the end), their local and full sizes on this rank, and
  how many forwards it ran.
- ``GRPOProbe``: every rollout the GRPO module trained on (rows, completion tokens, non-zero advantages,
  reference log-probs), optimizer steps, ``global_step``, skipped steps and a checksum of the parameters.
- ``RankSignal``: a reward with variance in every group on the listed ranks, and a constant elsewhere.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import lightning as L
import torch
from torch import nn


def _rank() -> int:
    dist = torch.distributed
    return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0


def _write(out: str, name: str, rank: int, data: dict[str, Any]) -> None:
    Path(out).mkdir(parents=True, exist_ok=True)
    (Path(out) / f"{name}_rank{rank}.json").write_text(json.dumps(data))


def _local(p: torch.Tensor) -> torch.Tensor:
    return p.to_local() if hasattr(p, "to_local") else p


class RankSignal:
    """Rewards 0, 1, 0, 1, ... on the ranks in ``signal_ranks`` (every group of an even size has variance), and
    0 everywhere on the other ranks (every group has zero variance); after ``signal_calls`` calls (batches), 0 on
    every rank."""

    name = "rank_signal"

    def __init__(self, signal_ranks: list[int], signal_calls: int | None = None) -> None:
        self.signal_ranks, self.signal_calls = list(signal_ranks), signal_calls
        self.calls = 0

    def __call__(self, completions: Sequence[str], golds: Sequence[str]) -> list[float]:
        self.calls += 1
        if _rank() in self.signal_ranks and (self.signal_calls is None or self.calls <= self.signal_calls):
            return [float(i % 2) for i in range(len(completions))]
        return [0.0] * len(completions)


class ShardProbe(L.Callback):
    """Records whether ``target`` (``teacher``: ``DistillModule.teacher``; ``reference``: GRPO's reference
    model; ``rl_teacher``: GRPO's teacher) is sharded at the start of training, and counts its forwards."""

    def __init__(self, out: str, target: str) -> None:
        self.out, self.target = out, target
        self.forwards = 0
        self.info: dict[str, Any] = {}

    def _model(self, pl_module: L.LightningModule) -> nn.Module | None:
        if self.target == "teacher":
            return pl_module.teacher
        held = getattr(pl_module, "_teacher" if self.target == "rl_teacher" else "_reference", [])
        return held[0] if held else None

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        from torch.distributed.tensor import DTensor

        model = self._model(pl_module)
        if model is None:
            self.info = {"present": False}
            return
        params = list(model.parameters())
        self.info = {"present": True, "num_params": len(params),
                     "dtensor": sum(isinstance(p, DTensor) for p in params),
                     "local_numel": sum(_local(p).numel() for p in params),
                     "full_numel": sum(p.numel() for p in params),
                     "requires_grad": sum(p.requires_grad for p in params)}

        def count(*_: Any) -> None:
            self.forwards += 1

        model.register_forward_hook(count)

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        from torch.distributed.tensor import DTensor

        model = self._model(pl_module)
        end = None if model is None else sum(isinstance(p, DTensor) for p in model.parameters())
        _write(self.out, self.target, trainer.global_rank, {**self.info, "forwards": self.forwards,
                                                             "dtensor_at_end": end})


class GRPOProbe(L.Callback):
    """Spies on ``GRPOModule.attach_logprobs`` (every rollout that is trained on passes through it once) and
    counts optimizer steps on this rank."""

    def __init__(self, out: str) -> None:
        self.out = out
        self.rollouts: list[dict[str, Any]] = []
        self.optimizer_steps = 0

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        original = pl_module.attach_logprobs

        def spy(rollout: Any) -> Any:
            out = original(rollout)
            ref = out.ref_logp
            self.rollouts.append({
                "rows": int(rollout.num_rows), "tokens": int(rollout.completion_mask.sum()),
                "nonzero_advantages": int((rollout.advantages != 0).sum()),
                "ref_logp": None if ref is None else {"finite": bool(torch.isfinite(ref).all()),
                                                      "numel": int(ref.numel())}})
            return out

        pl_module.attach_logprobs = spy

    def on_before_optimizer_step(self, trainer: L.Trainer, pl_module: L.LightningModule, optimizer: Any) -> None:
        self.optimizer_steps += 1

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        checksum = sum(float(_local(p).detach().double().sum()) for p in pl_module.parameters())
        _write(self.out, "steps", trainer.global_rank, {
            "global_step": trainer.global_step, "optimizer_steps": self.optimizer_steps,
            "skipped_steps": pl_module.skipped_steps, "rollouts": self.rollouts, "param_checksum": checksum})
