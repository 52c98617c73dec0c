"""Log sampled completions every k steps: prompt, completion, extracted answer, gold and reward.

Works with any module that sets ``last_samples`` (``GRPOModule`` does after each generation round):
a dict of equal-length lists ``prompts``, ``completions``, ``golds``, ``rewards``. Records are appended
to ``<log_dir>/samples.jsonl`` and, when the logger has a text API (TensorBoard), logged as text.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import lightning as L
from lightning.pytorch.callbacks import Callback

from srlm_pl.verifiers import extract_answer


class SampleLogger(Callback):
    """Write a few of the latest sampled completions every ``every_n_steps`` steps."""

    def __init__(self, every_n_steps: int = 50, num_samples: int = 4, filename: str = "samples.jsonl") -> None:
        """
        Args:
            every_n_steps: optimizer steps between records.
            num_samples: completions recorded each time (the first ones of the batch).
            filename: JSONL file inside the logger's folder (or ``default_root_dir``).
        """
        self.every, self.num_samples, self.filename = every_n_steps, num_samples, filename
        self._last_logged = -1

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        # trainer.log_dir is a collective under distributed strategies: resolve it on every rank, once
        self._path = Path(trainer.log_dir or trainer.default_root_dir) / self.filename

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, *args: Any) -> None:
        samples = getattr(pl_module, "last_samples", None)
        step = trainer.global_step
        if not samples or trainer.global_rank != 0 or step % self.every or step == self._last_logged:
            return
        self._last_logged = step
        records = [{"step": step, "prompt": p, "completion": c, "extracted": extract_answer(c), "gold": g,
                    "reward": r}
                   for p, c, g, r in list(zip(samples["prompts"], samples["completions"], samples["golds"],
                                              samples["rewards"], strict=True))[: self.num_samples]]
        path = self._path
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("a", encoding="utf-8") as f:
            for r in records:
                f.write(json.dumps(r) + "\n")
        experiment = getattr(trainer.logger, "experiment", None)
        if hasattr(experiment, "add_text"):
            text = "\n\n".join(f"**reward {r['reward']:.2f}** gold `{r['gold']}` got `{r['extracted']}`\n\n"
                               f"{r['completion']}" for r in records)
            experiment.add_text("samples", text, global_step=step)
