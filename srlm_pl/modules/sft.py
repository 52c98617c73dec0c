"""Supervised fine-tuning: next-token cross-entropy on completion tokens only.

Choices: the loss is the token mean over the *global* batch of a step (token counts are summed across
processes), so one process with batch 2B and two with batch B give the same gradient; logits are
computed only at completion positions, in chunks, and recomputed in backward (never a ``[B, T, V]``
float32 tensor). Full fine-tuning, LoRA and QLoRA differ only in the ``policy`` spec.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from lightning.pytorch.cli import OptimizerCallable
from torch import Tensor
from torchmetrics import SumMetric

from srlm_pl.data.collate import prompts_from_batch
from srlm_pl.generation.config import GenerationConfig
from srlm_pl.models.forward import completion_positions, hidden_states, lm_head
from srlm_pl.models.loading import ModelSpec
from srlm_pl.modules.base import PostTrainingModule, SchedulerCallable, ValGeneration
from srlm_pl.ops import chunked_cross_entropy
from srlm_pl.optim import AdamW, WarmupCosine


class SFTModule(PostTrainingModule):
    """Supervised fine-tuning (full, LoRA or QLoRA) with completion-only loss."""

    def __init__(
        self,
        policy: ModelSpec | None = None,
        optimizer: OptimizerCallable = AdamW,
        scheduler: SchedulerCallable = WarmupCosine,
        val_generation: ValGeneration | None = None,
        loss_chunk_size: int = 1024,
        generation: GenerationConfig | None = None,
    ) -> None:
        """
        Args:
            policy: the model to train (hub id, local folder or ``tiny``, the default; LoRA/QLoRA via
                ``lora`` and ``quantization``).
            optimizer: optimizer class and its arguments (default ``srlm_pl.optim.AdamW``).
            scheduler: learning-rate schedule taking ``(optimizer, total_steps)`` (default warmup + cosine).
            val_generation: greedy-decode this many validation prompts and log ``val/accuracy``
                (verifier-scored); ``null`` disables it.
            loss_chunk_size: positions per chunk of the LM head + cross-entropy (memory vs speed).
            generation: the engine that decodes validation prompts (``backend: hf | vllm | auto`` and vLLM's
                settings; see ``srlm_pl.generation.GenerationConfig``).
        """
        super().__init__(policy, optimizer, scheduler, val_generation, loss_chunk_size, generation)
        self.val_loss_sum = SumMetric()
        self.val_tokens = SumMetric()

    def completion_nll(self, batch: dict[str, Tensor]) -> tuple[Tensor, Tensor]:
        """(sum of completion-token NLL, number of completion tokens) for one batch."""
        hidden = hidden_states(self.model, batch)  # [B, T, H]
        mask, targets = completion_positions(batch["labels"])  # [B, T-1], [N]
        return chunked_cross_entropy(hidden[:, :-1][mask], lm_head(self.model), targets,
                                     chunk_size=self.loss_chunk_size, vocab_size=len(self.tokenizer))

    def training_step(self, batch: dict[str, Tensor], batch_idx: int) -> Tensor:
        loss_sum, n_tokens = self.completion_nll(batch)
        global_tokens = self.global_sum(n_tokens).clamp(min=1.0)
        # DDP/FSDP average gradients over ranks: scaling by the world size makes the gradient that of the
        # token mean over the global batch
        loss = loss_sum * self.trainer.world_size / global_tokens
        mean_loss = self.global_sum(loss_sum) / global_tokens  # the global token mean, identical on every rank
        self.log("train/loss", mean_loss, prog_bar=True, on_step=True)
        self.log("train/ppl", torch.exp(mean_loss), on_step=True)
        self.log("train/completion_tokens", global_tokens, on_step=True)
        rate = self.tokens_per_second(batch["num_tokens"])
        if rate is not None:
            self.log("train/tokens_per_s", rate, on_step=True)
        self.log_lr()
        return loss

    def validation_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        loss_sum, n_tokens = self.completion_nll(batch)
        self.val_loss_sum.update(loss_sum.detach().float())
        self.val_tokens.update(n_tokens.float())
        if self.val_generation is not None:
            self.validate_by_generation(prompts_from_batch(batch), batch["answer"], batch_idx)

    def on_validation_epoch_end(self) -> None:
        loss = (self.val_loss_sum.compute() / self.val_tokens.compute().clamp(min=1)).item()
        self.log("val/loss", loss, prog_bar=True)
        self.log("val/ppl", math.exp(min(loss, 50.0)))
        self.val_loss_sum.reset()
        self.val_tokens.reset()
        super().on_validation_epoch_end()
