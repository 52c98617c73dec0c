"""The fused LM-head losses' forward + backward with a trainable head vs a frozen one (LoRA leaves the head frozen).

Usage::

    .venv/bin/python tools/bench_fused_head.py                       # SmolLM2 shapes: H 576, V 49,152, 2048 rows
    .venv/bin/python tools/bench_fused_head.py --rows 1024 --hidden 896 --vocab 151936 --repeats 3 --json out.json

Each loss (``linear_ce``: SFT, ``linear_logprob``: GRPO's log-probs + entropy, ``fused_kd``: distillation against a
frozen teacher head of the same shape) runs under bf16 autocast, alternating trainable / frozen in this process;
best of ``--repeats``. With a frozen head no ``[V, H]`` weight gradient is built and one product per chunk is skipped.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable

import bench_common as bc
import torch
from torch import Tensor, nn

from srlm_pl.ops import chunked_kd_loss
from srlm_pl.ops.linear_ce import linear_cross_entropy
from srlm_pl.ops.linear_logprob import linear_token_logprobs


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", type=int, default=2048, help="completion positions")
    ap.add_argument("--hidden", type=int, default=576)
    ap.add_argument("--vocab", type=int, default=49152)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--json", help="also write the result here")
    a = ap.parse_args()
    torch.manual_seed(0)
    head = nn.Linear(a.hidden, a.vocab, bias=False)
    teacher = nn.Linear(a.hidden, a.vocab, bias=False).requires_grad_(False)
    hidden = torch.randn(a.rows, a.hidden, requires_grad=True)
    t_hidden = torch.randn(a.rows, a.hidden)
    targets = torch.randint(0, a.vocab, (a.rows,))
    losses: dict[str, Callable[[], Tensor]] = {
        "linear_ce (SFT, chunk 1024)": lambda: linear_cross_entropy(hidden, head, targets, chunk_size=1024)[0],
        "linear_logprob (GRPO, chunk 1024)": lambda: linear_token_logprobs(
            hidden, head, targets, chunk_size=1024, with_entropy=True)[0].sum(),
        "fused_kd (KD, chunk 64)": lambda: chunked_kd_loss(hidden, t_hidden, head, teacher, targets, beta=0.5,
                                                           temperature=1.0, alpha=0.0, chunk_size=64,
                                                           vocab_size=None)[0],
    }

    def run(loss: Callable[[], Tensor], frozen: bool) -> float:
        head.weight.requires_grad_(not frozen)
        head.weight.grad = hidden.grad = None
        start = time.perf_counter()
        with torch.autocast("cpu", dtype=torch.bfloat16):
            value = loss()
        value.backward()
        return time.perf_counter() - start

    rows = []
    for name, loss in losses.items():
        times: dict[bool, list[float]] = {False: [], True: []}
        run(loss, False)  # warm-up
        for _ in range(a.repeats):
            for frozen in (False, True):
                times[frozen].append(run(loss, frozen))
        train, frozen = min(times[False]), min(times[True])
        rows.append({"loss": name, "trainable_head_s": round(train, 3), "frozen_head_s": round(frozen, 3),
                     "ratio": round(frozen / train, 3)})
    print(f"rows {a.rows}, H {a.hidden}, V {a.vocab}, bf16 autocast, forward + backward, best of {a.repeats}, "
          f"torch {torch.__version__}")
    print(bc.table(rows, list(rows[0])))
    result = {"bench": "fused_head", "rows": a.rows, "hidden": a.hidden, "vocab": a.vocab, "results": rows}
    bc.emit(result, a.json)


if __name__ == "__main__":
    main()
