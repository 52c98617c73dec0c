"""A callback that records what a run starts from and what each step sees, for the resume tests.

At ``on_train_start`` (after Lightning restored a checkpoint) it saves the state a resume must restore:
global step, weights, optimizer moments, scheduler step and learning rate, the GRPO rollout buffer and skip
counter, and ``HFExport``'s best score. At every training batch it records the batch's token ids and, for
GRPO, the sampled completions, keyed by (epoch, batch index), so a resumed run can be compared with a
straight run at the same step. Everything goes to ``<out>/<tag>_start.pt`` and ``<out>/<tag>_steps.pt``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from lightning.pytorch.callbacks import Callback

from srlm_pl.callbacks.export import HFExport


class ResumeProbe(Callback):
    def __init__(self, out: str, tag: str) -> None:
        self.out, self.tag = Path(out), tag
        self.steps: dict[str, dict[str, Any]] = {}

    def on_train_start(self, trainer, pl_module) -> None:  # noqa: ANN001
        opt = trainer.optimizers[0]
        sched = trainer.lr_scheduler_configs[0].scheduler if trainer.lr_scheduler_configs else None
        export = next((cb for cb in trainer.callbacks if isinstance(cb, HFExport)), None)
        buffer = getattr(pl_module, "buffer", None)
        state = {
            "global_step": trainer.global_step,
            "weights": {k: v.detach().clone() for k, v in pl_module.model.state_dict().items()},
            "optimizer": {i: {k: v.clone() for k, v in s.items() if torch.is_tensor(v)}
                          for i, s in enumerate(opt.state.values())},
            "scheduler_step": None if sched is None else sched.last_epoch,
            "lr": opt.param_groups[0]["lr"],
            "best": None if export is None else export.best,
            "buffer": None if buffer is None else buffer.state_dict(),
            "skipped_steps": getattr(pl_module, "skipped_steps", None),
        }
        self.out.mkdir(parents=True, exist_ok=True)
        torch.save(state, self.out / f"{self.tag}_start.pt")

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:  # noqa: ANN001
        ids = batch.get("input_ids", batch.get("prompt_ids"))
        ids = ids.tolist() if torch.is_tensor(ids) else ids
        self.steps[f"{trainer.current_epoch}:{batch_idx}"] = {"global_step": trainer.global_step, "ids": ids}

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:  # noqa: ANN001
        samples = getattr(pl_module, "last_samples", None)
        if samples is not None:
            self.steps[f"{trainer.current_epoch}:{batch_idx}"]["completions"] = list(samples["completions"])
        torch.save(self.steps, self.out / f"{self.tag}_steps.pt")
