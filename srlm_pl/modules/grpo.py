"""GRPO: reinforcement learning with verifiable rewards, a rollout buffer and the GRPO family of losses.

Each training step (one batch of prompts):

1. generate ``num_generations`` (G) completions per prompt (KV cache, seeded sampling);
2. score them with the reward functions (weighted sum; a failing function falls back and is counted);
3. drop groups whose rewards have zero variance (without a teacher term they carry no gradient) and, with
   ``dynamic_sampling``, refill from fresh prompts up to ``max_refill_rounds`` times (DAPO);
4. compute group advantages (``advantage``: group std, mean-only as in Dr. GRPO, batch std, RLOO's
   leave-one-out baseline or REINFORCE++-baseline; the batch modes over the kept groups of every process);
5. store old log-probs (only when the policy moves before the last minibatch: ``mu > 1`` or
   ``num_minibatches > 1``), reference log-probs (only when ``beta > 0``) and teacher
   log-probs (only with a ``teacher``) in the rollout buffer;
6. take ``mu`` passes over the buffer in ``num_minibatches`` shuffled minibatches, one optimizer step each,
   with the clipped policy loss (``eps_low``/``eps_high``: clip-higher; per token, or GSPO's per-sequence
   ratio with ``importance_sampling_level: sequence``), on every completion token or only the
   highest-entropy ones (``top_entropy_quantile``), optional k3 KL to the reference, optional k2 reverse KL
   to a teacher (``teacher_kl_coef``: distillation inside RL) and optional entropy bonus, aggregated by
   ``loss_aggregation``.

Randomness is a pure function of ``(seed, batch index, prompt id)``: a prompt's G samples do not depend on
the process or the other prompts of its batch, so 1 process × B prompts and 2 × B/2 sample the same
completions, and a resumed run replays the interrupted one exactly with no RNG state to checkpoint.

Choices and why: ``beta = 0`` by default (no reference model is loaded at all, as in DAPO / Dr. GRPO);
with LoRA the reference is the base model with adapters disabled (no second copy). A step whose groups
all have zero variance is skipped and counted, never trained on zeros. Under DDP the skip decision is
global, and a rank without usable groups trains on zero advantages so every rank takes the same number
of optimizer steps. ``trainer.max_steps`` counts optimizer steps (batches × mu × num_minibatches).
"""

from __future__ import annotations

import hashlib
import time
from typing import Any

import torch
from lightning.pytorch.cli import OptimizerCallable
from torch import Tensor

from srlm_pl.generation.config import GenerationConfig
from srlm_pl.generation.engine import SamplingConfig, decode_completions
from srlm_pl.kd.teacher import check_vocabulary, head_rows, load_teacher, place_teacher
from srlm_pl.losses import (
    AGGREGATIONS,
    IMPORTANCE_LEVELS,
    Aggregation,
    ImportanceLevel,
    entropy_quantile_mask,
    entropy_threshold,
    grpo_policy_loss,
)
from srlm_pl.models.loading import ModelSpec, adapters_disabled, load_model, unwrap_peft
from srlm_pl.modules.base import PostTrainingModule, SchedulerCallable, ValGeneration
from srlm_pl.optim import AdamW, WarmupConstant
from srlm_pl.rl.logprobs import completion_logprobs
from srlm_pl.rl.rollout import (
    ADVANTAGE_MODES,
    AdvantageMode,
    Rollout,
    RolloutBuffer,
    group_advantages,
    zero_variance_groups,
)
from srlm_pl.rl.scoring import RewardFn, check_reward_budget, reward_stats, score


