"""The DataModule family: one base (sources → validation → template → cached tokenization → length
policy → resumable loaders) and two heads: ``SFTDataModule`` (prompt + completion, completion-only
labels, optional packing; also used by distillation) and ``PromptDataModule`` (prompts + gold answers
for GRPO and evaluation).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from dataclasses import asdict
from pathlib import Path
from typing import Any, Literal

import lightning as L
import torch
from torch.utils.data import DataLoader, Dataset

from srlm_pl.data.collate import (
    LengthPolicy,
    LengthReport,
    PackedCollator,
    PadCollator,
    PromptCollator,
    length_filter,
    pack,
    tokenize_prompt,
    tokenize_sft,
)
from srlm_pl.data.lengths import LengthStats, check_dropped_at_most_half, length_stats
from srlm_pl.data.sampling import ResumableDataLoader, ResumableSampler
from srlm_pl.data.sources import DataError, DataSource, LoadReport, load_rows
from srlm_pl.data.templates import PromptTemplate
from srlm_pl.models.loading import ModelSpec, load_tokenizer
from srlm_pl.verifiers.think import THINK_CLOSE, THINK_OPEN

log = logging.getLogger(__name__)
Split = Literal["train", "val", "test"]


class PackedDataset(Dataset):
    """Each item is one bin: the list of examples packed into one row."""

    def __init__(self, base: Any, bins: list[list[int]]) -> None:
        self.base, self.bins = base, bins

    def __len__(self) -> int:
        return len(self.bins)

    def __getitem__(self, i: int) -> list[dict[str, Any]]:
        return [self.base[j] for j in self.bins[i]]


def _cache_dir(cache_dir: str | None) -> Path:
    root = cache_dir or os.environ.get("SRLM_CACHE") or Path.home() / ".cache" / "srlm_pl"
    path = Path(root) / "tokenized"
    path.mkdir(parents=True, exist_ok=True)
    return path


class BaseDataModule(L.LightningDataModule):
    """Shared data pipeline; subclasses choose what an example is (``kind``) and how it is collated."""

    kind: str = "base"
    need: tuple[str, ...] = ("question",)

    def __init__(
        self,
        train: DataSource | None = None,
        val: DataSource | None = None,
        test: DataSource | None = None,
        template: PromptTemplate | None = None,
        tokenizer: ModelSpec | None = None,
        batch_size: int = 8,
        eval_batch_size: int | None = None,
        max_length: int = 1024,
        length_policy: LengthPolicy = "drop",
        num_workers: int = 0,
        shuffle: bool = True,
        seed: int = 0,
        cache_dir: str | None = None,
    ) -> None:
        """
        Args:
            train: training split (``null``: none).
            val: validation split (``null``: no validation).
            test: test split, used by ``test`` and ``predict``.
            template: prompt style, system prompt, instruction and answer format.
            tokenizer: the model spec whose tokenizer is used; linked from ``model.init_args.policy`` by the
                CLI, so it is never set by hand there.
            batch_size: training examples (or packed rows, or prompts) per batch and per process.
            eval_batch_size: batch size for validation/test (default: ``batch_size``).
            max_length: longest tokenized example (prompt + completion; for prompt data: the prompt). Each
                split's p50 / p90 / max example tokens are logged before training; a ``max_length`` at which the
                length policy drops more than half of a split is an error.
            length_policy: what to do with longer examples: ``drop`` (counted), ``truncate`` (cut the
                completion; counted) or ``error``.
            num_workers: DataLoader worker processes.
            shuffle: shuffle training data each epoch (seeded by ``seed`` and the epoch).
            seed: data order seed.
            cache_dir: where tokenized datasets are cached (default ``$SRLM_CACHE`` or ``~/.cache/srlm_pl``).
        """
        super().__init__()
        if batch_size < 1:
            raise ValueError(f"data.batch_size must be >= 1, got {batch_size}")
        if max_length < 2:
            raise ValueError(f"data.max_length must be >= 2, got {max_length}")
        self.sources: dict[str, DataSource | None] = {"train": train, "val": val, "test": test}
        self.template = template or PromptTemplate()
        self.tokenizer_spec = tokenizer or ModelSpec()
        self.batch_size = batch_size
        self.eval_batch_size = eval_batch_size or batch_size
        self.max_length, self.length_policy = max_length, length_policy
        self.num_workers, self.shuffle, self.seed = num_workers, shuffle, seed
        self.cache_dir = cache_dir
        self._tokenizer: Any = None
        self.datasets: dict[str, Any] = {}
        self.lengths: dict[str, list[int]] = {}
        self.reports: dict[str, tuple[LoadReport, LengthReport]] = {}
        self.length_stats: dict[str, LengthStats] = {}

    @property
    def tokenizer(self) -> Any:
        if self._tokenizer is None:
            self._tokenizer = load_tokenizer(self.tokenizer_spec, key="model.init_args.policy")
        return self._tokenizer

    # -- building one split ------------------------------------------------------------------------
    def _tokenize_fn(self) -> Any:
        return tokenize_sft if self.kind == "sft" else tokenize_prompt

    def _cache_key(self, rows: list[dict[str, Any]]) -> str:
        tok = self.tokenizer
        meta = {"kind": self.kind, "template": asdict(self.template), "tokenizer": tok.name_or_path,
                "vocab": len(tok), "chat": getattr(tok, "chat_template", None) or "", "v": 1}
        h = hashlib.sha256(json.dumps(meta, sort_keys=True).encode())
        h.update(json.dumps(rows, sort_keys=True).encode())
        return h.hexdigest()[:24]

    def build_split(self, split: Split) -> Any:
        """Load, validate, tokenize (cached) and length-filter one split; returns a map-style dataset."""
        import datasets

        src = self.sources[split]
        if src is None:
            raise ValueError(f"data.{split} is not set")
        rows, load_report = load_rows(src, need=self.need)
        traced = next((r for r in rows if r.get("trace")), None)
        if traced is not None and self.kind == "sft":
            self._check_trace_prompt(traced["question"], split)
        key = self._cache_key(rows)
        cache_file = _cache_dir(self.cache_dir) / f"{self.kind}-{key}.arrow"
        ds = datasets.Dataset.from_list(rows).map(
            self._tokenize_fn(), fn_kwargs={"tokenizer": self.tokenizer, "template": self.template},
            cache_file_name=str(cache_file), new_fingerprint=key, load_from_cache_file=True,
            desc=f"tokenizing {split}")
        where = f"data.{split} ({src.describe()})"
        stats = length_stats(ds["length"])
        keep, lengths, length_report = length_filter(
            ds["length"], ds["prompt_len"], ds["id"], self.max_length, self.length_policy, where=where)
        if not keep:
            raise ValueError(f"{where}: every example is longer than max_length={self.max_length}; raise "
                             f"data.max_length ({stats.text()})")
        check_dropped_at_most_half(length_report, stats, where, self.max_length, self.length_policy)
        ds = ds.select(keep) if len(keep) < len(ds) else ds
        self.reports[split] = (load_report, length_report)
        self.length_stats[split] = stats
        self.lengths[split] = lengths
        log.info("data.%s %s: %d rows read, %d bad rows skipped%s, %s, %d too long dropped, %d truncated "
                 "(max_length %d), %d kept", split, src.describe(), load_report.read, load_report.skipped,
                 f" ({load_report.counts_text()})" if load_report.skipped else "", stats.text(),
                 length_report.dropped, length_report.truncated, self.max_length, len(ds))
        return ds

    def _check_trace_prompt(self, question: str, split: str) -> None:
        """Reasoning traces bring their own ``<think>``: a chat template whose generation prompt already opens
        (or opens and closes) a think block would put the trace's block inside another one."""
        if self.template.style != "chat":
            return
        tail = self.template.prompt(question, self.tokenizer).rsplit(question, 1)[-1]
        if THINK_OPEN in tail or THINK_CLOSE in tail:
            raise DataError(
                f"data.{split}: the data holds reasoning traces that start with {THINK_OPEN}, but the tokenizer's chat "
                f"template ({self.tokenizer.name_or_path}) already writes a think block into the generation prompt "
                f"({tail[-40:]!r}); use a tokenizer whose template does not (Qwen2.5's) or "
                "data.init_args.template.style: plain")

    def stats(self) -> dict[str, int]:
        """Counts for logging, per split: rows kept, bad rows skipped, trace rows whose answer contradicts the gold,
        examples dropped/truncated by the length policy, and the p50 / p90 / max example tokens before it."""
        out = {}
        for split, (lr, ln) in self.reports.items():
            st = self.length_stats[split]
            out |= {f"data/{split}_rows": lr.kept, f"data/{split}_bad_rows_skipped": lr.skipped,
                    f"data/{split}_wrong_traces": lr.wrong_traces,
                    f"data/{split}_too_long_dropped": ln.dropped, f"data/{split}_truncated": ln.truncated,
                    f"data/{split}_tokens_p50": st.p50, f"data/{split}_tokens_p90": st.p90,
                    f"data/{split}_tokens_max": st.max}
        return out

    def setup(self, stage: str | None = None) -> None:
        wanted: list[Split] = {"fit": ["train", "val"], "validate": ["val"], "test": ["test"],
                               "predict": ["test"]}.get(stage or "fit", ["train", "val", "test"])
        for split in wanted:
            if self.sources[split] is not None and split not in self.datasets:
                self.datasets[split] = self.build_split(split)
        if stage == "fit" and self.sources["train"] is None:
            raise ValueError("fit needs data.train")

    # -- loaders ------------------------------------------------------------------------------------
    def train_items(self) -> Dataset:
        return self.datasets["train"]

    def collate(self, split: Split) -> Any:
        raise TypeError(f"{type(self).__name__} defines no collate(); use SFTDataModule or PromptDataModule")

    def _progress(self) -> tuple[int, int]:
        t = self.trainer
        if t is None:
            return 0, 0
        return t.current_epoch, t.fit_loop.epoch_loop.batch_progress.current.processed

    def train_dataloader(self) -> DataLoader:
        items = self.train_items()
        world, rank = (self.trainer.world_size, self.trainer.global_rank) if self.trainer else (1, 0)
        sampler = ResumableSampler(len(items), num_replicas=world, rank=rank, shuffle=self.shuffle,
                                   seed=self.seed)
        return ResumableDataLoader(items, batch_size=self.batch_size, sampler=sampler,
                                   collate_fn=self.collate("train"), num_workers=self.num_workers,
                                   progress=self._progress)

    def _eval_loader(self, split: Split) -> DataLoader:
        return DataLoader(self.datasets[split], batch_size=self.eval_batch_size, shuffle=False,
                          collate_fn=self.collate(split), num_workers=self.num_workers)

    def val_dataloader(self) -> DataLoader | list:
        return self._eval_loader("val") if "val" in self.datasets else []

    def test_dataloader(self) -> DataLoader:
        return self._eval_loader("test")

    def predict_dataloader(self) -> DataLoader:
        return self._eval_loader("test")


