"""The fused LM-head losses' forward + backward with a trainable head vs a frozen one (LoRA leaves the head frozen).

Each loss (``linear_ce``: SFT, ``linear_logprob``: GRPO's log-probs + entropy, ``fused_kd``: distillation against a
frozen teacher head of the same shape) runs under bf16 autocast on ``--rows`` positions, width ``--hidden``, vocabulary
``--vocab``, alternating trainable / frozen in this process; best of ``--repeats``. With a frozen head no ``[V, H]``
weight gradient is built and one product per chunk is skipped.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor, nn

from srlm_pl.ops import chunked_kd_loss
from srlm_pl.ops.linear_ce import linear_cross_entropy
from srlm_pl.ops.linear_logprob import linear_token_logprobs


def bench_fused_head(rows: int, hidden: int, vocab: int, repeats: int) -> list[dict[str, Any]]:
    torch.manual_seed(0)
    head = nn.Linear(hidden, vocab, bias=False)
    teacher = nn.Linear(hidden, vocab, bias=False).requires_grad_(False)
    h = torch.randn(rows, hidden, requires_grad=True)
    t_h = torch.randn(rows, hidden)
    targets = torch.randint(0, vocab, (rows,))
    losses: dict[str, Callable[[], Tensor]] = {
        "linear_ce (SFT, chunk 1024)": lambda: linear_cross_entropy(h, head, targets, chunk_size=1024)[0],
        "linear_logprob (GRPO, chunk 1024)": lambda: linear_token_logprobs(
            h, head, targets, chunk_size=1024, with_entropy=True)[0].sum(),
        "fused_kd (KD, chunk 64)": lambda: chunked_kd_loss(h, t_h, head, teacher, targets, beta=0.5, temperature=1.0,
                                                           alpha=0.0, chunk_size=64, vocab_size=None)[0],
    }

    def run(loss: Callable[[], Tensor], frozen: bool) -> float:
        head.weight.requires_grad_(not frozen)
        head.weight.grad = h.grad = None
        start = time.perf_counter()
        with torch.autocast("cpu", dtype=torch.bfloat16):
            value = loss()
        value.backward()
        return time.perf_counter() - start

    out = []
    for name, loss in losses.items():
        times: dict[bool, list[float]] = {False: [], True: []}
        run(loss, False)  # warm-up
        for _ in range(repeats):
            for frozen in (False, True):
                times[frozen].append(run(loss, frozen))
        train, frozen = min(times[False]), min(times[True])
        out.append({"bench": "fused head", "variant": name, "trainable_head_ms": train * 1e3,
                    "frozen_head_ms": frozen * 1e3, "ratio": frozen / train})
    return out
