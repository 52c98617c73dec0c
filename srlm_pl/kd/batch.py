"""Training batches for distillation from sampled completions (on-policy KD and sequence-level KD).

A padded SFT batch (``input_ids`` right-padded, ``prompt_len`` per row) gives the prompts; ``generate``
returns left-padded prompts and right-padded completions; ``batch_from_generation`` turns them back into a
right-padded SFT-style batch (``input_ids``, ``attention_mask``, ``labels`` with -100 on prompt and padding,
``position_ids``, ``prompt_len``, ``num_tokens``), so the KD loss code is the same for every source.
Every completion token, including the EOS the sampler produced, is a target; a completion cut at
``max_new_tokens`` is kept as it is (GKD trains on truncated samples too).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from srlm_pl.data.collate import PadCollator
from srlm_pl.data.collate import prompts_from_batch as prompts_from_batch  # its old home (srlm_pl.kd_batch)
from srlm_pl.generation.engine import GenerationOutput


def batch_from_generation(out: GenerationOutput, pad_token_id: int, device: torch.device | None = None,
                          pad_to_multiple_of: int = 1) -> dict[str, Any]:
    """Right-padded SFT-style batch of prompt + sampled completion per generated row, its width rounded up
    to a multiple of ``pad_to_multiple_of`` (padding is masked and carries no label)."""
    examples = []
    for p_ids, p_mask, c_ids, n in zip(out.prompt_ids.tolist(), out.prompt_mask.tolist(),
                                       out.completion_ids.tolist(), out.lengths.tolist(), strict=True):
        prompt = [t for t, m in zip(p_ids, p_mask, strict=True) if m]
        examples.append({"input_ids": prompt + c_ids[:n], "prompt_len": len(prompt)})
    width = max(len(e["input_ids"]) for e in examples)
    width = -(-width // pad_to_multiple_of) * pad_to_multiple_of
    batch = PadCollator(pad_token_id, width, pad_to_multiple_of)(examples)
    if device is not None:
        batch = {k: v.to(device) if isinstance(v, Tensor) else v for k, v in batch.items()}
    return batch