class SFTDataModule(BaseDataModule):
    """Prompt + worked solution, loss on the completion only; optional packing. Also feeds distillation."""

    kind = "sft"
    need = ("question", "solution")

    def __init__(self, *args: Any, packing: bool = False, **kwargs: Any) -> None:
        """
        Args:
            packing: pack several examples into rows of ``max_length`` tokens (best-fit decreasing);
                position ids restart per example and attention never crosses examples. Validation
                and test batches are never packed.
        """
        super().__init__(*args, **kwargs)
        self.packing = packing

    def train_items(self) -> Dataset:
        if not self.packing:
            return self.datasets["train"]
        return PackedDataset(self.datasets["train"], pack(self.lengths["train"], self.max_length))

    def collate(self, split: Split) -> Any:
        pad = self.tokenizer.pad_token_id
        if split == "train" and self.packing:
            return PackedCollator(pad, self.max_length)
        return PadCollator(pad, self.max_length)


class PromptDataModule(BaseDataModule):
    """Prompts with gold answers (GRPO training, generation-based evaluation). ``max_length`` bounds the
    prompt; ``truncate`` behaves like ``drop`` here (a cut prompt is a different question)."""

    kind = "prompt"
    need = ("question", "answer")

    def collate(self, split: Split) -> Any:
        return PromptCollator()

    def sample_prompts(self, n: int, generator: torch.Generator,
                       split: Split = "train") -> tuple[list[list[int]], list[str], list[str]]:
        """``n`` prompts drawn uniformly with replacement from a set-up split (GRPO's dynamic-sampling refill):
        their prompt token ids, gold answers and row ids. The draw uses ``generator`` only
        (``torch.randint(len(split), (n,), generator=generator)``), so the same seed gives the same prompts."""
        items = self.datasets[split]
        rows = [items[i] for i in torch.randint(len(items), (n,), generator=generator).tolist()]
        return [list(r["input_ids"]) for r in rows], [r["answer"] for r in rows], [r["id"] for r in rows]
