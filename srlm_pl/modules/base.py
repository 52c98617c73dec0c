"""What every strategy shares: the policy (built in ``configure_model``), optimizer and schedule
injection, hidden states without full-vocabulary logits, and generation-based validation.

Strategies subclass ``PostTrainingModule`` only for this plumbing; their algorithms live in
``losses/``, ``generation/`` and ``rl/`` as plain functions.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import lightning as L
import torch
from lightning.pytorch.cli import OptimizerCallable
from torch import Tensor, nn
from torch.optim import Optimizer
from torch.optim.lr_scheduler import LRScheduler
from torchmetrics import MeanMetric

from srlm_pl.generation.backends import Engine, build_engine
from srlm_pl.generation.config import GenerationConfig
from srlm_pl.generation.engine import SamplingConfig, decode_completions
from srlm_pl.models.forward import completion_positions as completion_positions  # their old home: re-exported
from srlm_pl.models.forward import hidden_states as hidden_states
from srlm_pl.models.forward import lm_head as lm_head
from srlm_pl.models.loading import ModelSpec, count_parameters, load_model, load_tokenizer
from srlm_pl.optim import AdamW, WarmupCosine

SchedulerCallable = Callable[[Optimizer, int], LRScheduler]


@dataclass
class ValGeneration:
    """Generation-based validation: greedy decoding on validation prompts, scored by the math verifier (code-task
    golds: by running the program against the task's tests, ``srlm_pl.verifiers.verify_completions``).

    Args:
        num_prompts: validation prompts decoded per validation run (per process).
        max_new_tokens: completion budget per prompt.
        timeout: verifier deadline per answer, seconds (math; a code program gets the sandbox's default).
    """

    num_prompts: int = 64
    max_new_tokens: int = 256
    timeout: float = 1.0


class PostTrainingModule(L.LightningModule):
    """Base of SFT, distillation and GRPO modules (not used directly)."""

    def __init__(
        self,
        policy: ModelSpec | None = None,
        optimizer: OptimizerCallable = AdamW,
        scheduler: SchedulerCallable = WarmupCosine,
        val_generation: ValGeneration | None = None,
        loss_chunk_size: int = 1024,
        generation: GenerationConfig | None = None,
    ) -> None:
        super().__init__()
        self.policy_spec = policy or ModelSpec()
        self.optimizer_factory = optimizer
        self.scheduler_factory = scheduler
        self.val_generation = val_generation
        self.loss_chunk_size = loss_chunk_size
        self.generation = generation or GenerationConfig()
        self._engines: dict[str, Engine] = {}  # "policy", "teacher": built on first use, never in checkpoints
        self._weights_version, self._synced_version = 0, 0
        self.weight_sync_s, self.engine_load_s = 0.0, 0.0  # seconds pushing weights (until taken); starting it
        self.model: nn.Module | None = None
        self.tokenizer: Any = None
        self.val_accuracy = MeanMetric()
        self._step_clock: float | None = None

    # -- model ---------------------------------------------------------------------------------------
    def configure_model(self) -> None:
        if self.model is not None:
            return
        self.tokenizer = load_tokenizer(self.policy_spec, key="model.init_args.policy")
        self.model = load_model(self.policy_spec, self.tokenizer, trainable=True, key="model.init_args.policy")
        self.shard(self.model)

    def shard(self, model: nn.Module) -> nn.Module:
        """Apply FSDP2 under ``FSDP2Strategy``/``ModelParallelStrategy`` (policy, teacher, reference alike);
        other strategies wrap or place models themselves."""
        from lightning.pytorch.strategies import ModelParallelStrategy

        from srlm_pl.parallel import shard_fsdp2

        strategy = self._trainer.strategy if self._trainer is not None else None
        if isinstance(strategy, ModelParallelStrategy):
            shard_fsdp2(model, self.device_mesh["data_parallel"],
                        reshard_after_forward=getattr(strategy, "reshard_after_forward", True))
        return model

    def full_policy_state_dict(self) -> dict[str, Tensor] | None:
        """The policy's full state dict gathered from a sharded strategy (a collective: call it on every
        rank), or ``None`` when the model is not sharded and can be saved as it is."""
        from srlm_pl.parallel import full_state_dict

        if not self.shards_parameters():
            return None
        return full_state_dict(self.model)

    def shards_parameters(self) -> bool:
        """Whether the trainer's strategy shards the parameters (``srlm_pl.parallel.strategy_shards``); no trainer:
        not sharded."""
        from srlm_pl.parallel import strategy_shards

        return strategy_shards(self._trainer.strategy if self._trainer is not None else None)

    def on_fit_start(self) -> None:
        trainable, total = count_parameters(self.model)
        self.print(f"policy {self.policy_spec.name_or_path}: {trainable:,} trainable of {total:,} parameters")

    def on_train_start(self) -> None:
        # every optimizer step (automatic or manual optimization) moves the policy: the engine re-syncs before its
        # next generation (a callback sampling at batch end included)
        for opt in self.trainer.optimizers:
            if not getattr(opt, "_srlm_counts_steps", False):
                opt.register_step_post_hook(lambda *_: self.policy_moved())
                opt._srlm_counts_steps = True
        # logged here, not in on_fit_start: a resumed run's step counter is restored only by now
        dm = getattr(self.trainer, "datamodule", None)
        if dm is not None and hasattr(dm, "stats") and self.logger is not None:
            self.logger.log_metrics({k: float(v) for k, v in dm.stats().items()}, step=self.global_step)

    def trainable_parameters(self) -> list[nn.Parameter]:
        return [p for p in self.parameters() if p.requires_grad]

    def optimizer_steps_per_batch(self) -> int:
        return 1

    def configure_optimizers(self) -> Any:
        optimizer = self.optimizer_factory(self.trainable_parameters())
        total = int(self.trainer.estimated_stepping_batches) * self.optimizer_steps_per_batch()
        scheduler = self.scheduler_factory(optimizer, max(1, total))
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}

    def optimizer_step(self, *args: Any, **kwargs: Any) -> None:
        """Step, then free the gradients at once (Lightning would free them only after the next forward)."""
        super().optimizer_step(*args, **kwargs)
        for optimizer in self.trainer.optimizers:
            optimizer.zero_grad(set_to_none=True)

    def global_sum(self, value: Tensor) -> Tensor:
        """Sum of a (detached) tensor over all processes (itself with one process)."""
        value = value.detach().clone().float()
        if self._trainer is not None and self.trainer.world_size > 1:
            value = self.trainer.strategy.reduce(value, reduce_op="sum")
        return value

    # -- manual optimization helpers (GRPO) --------------------------------------------------------------
    def grad_norm(self) -> float | None:
        """Total gradient norm before clipping (DTensor-aware); ``None`` under FSDP v1, whose flat-parameter
        shards cannot be normed this way."""
        from lightning.pytorch.strategies import FSDPStrategy

        if isinstance(self.trainer.strategy, FSDPStrategy):
            return None
        grads = [p.grad for p in self.trainable_parameters() if p.grad is not None]
        if not grads:
            return 0.0
        norm = torch.nn.utils.get_total_norm(grads)
        return float(norm.full_tensor() if hasattr(norm, "full_tensor") else norm)

    def clip_grad_norm(self, opt: torch.optim.Optimizer) -> float | None:
        """Clip to ``max_grad_norm`` and return the norm before clipping (as ``grad_norm``). Lightning's
        ``clip_gradients`` is needed for FSDP v1 (flat shards) and fp16 loss scaling, and refuses fused optimizers
        under mixed precision even with bf16, where no gradient is scaled; everywhere else
        ``torch.nn.utils.clip_grad_norm_`` does it (DTensor-aware under FSDP2) and its norm is reused."""
        from lightning.pytorch.strategies import FSDPStrategy

        if isinstance(self.trainer.strategy, FSDPStrategy) or getattr(self.trainer.precision_plugin, "scaler", None):
            norm = self.grad_norm()  # None under FSDP v1
            self.clip_gradients(opt, gradient_clip_val=self.max_grad_norm, gradient_clip_algorithm="norm")
            return norm
        params = [p for p in self.trainable_parameters() if p.grad is not None]
        if not params:
            return 0.0
        norm = torch.nn.utils.clip_grad_norm_(params, self.max_grad_norm)
        return float(norm.full_tensor() if hasattr(norm, "full_tensor") else norm)

    # -- logging helpers ------------------------------------------------------------------------------
    def tokens_per_second(self, n_tokens: int) -> float | None:
        """Tokens/s since the previous call (None on the first call)."""
        now = time.perf_counter()
        rate = None if self._step_clock is None else n_tokens / max(now - self._step_clock, 1e-9)
        self._step_clock = now
        return rate

    def log_lr(self) -> None:
        opt = self.optimizers()
        opt = opt.optimizer if hasattr(opt, "optimizer") else opt
        self.log("lr", opt.param_groups[0]["lr"], on_step=True, prog_bar=False)

    # -- generation ---------------------------------------------------------------------------------------
    def policy_engine(self) -> Engine:
        """The engine that samples from the policy (``generation.backend``), built on first use and given the
        policy's weights again before the first generation after any training batch (time in
        ``weight_sync_s`` until ``take_weight_sync_s``; GRPO logs it as ``time/weight_sync``)."""
        engine = self._engines.get("policy")
        if engine is None:
            engine = self._engines["policy"] = build_engine(self.generation, self.model, self.tokenizer)
            self.engine_load_s = float(getattr(engine, "load_seconds", 0.0))
            self._synced_version = self._weights_version
        elif self._synced_version != self._weights_version:
            self.weight_sync_s += engine.load_weights(self.model)
            self._synced_version = self._weights_version
        return engine

    def take_weight_sync_s(self) -> float:
        """Seconds spent pushing weights into the engine since the last call (a callback's sync included)."""
        seconds, self.weight_sync_s = self.weight_sync_s, 0.0
        return seconds

    def policy_moved(self) -> None:
        """Mark the engine's copy of the policy out of date (called after every optimizer step)."""
        self._weights_version += 1

    def frozen_engine(self, name: str, model: nn.Module) -> Engine:
        """An engine for a frozen model (a teacher): built once, never re-synced."""
        if name not in self._engines:
            self._engines[name] = build_engine(self.generation, model, self.tokenizer)
        return self._engines[name]

    def teardown(self, stage: str) -> None:
        for engine in self._engines.values():
            getattr(engine, "close", lambda: None)()
        self._engines.clear()

    def generate_and_score(self, prompts: list[list[int]], golds: list[str], max_new_tokens: int,
                           timeout: float) -> tuple[list[str], list[bool]]:
        from srlm_pl.verifiers import verify_completions

        out = self.policy_engine().generate(
            prompts, SamplingConfig(max_new_tokens=max_new_tokens, temperature=0.0),
            sync_ranks=self.trainer.world_size > 1 if self._trainer is not None else False)
        texts = decode_completions(self.tokenizer, out)
        verdicts = verify_completions(golds, texts, timeout=timeout)  # code-task golds run in the code sandbox
        return texts, [bool(v) for v in verdicts]

    def validate_by_generation(self, prompts: list[list[int]], golds: list[str], batch_idx: int) -> None:
        cfg = self.val_generation
        if cfg is None or batch_idx * len(prompts) >= cfg.num_prompts:
            return
        take = min(len(prompts), cfg.num_prompts - batch_idx * len(prompts))
        _, correct = self.generate_and_score(prompts[:take], golds[:take], cfg.max_new_tokens, cfg.timeout)
        self.val_accuracy.update(torch.tensor(correct, dtype=torch.float32, device=self.device))

    def on_validation_epoch_end(self) -> None:
        if self.val_generation is not None and self.val_accuracy.update_called:
            self.log("val/accuracy", self.val_accuracy.compute(), prog_bar=True, sync_dist=False)
            self.val_accuracy.reset()
