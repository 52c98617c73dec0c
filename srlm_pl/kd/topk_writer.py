"""Run a frozen teacher over an ``SFTDataModule``'s splits and write its top-k log-probs per completion token
(``srlm_pl.kd.topk_store``). ``tools/make_teacher_logits.py`` is the command-line front end."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from srlm_pl.data.collate import PadCollator
from srlm_pl.kd.topk_store import (
    ShardWriter,
    StoreKey,
    TopKStore,
    dataset_fingerprint,
    template_fingerprint,
    tokenizer_fingerprint,
    tokens_fingerprint,
    write_manifest,
)
from srlm_pl.losses.chunked import head_logits
from srlm_pl.models.forward import completion_positions, hidden_states, lm_head

log = logging.getLogger(__name__)


def teacher_topk(hidden: Tensor, head: nn.Module, k: int, vocab_size: int, temperature: float = 1.0,
                 chunk_size: int = 256) -> tuple[Tensor, Tensor, Tensor]:
    """Top-k ids, their log-probs and the log of the tail mass (``logsumexp`` of the logits outside the top-k minus
    the full ``logsumexp``: never underflows; ``-inf`` only when ``k = V``) of ``softmax(head(hidden) / temperature)``
    over the first ``vocab_size`` logits, for ``hidden [N, H]`` in chunks of ``chunk_size`` rows (float32)."""
    ids, lps, tails = [], [], []
    for lo in range(0, hidden.shape[0], chunk_size):
        z = head_logits(head, hidden[lo : lo + chunk_size], vocab_size) / temperature  # [n, V]
        lse = torch.logsumexp(z, dim=-1)  # [n]
        top, top_ids = z.topk(k, dim=-1)  # [n, k], most likely first
        if k < z.shape[-1]:
            tail = torch.logsumexp(z.scatter(-1, top_ids, -torch.inf), dim=-1) - lse
        else:
            tail = torch.full_like(lse, -torch.inf)
        ids.append(top_ids)
        lps.append(top - lse[:, None])
        tails.append(tail)
    if not ids:
        empty = hidden.new_zeros((0, k), dtype=torch.float32)
        return empty.long(), empty, empty[:, 0]
    return torch.cat(ids), torch.cat(lps), torch.cat(tails)


@torch.no_grad()
def write_split(writer: ShardWriter, model: nn.Module, dataset: Any, collate: PadCollator, *, vocab_size: int,
                batch_size: int, temperature: float, device: torch.device) -> None:
    """Teacher rows of every example of ``dataset`` (in order), appended to ``writer``."""
    head = lm_head(model)
    for lo in range(0, len(dataset), batch_size):
        examples = [dataset[i] for i in range(lo, min(lo + batch_size, len(dataset)))]
        batch = collate(examples)
        tensors = {k: v.to(device) for k, v in batch.items() if isinstance(v, Tensor)}
        hidden = hidden_states(model, tensors)  # [B, T, H]
        mask, targets = completion_positions(tensors["labels"])  # [B, T-1], [N]
        ids, lps, tail = teacher_topk(hidden[:, :-1][mask], head, writer.key.k, vocab_size, temperature)
        counts = mask.sum(1).tolist()
        for ex, t, i, lp, tl in zip(batch["id"], targets.split(counts), ids.split(counts), lps.split(counts),
                                    tail.split(counts), strict=True):
            writer.add(ex, t, i, lp, tl)


def write_store(model: nn.Module, tokenizer: Any, datamodule: Any, out: str | Path, *, k: int,
                teacher: dict[str, Any], splits: tuple[str, ...] = ("train", "val"), temperature: float = 1.0,
                logprob_dtype: str = "float16", batch_size: int = 8, shard_tokens: int = 1 << 20,
                vocab_size: int | None = None) -> TopKStore:
    """Write the store of ``model`` (the teacher, frozen) for the splits of ``datamodule`` (an ``SFTDataModule``;
    set up here) that are configured; ``teacher`` describes the teacher in the manifest. Returns it opened."""
    out = Path(out)
    if (out / "manifest.json").exists():
        raise FileExistsError(f"{out} already holds a store; remove it or pass another --out")
    if getattr(datamodule, "packing", False):
        log.info("data.init_args.packing is on: the store is written per example (packing does not change it), "
                 "but DistillModule with teacher_logits needs packing: false")
    vocab = vocab_size or len(tokenizer)
    if not 1 <= k <= vocab:
        raise ValueError(f"k must be in [1, {vocab}] (the vocabulary), got {k}")
    datamodule.setup("fit")
    for split in splits:
        if datamodule.sources.get(split) is not None and split not in datamodule.datasets:
            datamodule.datasets[split] = datamodule.build_split(split)
    key = StoreKey(teacher=teacher, tokenizer=tokenizer_fingerprint(tokenizer),
                   template=template_fingerprint(datamodule.template, tokenizer), k=k, temperature=float(temperature),
                   logprob_dtype=logprob_dtype)
    device = next(model.parameters()).device
    collate = PadCollator(tokenizer.pad_token_id, datamodule.max_length)
    entries = {}
    for split in splits:
        if split not in datamodule.datasets:
            log.info("data.%s is not set: no %s split in the store", split, split)
            continue
        dataset = datamodule.datasets[split]
        writer = ShardWriter(out, split, key, shard_tokens)
        write_split(writer, model, dataset, collate, vocab_size=vocab, batch_size=batch_size,
                    temperature=temperature, device=device)
        sha, n_rows = dataset_fingerprint(dataset)
        entries[split] = writer.close({"source": datamodule.sources[split].describe(), "sha256": sha,
                                       "n_rows": n_rows, "tokens_sha256": tokens_fingerprint(dataset)})
        log.info("%s: %d examples, %d completion tokens", split, entries[split]["n_examples"],
                 entries[split]["n_tokens"])
    if not entries:
        raise ValueError(f"none of the splits {splits} is configured in the data module")
    write_manifest(out, key, entries)
    return TopKStore(out)
