"""Export the policy as a Hugging Face folder: at the end of fit and whenever a monitored metric improves.

Layout under ``dirpath`` (default ``<trainer.default_root_dir>/export``):
``final/`` (end of fit) and ``best/`` (best ``monitor`` so far), each loadable with
``AutoModelForCausalLM.from_pretrained`` (LoRA merged) or, with ``merge_lora: false``, as a peft adapter;
each holds the tokenizer, the run's config (``srlm_config.yaml``) and ``export_info.json``.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any, Literal

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback

from srlm_pl.models.loading import export_hf, load_model


class HFExport(Callback):
    """Write the trained policy as a Hugging Face model folder."""

    def __init__(self, dirpath: str | None = None, merge_lora: bool = True, monitor: str | None = None,
                 mode: Literal["max", "min"] = "max", save_final: bool = True) -> None:
        """
        Args:
            dirpath: export root (default ``<trainer.default_root_dir>/export``).
            merge_lora: write LoRA merged into the base weights (a plain model); ``false`` writes the adapter.
            monitor: metric whose improvement triggers an export to ``best/`` (e.g. ``val/accuracy``);
                ``null`` disables best exports.
            mode: ``max`` or ``min``: which direction of ``monitor`` is better.
            save_final: export to ``final/`` when fit ends.
        """
        self.dirpath, self.merge_lora, self.monitor, self.mode = dirpath, merge_lora, monitor, mode
        self.save_final = save_final
        self.best: float | None = None

    def root(self, trainer: L.Trainer) -> Path:
        return Path(self.dirpath) if self.dirpath else Path(trainer.default_root_dir) / "export"

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        self._log_dir = trainer.log_dir  # a collective under distributed strategies: resolve it on every rank

    def export(self, trainer: L.Trainer, module: L.LightningModule, name: str, info: dict[str, Any]) -> None:
        state_dict = None
        full_state = getattr(module, "full_policy_state_dict", None)
        if callable(full_state):  # sharded strategies gather a full state dict (collective: all ranks)
            state_dict = full_state()
        if trainer.global_rank != 0:
            return
        out = self.root(trainer) / name
        if out.exists():
            shutil.rmtree(out)
        model = module.model
        if state_dict is not None:  # sharded run: rebuild an unsharded copy from the gathered weights
            model = load_model(module.policy_spec, module.tokenizer, trainable=True)
            model.load_state_dict(state_dict)
        export_hf(model, module.tokenizer, out, merge_lora=self.merge_lora)
        log_dir = getattr(self, "_log_dir", None)
        config = Path(log_dir) / "config.yaml" if log_dir else None
        if config is not None and config.is_file():
            shutil.copy(config, out / "srlm_config.yaml")
        info = {"global_step": trainer.global_step, "epoch": trainer.current_epoch, **info}
        (out / "export_info.json").write_text(json.dumps(info, indent=2) + "\n")

    def on_validation_end(self, trainer: L.Trainer, module: L.LightningModule) -> None:
        if self.monitor is None or trainer.sanity_checking or self.monitor not in trainer.callback_metrics:
            return
        value = float(trainer.callback_metrics[self.monitor])
        better = self.best is None or (value > self.best if self.mode == "max" else value < self.best)
        if better and not torch.isnan(torch.tensor(value)):
            self.best = value
            self.export(trainer, module, "best", {"monitor": self.monitor, "score": value})

    def on_fit_end(self, trainer: L.Trainer, module: L.LightningModule) -> None:
        if self.save_final:
            self.export(trainer, module, "final", {})

    def state_dict(self) -> dict[str, Any]:
        return {"best": self.best}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.best = state_dict.get("best")