class GRPOModule(PostTrainingModule):
    """Group Relative Policy Optimization with verifiable rewards (manual optimization)."""

    def __init__(
        self,
        policy: ModelSpec | None = None,
        rewards: list[RewardFn] | None = None,
        reward_weights: list[float] | None = None,
        num_generations: int = 8,
        max_new_tokens: int = 512,
        temperature: float = 1.0,
        top_p: float = 1.0,
        top_k: int = 0,
        stop_strings: list[str] | None = None,
        mu: int = 1,
        num_minibatches: int = 1,
        beta: float = 0.0,
        reference: ModelSpec | None = None,
        teacher: ModelSpec | None = None,
        teacher_kl_coef: float = 0.0,
        eps_low: float = 0.2,
        eps_high: float = 0.2,
        importance_sampling_level: ImportanceLevel = "token",
        top_entropy_quantile: float = 1.0,
        loss_aggregation: Aggregation = "dapo",
        advantage: AdvantageMode = "group_std",
        dynamic_sampling: bool = False,
        max_refill_rounds: int = 3,
        drop_zero_variance: bool = True,
        skip_zero_gradient_steps: bool = True,
        mask_truncated: bool = False,
        entropy_coef: float = 0.0,
        reward_fallback: float = 0.0,
        max_grad_norm: float | None = 1.0,
        optimizer: OptimizerCallable = AdamW,
        scheduler: SchedulerCallable = WarmupConstant,
        val_generation: ValGeneration | None = None,
        loss_chunk_size: int = 1024,
        share_prompt_forward: bool = True,
        seed: int = 0,
        generation: GenerationConfig | None = None,
        tis_cap: float | None = 2.0,
    ) -> None:
        """Store and check the config (one documented line per argument: LightningCLI shows them as ``--help``,
        which is why this function is long).

        Args:
            policy: the model to train (hub id, folder such as a previous stage's export, or ``tiny``).
            rewards: reward functions by ``class_path`` (default: ``srlm_pl.verifiers.AccuracyReward``), called with
                completions and golds, plus ``lengths``/``truncated``/``max_new_tokens`` if their signature takes them.
            reward_weights: one weight per reward function (default: all 1).
            num_generations: completions per prompt (G, the group size); at least 2.
            max_new_tokens: completion budget per sample.
            temperature: sampling temperature (also applied to the log-probs, as TRL does).
            top_p: nucleus sampling threshold (1 disables it).
            top_k: top-k sampling (0 disables it).
            stop_strings: extra strings that end a completion (EOS always does).
            mu: passes over each batch of rollouts (GRPO's μ).
            num_minibatches: optimizer steps per pass (the rollouts are split into this many minibatches), at most
                ``num_generations`` (every process must have a row for each). Old log-probs are stored, and the
                ratio corrects for the policy's steps since sampling, only when mu > 1 or num_minibatches > 1.
            beta: KL penalty weight to the reference (k3 estimator); 0 loads no reference model.
            reference: reference model when ``beta > 0`` (default: the policy's starting weights; with
                LoRA, the base model with adapters disabled).
            teacher: a frozen teacher for distillation inside RL (same tokenizer as the policy; hub id, folder,
                GGUF; ``dtype``/``quantization`` shrink it); its log-probs of the sampled tokens are computed once
                per rollout. Held out of checkpoints, sharded like the policy under FSDP2.
            teacher_kl_coef: weight of the per-token reverse KL to the teacher on the policy's own samples (k2
                estimator: on-policy, its gradient is that of the per-token reverse KL given the prefix); needs
                ``teacher``; 0 with a teacher only logs ``train/teacher_kl``.
            eps_low: lower clip range of the probability ratio.
            eps_high: upper clip range (DAPO's clip-higher uses 0.28; GSPO uses about 3e-4 / 4e-4).
            importance_sampling_level: ``token`` (GRPO/PPO ratio per token) or ``sequence`` (GSPO: one
                length-normalised ratio per completion, clipped as a whole; TRL's option of the same name).
            top_entropy_quantile: train the policy term only on this top fraction of completion tokens by
                entropy, in (0, 1] (the "forking" tokens; TRL's option; 0.2 in the paper); 1 trains on all.
                The threshold is taken over the minibatch's tokens on every process together.
            loss_aggregation: ``grpo`` (mean of per-sequence token means), ``bnpo`` (token mean per batch),
                ``dr_grpo`` (sum / (batch × max_new_tokens)) or ``dapo`` (token mean over the global batch).
            advantage: ``group_std`` (GRPO), ``mean_only`` (Dr. GRPO), ``batch_std``, ``rloo`` (leave-one-out
                baseline) or ``reinforce_pp`` (REINFORCE++-baseline: group mean out, batch std normalised).
            dynamic_sampling: replace zero-variance groups with groups from fresh prompts (DAPO).
            max_refill_rounds: at most this many extra generation rounds per step for dynamic sampling.
            drop_zero_variance: leave groups whose rewards are all equal out of the loss (their advantages are
                0; keeping them only adds tokens to the normaliser, and with ``beta > 0`` their KL term). With
                ``teacher_kl_coef > 0`` they are always kept (and not refilled): the teacher term trains on them.
            skip_zero_gradient_steps: skip (and count) a step in which no group has reward variance, ``beta ==
                0`` and ``teacher_kl_coef == 0``: its gradient is exactly zero. ``false`` trains anyway, as TRL does.
            mask_truncated: exclude completions that hit ``max_new_tokens`` from the loss.
            entropy_coef: weight of an entropy bonus (0: entropy is only logged).
            reward_fallback: reward given to a sample whose reward function raised or returned NaN.
            max_grad_norm: gradient clipping norm (``null`` disables; ``trainer.gradient_clip_val`` cannot be
                used with manual optimization).
            optimizer: optimizer class and arguments (GRPO recipes use lr ≈ 1e-6).
            scheduler: schedule taking ``(optimizer, total_steps)`` (default: warmup then constant).
            val_generation: greedy validation accuracy on ``data.val`` prompts.
            loss_chunk_size: positions per chunk of the LM head (memory vs speed).
            share_prompt_forward: in the log-prob forwards, run each distinct prompt once and reuse its KV cache
                for its G completions (same values and gradients; the prompt costs 1/G). Off with gradient
                checkpointing, which disables the cache.
            seed: seeds sampling (per prompt and step), minibatch order and prompt refills.
            generation: the engine that samples rollouts and validation completions (``backend: hf | vllm | auto``
                and vLLM's settings; see ``srlm_pl.generation.GenerationConfig``).
            tis_cap: truncated importance sampling for a sampler that is not the training forward (``vllm``): each
                token's policy term is weighted by ``min(exp(logp_train - logp_sampler), tis_cap)`` with the
                training log-probs at sampling time; ``null`` turns it off. Unused with ``hf`` (same model).
        """
        super().__init__(policy, optimizer, scheduler, val_generation, loss_chunk_size, generation)
        self.automatic_optimization = False
        checks = [(num_generations >= 2, "num_generations must be >= 2 (a group needs two samples)"),
                  (mu >= 1, "mu must be >= 1"),
                  (1 <= num_minibatches <= num_generations,
                   f"num_minibatches must be in [1, num_generations={num_generations}], got {num_minibatches} "
                   "(a process may hold a single group of num_generations rows)"),
                  (0.0 <= beta, "beta must be >= 0"), (eps_low >= 0 and eps_high >= 0, "eps must be >= 0"),
                  (temperature > 0, "temperature must be > 0 for GRPO sampling"),
                  (loss_aggregation in AGGREGATIONS, f"loss_aggregation must be one of {AGGREGATIONS}"),
                  (advantage in ADVANTAGE_MODES, f"advantage must be one of {ADVANTAGE_MODES}"),
                  (importance_sampling_level in IMPORTANCE_LEVELS,
                   f"importance_sampling_level must be one of {IMPORTANCE_LEVELS}, got {importance_sampling_level!r}"),
                  (0.0 < top_entropy_quantile <= 1.0,
                   f"top_entropy_quantile must be in (0, 1] (1 = every token), got {top_entropy_quantile}"),
                  (teacher_kl_coef >= 0, f"teacher_kl_coef must be >= 0, got {teacher_kl_coef}"),
                  (tis_cap is None or tis_cap >= 1.0, f"tis_cap must be >= 1 or null, got {tis_cap}"),
                  (teacher is not None or teacher_kl_coef == 0,
                   "teacher_kl_coef > 0 needs model.init_args.teacher (the model to distil from)")]
        for ok, message in checks:
            if not ok:
                raise ValueError(f"model.init_args: {message}")
        if rewards is None:
            from srlm_pl.verifiers.rewards import AccuracyReward

            rewards = [AccuracyReward()]
        weights = reward_weights if reward_weights is not None else [1.0] * len(rewards)
        if len(weights) != len(rewards):
            raise ValueError(f"model.init_args.reward_weights has {len(weights)} entries for {len(rewards)} rewards")
        self.rewards, self.reward_weights = list(rewards), list(weights)
        check_reward_budget(self.rewards, max_new_tokens)
        self.sampling = SamplingConfig(max_new_tokens=max_new_tokens, temperature=temperature, top_p=top_p,
                                       top_k=top_k, stop_strings=list(stop_strings or []),
                                       num_samples=num_generations)
        self.group_size, self.mu, self.num_minibatches = num_generations, mu, num_minibatches
        self.beta, self.reference_spec = beta, reference
        self.teacher_spec, self.teacher_kl_coef = teacher, teacher_kl_coef
        self.importance_sampling_level, self.top_entropy_quantile = importance_sampling_level, top_entropy_quantile
        self.eps_low, self.eps_high = eps_low, eps_high
        self.loss_aggregation, self.advantage = loss_aggregation, advantage
        self.dynamic_sampling, self.max_refill_rounds = dynamic_sampling, max_refill_rounds
        self.drop_zero_variance, self.skip_zero_gradient_steps = drop_zero_variance, skip_zero_gradient_steps
        self.mask_truncated, self.entropy_coef = mask_truncated, entropy_coef
        self.reward_fallback, self.max_grad_norm, self.seed = reward_fallback, max_grad_norm, seed
        self.share_prompt_forward, self.tis_cap = share_prompt_forward, tis_cap
        self.buffer = RolloutBuffer()
        self._reference: list[torch.nn.Module] = []  # not a submodule: never in the checkpoint
        self._teacher: list[torch.nn.Module] = []  # the same
        self.skipped_steps = 0

    # -- setup -----------------------------------------------------------------------------------------
    def configure_model(self) -> None:
        super().configure_model()
        if self.beta > 0 and self.policy_spec.lora is None and not self._reference:
            spec = self.reference_spec or ModelSpec(**{**self.policy_spec.__dict__, "lora": None,
                                                       "gradient_checkpointing": False})
            reference = load_model(spec, self.tokenizer, trainable=False, key="model.init_args.reference")
            self._reference.append(self.shard(reference))
        if self.teacher_spec is not None and not self._teacher:
            self.configure_teacher()

    def configure_teacher(self) -> None:
        """Load the frozen teacher (``model.init_args.teacher``), check that it shares the policy's vocabulary and
        shard it like the policy (``self.shard``: a no-op outside FSDP2)."""
        trainer = self._trainer
        device = trainer.strategy.root_device if trainer is not None else self.device
        copies = trainer.num_devices if trainer is not None and device.type == "cpu" else 1
        teacher, tokenizer = load_teacher(self.teacher_spec, device, copies=copies)
        check_vocabulary(self.tokenizer, tokenizer, head_rows(unwrap_peft(self.model)), head_rows(teacher))
        self._teacher.append(self.shard(teacher))

    def on_fit_start(self) -> None:
        super().on_fit_start()
        for ref in self._reference:
            ref.to(self.device)
        self._teacher[:] = [place_teacher(t, self.device) for t in self._teacher]

    def configure_optimizers(self) -> Any:
        optimizer = self.optimizer_factory(self.trainable_parameters())
        steps = self.trainer.max_steps
        if steps is None or steps < 0:  # epoch-bounded: batches × optimizer steps per batch
            steps = int(self.trainer.estimated_stepping_batches) * self.mu * self.num_minibatches
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": self.scheduler_factory(optimizer, steps),
                                                         "interval": "step"}}

    # -- the algorithm ---------------------------------------------------------------------------------
    def training_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        t0 = time.perf_counter()
        rollout, stats = self.collect_rollouts(batch["prompt_ids"], batch["answer"], batch["id"])
        t_collect = time.perf_counter() - t0
        if rollout is None:
            self.skipped_steps += 1
            self.log_dict({**stats, "train/skipped_steps": float(self.skipped_steps)}, on_step=True, sync_dist=True)
            return
        self.buffer.fill(rollout, pad_token_id=self.tokenizer.pad_token_id)
        t1 = time.perf_counter()
        metrics = self.optimize_on_buffer()
        t_train = time.perf_counter() - t1
        tokens = float(rollout.completion_mask.sum())
        self.log_dict({**stats, **metrics, "time/training_s": t_train, "time/step_s": t_collect + t_train,
                       "train/skipped_steps": float(self.skipped_steps),
                       "train/tokens_per_s": tokens / max(t_collect + t_train, 1e-9)}, on_step=True,
                      sync_dist=True)  # means over ranks (equal batch sizes: the global means)

    def collect_rollouts(self, prompts: list[list[int]], golds: list[str],
                         ids: list[str]) -> tuple[Rollout | None, dict[str, float]]:
        """Generate, score, filter zero-variance groups (refilling if asked), compute advantages and
        the old/reference log-probs. Returns ``None`` when no group carries a learning signal anywhere."""
        parts, stats = [], {"time/generation_s": 0.0, "time/weight_sync": 0.0, "time/scoring_s": 0.0}
        first = True
        target_groups = len(prompts)
        rounds = 0
        while True:
            part, part_stats = self.sample_and_score(prompts, golds, ids)
            for k in ("time/generation_s", "time/weight_sync", "time/scoring_s"):
                stats[k] += part_stats.pop(k)
            if first:
                stats.update(part_stats)  # reward/length statistics describe the batch's own prompts
                first = False
            drop = self.drop_zero_variance and self.teacher_kl_coef == 0  # the teacher term trains on any group
            keep = ~part["zero_var"] if drop else torch.ones_like(part["zero_var"])
            parts.append(part["rollout"].select(keep.repeat_interleave(self.group_size)))
            have = sum(p.num_rows for p in parts) // self.group_size
            if not self.dynamic_sampling or have >= target_groups or rounds >= self.max_refill_rounds:
                break
            rounds += 1
            prompts, golds, ids = self.refill_prompts(target_groups - have, rounds)
        stats["train/refill_rounds"] = float(rounds)
        rollout = Rollout.cat(parts, pad_token_id=self.tokenizer.pad_token_id, renumber_groups=True)
        if rollout.num_rows > target_groups * self.group_size:
            rollout = rollout.select(slice(0, target_groups * self.group_size))
        rollout = self.batch_normalised(rollout)
        has_tokens = rollout.num_rows > 0 and bool(rollout.completion_mask.any())
        gradient_without_rewards = self.beta > 0 or self.teacher_kl_coef > 0
        has_signal = has_tokens and (gradient_without_rewards or bool((rollout.advantages != 0).any()))
        if not self.any_rank(has_signal if self.skip_zero_gradient_steps else has_tokens):
            return None, stats  # skipped and counted: no rank has a gradient to follow
        if not has_tokens:  # other ranks train this step: join with a fully masked group (zero gradient, no tokens)
            filler = part["rollout"].select(slice(0, self.group_size))
            filler = filler._replace(advantages=torch.zeros_like(filler.advantages),
                                     completion_mask=torch.zeros_like(filler.completion_mask))
            return self.attach_logprobs(filler), stats
        return self.attach_logprobs(rollout.trim()), stats

    def sample_and_score(self, prompts: list[list[int]], golds: list[str],
                         ids: list[str]) -> tuple[dict[str, Any], dict[str, float]]:
        engine = self.policy_engine()
        t_gen = time.perf_counter()
        out = engine.generate(prompts, self.sampling, seeds=[self.rng_seed("sample", i) for i in ids],
                              logprobs=self.tis_cap is not None, sync_ranks=self.shards_parameters())
        t1 = time.perf_counter()
        texts = decode_completions(self.tokenizer, out)
        repeated_golds = [g for g in golds for _ in range(self.group_size)]
        scores = score(texts, repeated_golds, self.rewards, self.reward_weights, self.reward_fallback,
                       lengths=out.lengths.tolist(), truncated=out.truncated.tolist(),
                       max_new_tokens=self.sampling.max_new_tokens)
        t2 = time.perf_counter()
        rewards = scores.total.to(self.device)
        advantages = group_advantages(rewards, self.group_size, self.advantage)
        zero_var = zero_variance_groups(rewards, self.group_size)
        mask = out.completion_mask
        if self.mask_truncated:
            mask = mask * (~out.truncated).long()[:, None]
        groups = torch.arange(len(prompts), device=self.device).repeat_interleave(self.group_size)
        rollout = Rollout(out.prompt_ids, out.prompt_mask, out.completion_ids, mask, rewards, advantages, groups,
                          truncated=out.truncated, sampler_logp=out.logprobs)
        prompt_texts = [self.tokenizer.decode(p) for p in prompts for _ in range(self.group_size)]
        self.last_samples = {"prompts": prompt_texts, "completions": texts, "golds": repeated_golds,
                             "rewards": rewards.tolist()}
        stats = {"time/generation_s": t1 - t_gen, "time/weight_sync": self.take_weight_sync_s(),
                 "time/scoring_s": t2 - t1, **reward_stats(scores),
                 "train/zero_variance_frac": zero_var.float().mean().item(),
                 "completion/len_mean": out.lengths.float().mean().item(),
                 "completion/len_max": out.lengths.max().item(),
                 "completion/truncated_frac": out.truncated.float().mean().item(),
                 "completion/tokens_per_s_generation": float(out.lengths.sum()) / max(t1 - t_gen, 1e-9)}
        return {"rollout": rollout, "zero_var": zero_var}, stats

    def attach_logprobs(self, rollout: Rollout) -> Rollout:
        """Old log-probs (μ > 1 or several minibatches), reference log-probs (β > 0) and teacher log-probs,
        computed once per rollout."""
        old = ref = teacher = None
        with torch.no_grad():
            if self.mu > 1 or self.num_minibatches > 1:  # the policy moves before the last minibatch
                old = self.logprobs(self.model, rollout)[0]
            if self.beta > 0:
                if self._reference:
                    ref = self.logprobs(self._reference[0], rollout)[0]
                else:
                    with adapters_disabled(self.model):
                        ref = self.logprobs(self.model, rollout)[0]
            if self._teacher:
                teacher = self.logprobs(self._teacher[0], rollout)[0]
        return rollout._replace(old_logp=old, ref_logp=ref, teacher_logp=teacher)

    def optimize_on_buffer(self) -> dict[str, float]:
        opt, sched = self.optimizers(), self.lr_schedulers()
        global_tokens = self.global_token_count(self.buffer.rollout.completion_mask)
        sums: dict[str, float] = {}
        peaks: dict[str, float] = {}
        steps = 0
        shuffle = self.rng("shuffle", str(self.trainer.global_rank))  # once: each pass draws a new order
        for _ in range(self.mu):
            for mb in self.buffer.minibatches(self.num_minibatches, generator=shuffle):
                mb = mb.to(self.device)
                logp, entropy = self.logprobs(self.model, mb, with_entropy=True)
                loss, metrics = grpo_policy_loss(
                    logp, mb.advantages, mb.completion_mask, old_logp=mb.old_logp, ref_logp=mb.ref_logp,
                    beta=self.beta, eps_low=self.eps_low, eps_high=self.eps_high,
                    aggregation=self.loss_aggregation, max_completion_length=self.sampling.max_new_tokens,
                    num_global_tokens=global_tokens / self.num_minibatches, entropy=entropy,
                    entropy_coef=self.entropy_coef, importance_sampling_level=self.importance_sampling_level,
                    policy_mask=self.entropy_mask(entropy, mb.completion_mask), teacher_logp=mb.teacher_logp,
                    teacher_kl_coef=self.teacher_kl_coef, sampler_logp=mb.sampler_logp, tis_cap=self.tis_cap)
                self.manual_backward(loss)
                norm = self.clip_grad_norm(opt) if self.max_grad_norm is not None else self.grad_norm()
                if norm is not None:
                    metrics["grad_norm"] = norm
                opt.step()
                opt.zero_grad(set_to_none=True)  # free the gradients before the next forward or rollout
                sched.step()
                steps += 1
                for k, v in metrics.items():
                    sums[k] = sums.get(k, 0.0) + float(v)
                    peaks[k] = max(peaks.get(k, float(v)), float(v))
        self.log_lr()
        out = {(f"rollout/{k}" if k.startswith("logprob_diff") else f"train/{k}"): v / steps for k, v in sums.items()}
        if "logprob_diff_max" in peaks:  # a max over minibatches (and, logged with reduce_fx max, over processes)
            del out["rollout/logprob_diff_max"]
            self.log("rollout/logprob_diff_max", peaks["logprob_diff_max"], on_step=True, sync_dist=True,
                     reduce_fx="max")
        return out

    # -- helpers ---------------------------------------------------------------------------------------
    def batch_normalised(self, rollout: Rollout) -> Rollout:
        """For ``batch_std`` and ``reinforce_pp``: advantages recomputed over the groups kept for training on every
        process (not per process or generation round, and without the dropped zero-variance groups), the std
        from global sums (Bessel-corrected, as ``group_advantages``). Other modes are returned unchanged."""
        if self.advantage not in ("batch_std", "reinforce_pp"):
            return rollout
        grouped = rollout.rewards.double().view(-1, self.group_size)  # [groups, G]
        centred = grouped - grouped.mean(-1, keepdim=True)
        values = centred if self.advantage == "reinforce_pp" else grouped
        stats = torch.stack([values.sum(), values.pow(2).sum(), torch.tensor(float(values.numel()),
                                                                               dtype=torch.float64)])
        total, squares, n = (float(v) for v in self.global_sum(stats.to(self.device)))
        std = max((squares - total * total / n) / (n - 1), 0.0) ** 0.5 if n > 1 else 0.0
        adv = (centred / (std + 1e-4)).float().masked_fill(zero_variance_groups(rollout.rewards, self.group_size)
                                                          [:, None], 0.0)
        return rollout._replace(advantages=adv.reshape(-1).to(rollout.advantages.device))

    def entropy_mask(self, entropy: Tensor, mask: Tensor) -> Tensor | None:
        """The top ``top_entropy_quantile`` of the minibatch's completion tokens by entropy (``None`` at 1.0);
        the threshold is the quantile over every process's tokens (gathered, NaN-padded to equal length)."""
        if self.top_entropy_quantile >= 1.0:
            return None
        values = entropy.detach()[mask.bool()].float()
        if self.trainer.world_size > 1:
            longest = int(self.trainer.strategy.reduce(torch.tensor(float(values.numel()), device=self.device),
                                                       reduce_op="max"))
            padded = torch.full((longest,), float("nan"), device=self.device)
            padded[: values.numel()] = values
            values = self.all_gather(padded).flatten()
        threshold = entropy_threshold(values, self.top_entropy_quantile)
        return entropy_quantile_mask(entropy, mask, self.top_entropy_quantile, threshold=threshold)

    def logprobs(self, model: torch.nn.Module, r: Rollout, with_entropy: bool = False) -> tuple[Tensor, Tensor | None]:
        return completion_logprobs(model, r.prompt_ids, r.prompt_mask, r.completion_ids, r.completion_mask,
                                   temperature=self.sampling.temperature, chunk_size=self.loss_chunk_size,
                                   vocab_size=len(self.tokenizer), with_entropy=with_entropy,
                                   share_prompt=self.share_prompt_forward)

    def global_token_count(self, mask: Tensor) -> float:
        """Completion tokens in the global batch, divided by the world size (DDP averages gradients)."""
        return max(float(self.global_sum(mask.sum())) / self.trainer.world_size, 1.0)

    def any_rank(self, flag: bool) -> bool:
        value = torch.tensor(float(flag), device=self.device)
        if self.trainer.world_size > 1:
            value = self.trainer.strategy.reduce(value, reduce_op="max")
        return bool(value > 0)

    def rng_seed(self, stream: str, key: str) -> int:
        """A seed from (seed, batch index, stream, key): sampling for a prompt depends on the prompt and the step
        only, not on the process or batch it lands in, and a resumed run replays it exactly."""
        step = self.trainer.fit_loop.epoch_loop.total_batch_idx if self._trainer is not None else 0
        digest = hashlib.sha256(f"{self.seed}|{step}|{stream}|{key}".encode()).digest()
        return int.from_bytes(digest[:8], "little") & (2**63 - 1)

    def rng(self, stream: str, key: str, device: torch.device | str = "cpu") -> torch.Generator:
        """A generator seeded by ``rng_seed(stream, key)``."""
        return torch.Generator(device=device).manual_seed(self.rng_seed(stream, key))

    def refill_prompts(self, n: int, round_: int) -> tuple[list[list[int]], list[str], list[str]]:
        """``n`` fresh prompts from the training set for dynamic sampling (seeded per step, round and rank), drawn
        by the data module's ``sample_prompts``; their ids are prefixed ``refill|`` (a separate sampling stream)."""
        gen = self.rng("refill", f"{self.trainer.global_rank}|{round_}")
        prompts, golds, ids = self.trainer.datamodule.sample_prompts(n, gen)
        return prompts, golds, [f"refill|{i}" for i in ids]

    # -- validation, checkpointing -----------------------------------------------------------------------
    def validation_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        if self.val_generation is not None:
            self.validate_by_generation(batch["prompt_ids"], batch["answer"], batch_idx)

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint["grpo"] = {"buffer": self.buffer.state_dict(), "skipped_steps": self.skipped_steps}

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        state = checkpoint.get("grpo")
        if state is not None:
            self.buffer.load_state_dict(state["buffer"])
            self.skipped_steps = state["skipped_steps"]
