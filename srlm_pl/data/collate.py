"""Token ids, completion-only labels, length policy, padding and packing.

Labels follow the Hugging Face convention (aligned with ``input_ids``; the loss shifts them): prompt
tokens and padding are ``-100``, completion tokens and the closing EOS are targets.

Packing puts several examples in one row of at most ``max_length`` tokens (best-fit decreasing) and
restarts ``position_ids`` at 0 for each example. No ``attention_mask`` is passed for packed rows:
transformers then derives a block-diagonal causal mask from the position-id restarts
(``find_packed_sequence_indices`` in ``masking_utils``), so no token attends across examples, and
RoPE positions are per example. The tail of a row is padding in a segment of its own (``-100``).
transformers derives that mask only when the forward builds no KV cache: training forwards pass
``use_cache=False`` (``modules.base.hidden_states`` does).
"""

from __future__ import annotations

import bisect
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import torch

from srlm_pl.data.templates import PromptTemplate

IGNORE = -100
LengthPolicy = Literal["drop", "truncate", "error"]


def tokenize_sft(row: dict[str, Any], tokenizer: Any, template: PromptTemplate) -> dict[str, Any]:
    """Prompt and completion tokenized separately (a clean boundary), EOS appended to the completion; a row
    marked ``trace`` (a reasoning trace) keeps its completion verbatim (``PromptTemplate.completion``)."""
    prompt = template.prompt(row["question"], tokenizer)
    completion = template.completion(row["solution"], row["answer"], trace=bool(row.get("trace")))
    prompt_ids = tokenizer(prompt, add_special_tokens=False)["input_ids"]
    completion_ids = tokenizer(completion, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
    return {"input_ids": prompt_ids + completion_ids, "prompt_len": len(prompt_ids),
            "length": len(prompt_ids) + len(completion_ids)}


def tokenize_prompt(row: dict[str, Any], tokenizer: Any, template: PromptTemplate) -> dict[str, Any]:
    prompt_ids = tokenizer(template.prompt(row["question"], tokenizer), add_special_tokens=False)["input_ids"]
    return {"input_ids": prompt_ids, "prompt_len": len(prompt_ids), "length": len(prompt_ids)}


@dataclass
class LengthReport:
    """Counts of the length policy: examples kept as they were, truncated, and dropped."""

    kept: int = 0
    truncated: int = 0
    dropped: int = 0
    examples: list[str] = field(default_factory=list)


def length_filter(lengths: Sequence[int], prompt_lens: Sequence[int], ids: Sequence[str], max_length: int,
                  policy: LengthPolicy, where: str) -> tuple[list[int], list[int], LengthReport]:
    """Indices to keep and their (possibly truncated) lengths under the policy.

    ``truncate`` cuts the completion at ``max_length``; an example whose prompt alone reaches
    ``max_length`` (no completion token would remain) is dropped under both ``drop`` and ``truncate``.
    ``error`` raises on the first example that is too long.
    """
    keep, new_lengths, report = [], [], LengthReport()
    for i, (n, p) in enumerate(zip(lengths, prompt_lens, strict=True)):
        if n <= max_length:
            keep.append(i)
            new_lengths.append(n)
            report.kept += 1
            continue
        if policy == "error":
            raise ValueError(f"{where}: example {ids[i]!r} has {n} tokens (prompt {p}) > max_length={max_length}; "
                             "raise max_length or set length_policy: drop / truncate")
        if policy == "truncate" and p < max_length:
            keep.append(i)
            new_lengths.append(max_length)
            report.truncated += 1
        else:
            report.dropped += 1
            if len(report.examples) < 5:
                report.examples.append(f"{ids[i]} ({n} tokens)")
    return keep, new_lengths, report


def prompts_from_batch(batch: dict[str, Any]) -> list[list[int]]:
    """The prompt token lists of a right-padded SFT batch (needs ``prompt_len``, i.e. no packing)."""
    if "prompt_len" not in batch:
        raise ValueError("prompts from a batch need padded batches with prompt_len; packed batches have none "
                         "(set data.init_args.packing: false)")
    return [row[:n].tolist() for row, n in zip(batch["input_ids"], batch["prompt_len"].tolist(), strict=True)]


def pack(lengths: Sequence[int], max_length: int) -> list[list[int]]:
    """Best-fit-decreasing bins of example indices, each bin's total length <= ``max_length``.

    Deterministic (ties broken by index). Returns bins ordered by their first (longest) example.
    """
    order = sorted(range(len(lengths)), key=lambda i: (-lengths[i], i))
    free: list[tuple[int, int]] = []  # (remaining capacity, bin id), kept sorted
    bins: list[list[int]] = []
    for i in order:
        n = lengths[i]
        if n > max_length:
            raise ValueError(f"example {i} has {n} tokens > max_length={max_length}; apply the length policy first")
        at = bisect.bisect_left(free, (n, -1))
        if at == len(free):
            bins.append([i])
            if max_length - n > 0:
                bisect.insort(free, (max_length - n, len(bins) - 1))
        else:
            cap, b = free.pop(at)
            bins[b].append(i)
            if cap - n > 0:
                bisect.insort(free, (cap - n, b))
    return bins


def _labels(ids: list[int], prompt_len: int) -> list[int]:
    return [IGNORE] * prompt_len + ids[prompt_len:]


class PadCollator:
    """Right-padded batches: ``input_ids``, ``attention_mask``, ``labels``, ``position_ids``, ``prompt_len``.

    Metadata (``id``, ``answer``) passes through as lists for generation-based validation.
    ``pad_to_multiple_of`` rounds the width up (at most to ``max_length``): fewer distinct shapes.
    """

    def __init__(self, pad_token_id: int, max_length: int, pad_to_multiple_of: int = 1) -> None:
        if pad_to_multiple_of < 1:
            raise ValueError(f"pad_to_multiple_of must be >= 1, got {pad_to_multiple_of}")
        self.pad, self.max_length, self.multiple = pad_token_id, max_length, pad_to_multiple_of

    def __call__(self, examples: list[dict[str, Any]]) -> dict[str, Any]:
        seqs = [e["input_ids"][: self.max_length] for e in examples]
        width = max(len(s) for s in seqs)
        width = max(width, min(-(-width // self.multiple) * self.multiple, self.max_length))
        ids = torch.full((len(seqs), width), self.pad, dtype=torch.long)
        labels = torch.full((len(seqs), width), IGNORE, dtype=torch.long)
        mask = torch.zeros((len(seqs), width), dtype=torch.long)
        for r, (s, e) in enumerate(zip(seqs, examples, strict=True)):
            ids[r, : len(s)] = torch.tensor(s)
            labels[r, : len(s)] = torch.tensor(_labels(s, e["prompt_len"]))
            mask[r, : len(s)] = 1
        positions = (mask.cumsum(-1) - 1).clamp(min=0)
        return {"input_ids": ids, "attention_mask": mask, "labels": labels, "position_ids": positions,
                "prompt_len": torch.tensor([e["prompt_len"] for e in examples]), "num_tokens": int(mask.sum()),
                "id": [e.get("id") for e in examples], "answer": [e.get("answer") for e in examples]}


class PackedCollator:
    """Rows of several examples each (a list of examples per row); position ids restart per example."""

    def __init__(self, pad_token_id: int, max_length: int) -> None:
        self.pad, self.max_length = pad_token_id, max_length

    def __call__(self, rows: list[list[dict[str, Any]]]) -> dict[str, Any]:
        packed = []
        for row in rows:
            ids, labels, pos = [], [], []
            for e in row:
                s = e["input_ids"][: self.max_length]
                ids += s
                labels += _labels(s, e["prompt_len"])
                pos += list(range(len(s)))
            packed.append((ids, labels, pos))
        width = max(len(p[0]) for p in packed)
        out_ids = torch.full((len(packed), width), self.pad, dtype=torch.long)
        out_labels = torch.full((len(packed), width), IGNORE, dtype=torch.long)
        out_pos = torch.zeros((len(packed), width), dtype=torch.long)
        for r, (ids, labels, pos) in enumerate(packed):
            n = len(ids)
            out_ids[r, :n] = torch.tensor(ids)
            out_labels[r, :n] = torch.tensor(labels)
            out_pos[r, :n] = torch.tensor(pos)
            out_pos[r, n:] = torch.arange(width - n)  # padding: a segment of its own
        return {"input_ids": out_ids, "labels": out_labels, "position_ids": out_pos,
                "num_examples": sum(len(r) for r in rows), "num_tokens": sum(len(p[0]) for p in packed)}


class PromptCollator:
    """Prompt batches for generation: token id lists plus ids, questions and gold answers."""

    def __call__(self, examples: list[dict[str, Any]]) -> dict[str, Any]:
        return {"prompt_ids": [list(e["input_ids"]) for e in examples],
                "id": [e["id"] for e in examples], "question": [e["question"] for e in examples],
                "answer": [e["answer"] for e in examples]}
