"""Knowledge distillation from a frozen teacher: logit KD on dataset, student-sampled or teacher-sampled text.

Per training step (GKD, Agarwal et al. 2024, as TRL's ``GKDTrainer`` and torchtune's KD recipes):

1. choose where the step's completions come from: with probability ``lmbda`` the student samples them
   from the batch's prompts (on-policy); otherwise the teacher samples them when ``seq_kd`` is on
   (sequence-level KD), else the dataset's completions are used (off-policy, supervised KD);
2. run student and teacher on prompt + completion and gather the hidden states of completion positions
   only (prompt and padding never count);
3. loss = ``alpha`` x CE(labels) + (1 - ``alpha``) x D(student, teacher), both token means, D at temperature
   ``temperature`` on both distributions and scaled by ``temperature**2``: the generalized JSD_beta
   (``divergence: jsd``; ``beta = 0``: forward KL(T||S), ``beta = 1``: reverse KL(S||T)) or DistiLLM's skew KL /
   skew reverse KL (``skew_kl`` / ``skew_rkl`` with ``skew_alpha``); computed by ``losses.chunked_kd_loss``
   ``loss_chunk_size`` positions at a time, so no ``[B, T, V]`` logits of either model exist.

Offline teacher (``teacher_logits: STORE``): no teacher runs; the teacher's top-k log-probs and tail log-mass per
completion token are read from a store written by ``tools/make_teacher_logits.py`` (``srlm_pl.kd.topk_store``),
matched to the batch by example id and checked against its completion tokens, and D is taken over the top-k
plus one tail bucket (``ops.chunked_topk_kd_loss``: a fused kernel for a plain head, else
``losses.topk.chunked_topk_kd_loss``). Only dataset completions have stored teacher
rows, so ``lmbda > 0`` and ``seq_kd`` are refused, and so is a store from another tokenizer, data or template.

Choices: the token mean is over the *global* batch of a step (counts summed over processes), as in SFT.
The teacher is held outside ``nn.Module`` registration, so it is not in ``parameters()`` (optimizer), not in
``state_dict()`` (checkpoints hold the student only) and not touched by ``.train()``; it is loaded after
the student in ``configure_model`` through ``configure_teacher`` (sharded like the student under FSDP2). Random
choices come from a module-owned generator seeded by ``seed``: identical on every process (all ranks take
the same branch, so generation's collective stop test lines up) and saved in checkpoints, so a resumed run
makes the same choices. Each sampling step draws a fresh sampling seed from it (plus the rank).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from typing import Any, Literal

import torch
from lightning.pytorch.cli import OptimizerCallable
from torch import Tensor, nn
from torchmetrics import SumMetric

from srlm_pl.data.collate import prompts_from_batch
from srlm_pl.generation.config import GenerationConfig
from srlm_pl.generation.engine import SamplingConfig
from srlm_pl.kd.batch import batch_from_generation
from srlm_pl.kd.teacher import TEACHER_KEY, check_vocabulary, head_rows, load_teacher, place_teacher
from srlm_pl.kd.topk_store import (
    TopKStore,
    dataset_fingerprint,
    teacher_record,
    template_fingerprint,
    tokens_fingerprint,
)
from srlm_pl.losses.kd import DIVERGENCES, Divergence
from srlm_pl.models.forward import (
    completion_positions,
    contiguous_head_input,
    hidden_states,
    lm_head,
)
from srlm_pl.models.loading import ModelSpec, unwrap_peft
from srlm_pl.modules.base import PostTrainingModule, SchedulerCallable, ValGeneration
from srlm_pl.ops import chunked_kd_loss, chunked_topk_kd_loss
from srlm_pl.optim import AdamW, WarmupCosine

Source = Literal["dataset", "student", "teacher"]
_KEY = "model.init_args"


@dataclass
class _Frozen:
    """Holder that keeps the teacher out of module registration (a plain object, not an ``nn.Module``)."""

    model: nn.Module | None = None
    tokenizer: Any = None


def _check_unit(name: str, value: float) -> None:
    if not 0.0 <= value <= 1.0:
        raise ValueError(f"{_KEY}.{name} must be in [0, 1], got {value}")


def teacher_hidden_states(model: nn.Module, batch: dict[str, Tensor]) -> Tensor:
    """Final normed hidden states ``[B, T, H]`` of a frozen model, taken from its decoder's output by a hook
    during the model's own forward (so the root hooks of an FSDP2-sharded model run), with logits for the last
    position only and no per-layer hidden states kept."""
    captured: list[Tensor] = []

    def grab(module: nn.Module, args: Any, out: Any) -> None:
        captured.append(out.last_hidden_state if hasattr(out, "last_hidden_state") else out[0])

    handle = unwrap_peft(model).get_decoder().register_forward_hook(grab)
    try:
        with contiguous_head_input(model):
            model(input_ids=batch["input_ids"], attention_mask=batch.get("attention_mask"),
                  position_ids=batch.get("position_ids"), use_cache=False, logits_to_keep=1)
    finally:
        handle.remove()
    return captured[-1]




class DistillModule(PostTrainingModule):
    """Knowledge distillation (logit KD, on-policy GKD, sequence-level KD) into the policy (the student)."""

    def __init__(
        self,
        policy: ModelSpec | None = None,
        teacher: ModelSpec | None = None,
        optimizer: OptimizerCallable = AdamW,
        scheduler: SchedulerCallable = WarmupCosine,
        val_generation: ValGeneration | None = None,
        loss_chunk_size: int = 256,
        alpha: float = 0.0,
        beta: float = 0.5,
        temperature: float = 1.0,
        lmbda: float = 0.0,
        seq_kd: bool = False,
        max_new_tokens: int = 256,
        sampling_temperature: float = 1.0,
        length_multiple: int = 32,
        seed: int = 0,
        divergence: Divergence = "jsd",
        skew_alpha: float = 0.1,
        teacher_logits: str | None = None,
        generation: GenerationConfig | None = None,
    ) -> None:
        """Store and check the config (one documented line per argument: LightningCLI shows them as ``--help``,
        which is why this function is long).

        Args:
            policy: the student (hub id, local folder or ``tiny``; LoRA/QLoRA via ``lora``/``quantization``);
                ``layer_stride: n`` on the teacher's folder derives a student from every n-th teacher layer.
            teacher: the frozen teacher (hub id, local folder, GGUF, a previous stage's export); ``dtype:
                bfloat16`` halves its memory, ``quantization: 8bit``/``4bit`` shrink it further. It must use
                the student's tokenizer. Required unless ``teacher_logits`` is set; then it is not loaded, only
                compared with the store's teacher.
            optimizer: optimizer class and its arguments (default ``srlm_pl.optim.AdamW``).
            scheduler: learning-rate schedule taking ``(optimizer, total_steps)`` (default warmup + cosine).
            val_generation: greedy-decode this many validation prompts with the student and log
                ``val/accuracy`` (verifier-scored); ``null`` disables it.
            loss_chunk_size: completion positions per chunk of both LM heads + divergence. Peak loss memory is
                about 12 float32 ``[chunk, vocab]`` tensors: ~1.9 GB at 256 with Qwen2.5's 151,665 tokens
                (the default), ~7.3 GB at 1024; larger chunks are slightly faster.
            alpha: weight of the cross-entropy on the labels, in [0, 1]; the KD term gets ``1 - alpha``
                (0 = pure distillation).
            beta: generalized JSD interpolation (``divergence: jsd``), in [0, 1]: 0 = forward KL(teacher ||
                student), 1 = reverse KL(student || teacher), 0.5 = symmetric JSD (GKD's default).
            temperature: softmax temperature applied to both models' logits in the KD term, > 0; the term is
                multiplied by ``temperature**2`` so its gradient scale does not depend on it.
            lmbda: probability in [0, 1] that a step trains on completions the student samples itself from
                the batch's prompts (on-policy KD, GKD's lambda); 0 = never (no generation cost).
            seq_kd: on steps that are not on-policy, train on completions the teacher samples instead of
                the dataset's (sequence-level KD).
            max_new_tokens: completion budget when the student or teacher samples.
            sampling_temperature: sampling temperature of those completions (0 = greedy; independent of
                ``temperature``, which only shapes the loss).
            length_multiple: sampled batches are right-padded to a multiple of this many tokens (masked, no
                labels). On CPU every new sequence length builds new oneDNN matmul primitives, whose cache
                held on to ~13 MB more each on-policy step in the distillation benchmark; with bucketed lengths
                resident memory stays flat. 1 disables it.
            seed: seed of the on-policy choices and of sampling (saved in checkpoints for exact resume).
            divergence: the KD term: ``jsd`` (generalized JSD with ``beta``, the default), ``skew_kl`` (DistiLLM's
                skew KL, KL(T || a T + (1 - a) S)) or ``skew_rkl`` (skew reverse KL, KL(S || a S + (1 - a) T)),
                with a = ``skew_alpha``. The fused KD kernel computes ``jsd`` only; the skew ones take the
                generic chunked path.
            skew_alpha: the skew divergences' mixing weight a, in [0, 1): 0 = plain forward / reverse KL;
                DistiLLM's default 0.1 (ignored by ``jsd``; ``alpha`` is the CE weight, not this).
            teacher_logits: folder of a top-k teacher-logits store (``tools/make_teacher_logits.py --config
                <this config>`` writes it): the KD term is taken over the stored top-k plus a tail bucket and no
                teacher model is loaded. Needs ``lmbda: 0``, ``seq_kd: false``, unpacked data, and the store's
                temperature, tokenizer, data and template; a ``teacher`` given with it must equal the store's
                teacher in every recorded field (settings, config and weights fingerprints); ``null`` (default) runs
                the teacher online.
            generation: the engine that samples on-policy (student) and sequence-KD (teacher) completions and
                validation completions (``backend: hf | vllm | auto`` and vLLM's settings; see
                ``srlm_pl.generation.GenerationConfig``). With vLLM the teacher gets an engine of its own.
        """
        super().__init__(policy, optimizer, scheduler, val_generation, loss_chunk_size, generation)
        if teacher is None and teacher_logits is None:
            raise ValueError(f"{TEACHER_KEY} is required: the model to distil from (hub id, folder or GGUF), or "
                             f"{_KEY}.teacher_logits: a store of its top-k log-probs (tools/make_teacher_logits.py)")
        for name, value in (("alpha", alpha), ("beta", beta), ("lmbda", lmbda)):
            _check_unit(name, value)
        if divergence not in DIVERGENCES:
            raise ValueError(f"{_KEY}.divergence must be one of {', '.join(DIVERGENCES)}, got {divergence!r}")
        if not 0.0 <= skew_alpha < 1.0:
            raise ValueError(f"{_KEY}.skew_alpha must be in [0, 1) (1 makes the skew divergence identically 0), "
                             f"got {skew_alpha}")
        if teacher_logits is not None and (lmbda > 0 or seq_kd):
            raise ValueError(f"{_KEY}.teacher_logits cannot be combined with {_KEY}.lmbda > 0 (got {lmbda}) or "
                             f"{_KEY}.seq_kd: true (got {seq_kd}): sampled completions have no stored teacher "
                             "log-probs; set lmbda: 0 and seq_kd: false, or drop teacher_logits to run the teacher")
        if not temperature > 0:
            raise ValueError(f"{_KEY}.temperature must be > 0, got {temperature}")
        if sampling_temperature < 0:
            raise ValueError(f"{_KEY}.sampling_temperature must be >= 0 (0 = greedy), got {sampling_temperature}")
        if max_new_tokens < 1:
            raise ValueError(f"{_KEY}.max_new_tokens must be >= 1, got {max_new_tokens}")
        if loss_chunk_size < 1:
            raise ValueError(f"{_KEY}.loss_chunk_size must be >= 1, got {loss_chunk_size}")
        if length_multiple < 1:
            raise ValueError(f"{_KEY}.length_multiple must be >= 1, got {length_multiple}")
        self.teacher_spec = teacher
        self.divergence, self.skew_alpha, self.teacher_logits = divergence, skew_alpha, teacher_logits
        self.store: TopKStore | None = None
        self.alpha, self.beta, self.temperature = alpha, beta, temperature
        self.lmbda, self.seq_kd, self.seed = lmbda, seq_kd, seed
        self.length_multiple = length_multiple
        self.sampling = SamplingConfig(max_new_tokens=max_new_tokens, temperature=sampling_temperature)
        self.kd_vocab_size: int | None = None
        self._teacher = _Frozen()
        self._rng = torch.Generator().manual_seed(seed)
        self._sources: Counter[str] = Counter()
        self.val_sums = nn.ModuleDict({k: SumMetric() for k in ("loss", "kd", "ce", "tokens")})

    # -- models -----------------------------------------------------------------------------------
    def configure_model(self) -> None:
        super().configure_model()
        self.model.train()  # from_pretrained returns eval mode; training (dropout, gradient checkpointing) needs train
        if self.teacher_logits is not None:
            self.open_store()
        elif self._teacher.model is None:
            self.configure_teacher()

    def _target_device(self) -> torch.device:
        return self._trainer.strategy.root_device if self._trainer is not None else self.device

    def configure_teacher(self) -> None:
        """Load the frozen teacher, check its vocabulary against the student's and place it: a full copy on each
        process's device (single device, DDP), sharded like the student under FSDP2 (``self.shard``)."""
        device = self._target_device()
        copies = self._trainer.num_devices if self._trainer is not None and device.type == "cpu" else 1
        model, tokenizer = load_teacher(self.teacher_spec, device, copies=copies)
        self.kd_vocab_size = check_vocabulary(self.tokenizer, tokenizer, head_rows(unwrap_peft(self.model)),
                                              head_rows(model))
        self._teacher = _Frozen(place_teacher(self.shard(model), device), tokenizer)

    def opened_store(self) -> TopKStore:
        """The ``teacher_logits`` store, opened (its manifest read) on first use."""
        if self.store is None:
            self.store = TopKStore(self.teacher_logits, where=f"{_KEY}.teacher_logits")
        return self.store

    def open_store(self) -> None:
        """Check the ``teacher_logits`` store against the student's tokenizer and head, the configured teacher
        (when given) and ``temperature``; set the KD vocabulary to the store's."""
        store = self.opened_store()
        store.check_tokenizer(self.tokenizer)
        if self.teacher_spec is not None:
            store.check_teacher(teacher_record(self.teacher_spec), TEACHER_KEY)
        if store.key.temperature != self.temperature:
            raise ValueError(f"{_KEY}.temperature is {self.temperature} but the store {store.path} holds teacher "
                             f"log-probs at temperature {store.key.temperature} (a top-k cannot be re-tempered): "
                             "set the store's temperature, or rebuild the store at this one (the tool takes it from "
                             "the config: `python tools/make_teacher_logits.py --config <your config> -- "
                             f"--{_KEY}.temperature {self.temperature}`)")
        rows = head_rows(unwrap_peft(self.model))
        if rows < store.vocab_size:
            raise ValueError(f"the student's LM head has {rows} rows but the store's tokenizer has "
                             f"{store.vocab_size} tokens")
        self.kd_vocab_size = store.vocab_size

    def check_store_data(self, datamodule: Any) -> None:
        """Refuse packed data and a store whose splits' rows or template differ from the data module's."""
        if getattr(datamodule, "packing", False):
            raise ValueError(f"{_KEY}.teacher_logits matches stored rows to each batch row's example id, which "
                             "packed batches do not keep: set data.init_args.packing: false")
        store = self.opened_store()
        template = template_fingerprint(datamodule.template, datamodule.tokenizer)
        for split, dataset in datamodule.datasets.items():
            if split not in ("train", "val"):
                continue
            sha, n_rows = dataset_fingerprint(dataset)
            data = {"source": datamodule.sources[split].describe(), "sha256": sha, "n_rows": n_rows,
                    "tokens_sha256": tokens_fingerprint(dataset)}
            store.check_data(split, data, template, data_key=f"data.init_args.{split}")

    @property
    def teacher(self) -> nn.Module:
        """The frozen teacher on this module's device."""
        if self._teacher.model is None:
            raise RuntimeError("the teacher is loaded in configure_model(); call it (or trainer.fit) first")
        self._teacher.model = place_teacher(self._teacher.model, self.device)
        return self._teacher.model

    def setup(self, stage: str) -> None:
        dm = getattr(self._trainer, "datamodule", None) if self._trainer is not None else None
        if (self.lmbda > 0 or self.seq_kd) and getattr(dm, "packing", False):
            raise ValueError(f"{_KEY}.lmbda > 0 and {_KEY}.seq_kd sample completions from the batch's prompts, "
                             "which packed batches do not keep: set data.init_args.packing: false")
        if self.teacher_logits is not None and dm is not None:
            self.check_store_data(dm)

    def on_fit_start(self) -> None:
        super().on_fit_start()
        from srlm_pl.parallel import is_sharded

        if self.teacher_logits is not None:
            self.print(f"teacher logits {self.store.path}: top-{self.store.key.k} of "
                       f"{self.store.key.teacher.get('name_or_path')} over {self.kd_vocab_size:,} tokens "
                       f"(no teacher model loaded)")
            return
        n_teacher = sum(p.numel() for p in self.teacher.parameters())
        self.print(f"teacher {self.teacher_spec.name_or_path}: {n_teacher:,} parameters (frozen"
                   f"{', sharded' if is_sharded(self.teacher) else ''}); KD over {self.kd_vocab_size:,} tokens")

    # -- the algorithm ------------------------------------------------------------------------------
    def next_source(self) -> tuple[Source, int]:
        """Where this step's completions come from, and a sampling seed (same draws on every process)."""
        u = torch.rand((), generator=self._rng).item()
        sample_seed = int(torch.randint(0, 2**62, (), generator=self._rng).item())
        source: Source = "student" if u < self.lmbda else ("teacher" if self.seq_kd else "dataset")
        self._sources[source] += 1
        return source, sample_seed

    def sample_completions(self, batch: dict[str, Any], source: Source, sample_seed: int) -> dict[str, Any]:
        """A new batch: the batch's prompts with completions sampled by the student or the teacher."""
        engine = self.policy_engine() if source == "student" else self.frozen_engine("teacher", self.teacher)
        world = self.trainer.world_size if self._trainer is not None else 1
        out = engine.generate(prompts_from_batch(batch), self.sampling, seeds=sample_seed + self.global_rank,
                              sync_ranks=world > 1)
        return batch_from_generation(out, self.tokenizer.pad_token_id, device=self.device,
                                     pad_to_multiple_of=self.length_multiple)

    def kd_loss(self, batch: dict[str, Any], split: str = "train") -> tuple[Tensor, dict[str, Tensor]]:
        """``alpha * CE + (1 - alpha) * KD`` (local token means) and metrics, over completion positions; with
        ``teacher_logits`` the teacher rows come from the store's ``split``."""
        if self.teacher_logits is not None:
            return self.stored_kd_loss(batch, split)
        teacher = self.teacher
        student_h = hidden_states(self.model, batch)  # [B, T, Hs]
        with torch.no_grad():
            teacher_h = teacher_hidden_states(teacher, batch)  # [B, T, Ht]
        mask, targets = completion_positions(batch["labels"])  # [B, T-1], [N]
        return chunked_kd_loss(
            student_h[:, :-1][mask], teacher_h[:, :-1][mask], lm_head(self.model), lm_head(teacher), targets,
            beta=self.beta, temperature=self.temperature, alpha=self.alpha, chunk_size=self.loss_chunk_size,
            vocab_size=self.kd_vocab_size, divergence=self.divergence, skew_alpha=self.skew_alpha,
        )  # fmt: skip

    def stored_kd_loss(self, batch: dict[str, Any], split: str) -> tuple[Tensor, dict[str, Tensor]]:
        """The KD loss against the store's top-k + tail teacher rows of this batch's examples."""
        student_h = hidden_states(self.model, batch)  # [B, T, Hs]
        mask, targets = completion_positions(batch["labels"])  # [B, T-1], [N]
        ids, logprobs, tail = self.opened_store().rows(split, batch["id"], targets.split(mask.sum(1).tolist()))
        dev = student_h.device
        return chunked_topk_kd_loss(
            student_h[:, :-1][mask], lm_head(self.model), targets, ids.to(dev), logprobs.to(dev), tail.to(dev),
            alpha=self.alpha, temperature=self.temperature, divergence=self.divergence, beta=self.beta,
            skew_alpha=self.skew_alpha, chunk_size=self.loss_chunk_size, vocab_size=self.kd_vocab_size,
        )  # fmt: skip

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> Tensor:
        source, sample_seed = self.next_source()
        if source != "dataset":
            batch = self.sample_completions(batch, source, sample_seed)
        loss, metrics = self.kd_loss(batch)
        n_local = metrics["n_tokens"].clamp(min=1).float()
        tokens, kd_sum, ce_sum = self.global_sum(torch.stack([metrics["n_tokens"].float(), metrics["kd_sum"],
                                                              metrics["ce_sum"]])).unbind()
        tokens = tokens.clamp(min=1.0)
        # loss is a local token mean; DDP/FSDP average gradients over ranks: rescale to the global token mean
        global_loss = loss * n_local * self.trainer.world_size / tokens
        kd, ce = kd_sum / tokens, ce_sum / tokens  # global token means, identical on every rank
        self.log("train/loss", self.alpha * ce + (1 - self.alpha) * kd, prog_bar=True, on_step=True)
        self.log("train/kd", kd, on_step=True)
        self.log("train/ce", ce, on_step=True)
        self.log("train/completion_tokens", tokens, on_step=True)
        steps = sum(self._sources.values())
        self.log("train/on_policy", self._sources["student"] / steps, on_step=True)
        if self.seq_kd:
            self.log("train/seq_kd", self._sources["teacher"] / steps, on_step=True)
        rate = self.tokens_per_second(int(batch["num_tokens"]))
        if rate is not None:
            self.log("train/tokens_per_s", rate, on_step=True)
        self.log_lr()
        return global_loss

    # -- validation ----------------------------------------------------------------------------------
    def validation_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        _, metrics = self.kd_loss(batch, "val")
        n = metrics["n_tokens"].float()
        self.val_sums["loss"].update(metrics["loss"] * n)
        self.val_sums["kd"].update(metrics["kd_sum"])
        self.val_sums["ce"].update(metrics["ce_sum"])
        self.val_sums["tokens"].update(n)
        if self.val_generation is not None:
            self.validate_by_generation(prompts_from_batch(batch), batch["answer"], batch_idx)

    def on_validation_epoch_end(self) -> None:
        tokens = self.val_sums["tokens"].compute().clamp(min=1)
        for name in ("loss", "kd", "ce"):
            # SumMetric.compute() already sums over processes; sync_dist only averages equal values
            self.log(f"val/{name}", self.val_sums[name].compute() / tokens, prog_bar=name == "loss", sync_dist=True)
        for metric in self.val_sums.values():
            metric.reset()
        super().on_validation_epoch_end()

    # -- resume ----------------------------------------------------------------------------------------
    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint["distill"] = {"rng": self._rng.get_state(), "sources": dict(self._sources)}

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        state = checkpoint.get("distill")
        if state is not None:
            self._rng.set_state(state["rng"])
            self._sources = Counter(state["sources"])
