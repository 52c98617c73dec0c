"""Last-position logits of a bfloat16 model: the LM head on a strided ``hidden[:, -1:]`` view vs a contiguous copy.

Usage::

    .venv/bin/python tools/bench_head_input.py                # SmolLM2-135M-Instruct (bf16) when built, else tiny
    .venv/bin/python tools/bench_head_input.py --batch 4 --seq 288 --repeats 5 --json out.json

Two measurements, both variants alternating in this one process (best of ``--repeats``), with the transient
resident memory of each call sampled by a thread every 0.5 ms (median over the repeats):

* ``linear``: ``F.linear`` of a ``[B, 1, H]`` slice of ``[B, T, H]`` with the model's LM head weight, strided
  vs ``.contiguous()``;
* ``teacher``: the distillation teacher's forward (``srlm_pl.modules.distill.teacher_hidden_states``, which asks
  for ``logits_to_keep=1``) with the contiguity hook (``srlm_pl.models.forward``) switched off vs on.
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import threading
import time
from collections.abc import Callable
from typing import Any

import bench_common as bc
import torch
import torch.nn.functional as F

import srlm_pl.modules.distill as distill
from srlm_pl.models.loading import ModelSpec, load_model, load_tokenizer


class Peak:
    """Resident set size sampled in a thread: the peak above the level at ``reset``."""

    def __init__(self) -> None:
        self.base = self.peak = self.rss()
        threading.Thread(target=self._run, daemon=True).start()

    @staticmethod
    def rss() -> int:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * 4096

    def _run(self) -> None:
        while True:
            self.peak = max(self.peak, self.rss())
            time.sleep(0.0005)

    def reset(self) -> None:
        time.sleep(0.01)
        self.base = self.peak = self.rss()

    def above(self) -> float:
        time.sleep(0.01)
        return (self.peak - self.base) / 2**20


def measure(fn: Callable[[], Any], peak: Peak) -> tuple[float, float]:
    peak.reset()
    t = time.perf_counter()
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16, cache_enabled=False):
        fn()
    return time.perf_counter() - t, peak.above()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--seq", type=int, default=288, help="tokens per row (the KD benchmark's batches reach ~288)")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--json", help="also write the result here")
    a = ap.parse_args()
    torch.manual_seed(0)
    spec = ModelSpec(name_or_path=str(bc.SMOLLM2) if bc.SMOLLM2.is_dir() else "tiny", dtype="bfloat16")
    model = load_model(spec, load_tokenizer(spec), trainable=False)
    head = model.get_output_embeddings().weight
    vocab = model.config.vocab_size
    ids = torch.randint(0, vocab, (a.batch, a.seq))
    batch = {"input_ids": ids, "attention_mask": torch.ones_like(ids)}
    hidden = torch.randn(a.batch, a.seq, head.shape[1], dtype=torch.bfloat16)
    peak = Peak()
    off = contextlib.nullcontext

    def teacher(hook: bool) -> Callable[[], Any]:
        def run() -> Any:
            if not hook:  # the forward as it was: no contiguity hook
                saved = distill.contiguous_head_input
                distill.contiguous_head_input = lambda model: off()
            try:
                return distill.teacher_hidden_states(model, batch)
            finally:
                if not hook:
                    distill.contiguous_head_input = saved
        return run

    variants = {
        ("linear", "strided"): lambda: F.linear(hidden[:, -1:], head),
        ("linear", "contiguous"): lambda: F.linear(hidden[:, -1:].contiguous(), head),
        ("teacher", "strided"): teacher(False),
        ("teacher", "contiguous"): teacher(True),
    }
    for fn in variants.values():  # warm-up (pages the weights in, builds oneDNN primitives)
        measure(fn, peak)
    runs: dict[tuple[str, str], list[tuple[float, float]]] = {key: [] for key in variants}
    for _ in range(a.repeats):
        for key, fn in variants.items():
            runs[key].append(measure(fn, peak))
    # fastest time; median transient memory (a sampler read racing a reset can inflate one repeat)
    best = {key: (min(s for s, _ in r), statistics.median(m for _, m in r)) for key, r in runs.items()}
    rows = []
    for what in ("linear", "teacher"):
        (s0, m0), (s1, m1) = best[(what, "strided")], best[(what, "contiguous")]
        rows.append({"measure": what, "strided_ms": round(s0 * 1000, 1), "contiguous_ms": round(s1 * 1000, 1),
                     "ratio": round(s1 / s0, 3), "strided_peak_mib": round(m0, 1),
                     "contiguous_peak_mib": round(m1, 1)})
    print(f"model {spec.name_or_path} (bf16), hidden [{a.batch}, {a.seq}, {head.shape[1]}], vocab {vocab}, "
          f"torch {torch.__version__}, best of {a.repeats}")
    print(bc.table(rows, list(rows[0])))
    result = {"bench": "head_input", "model": spec.name_or_path, "batch": a.batch, "seq": a.seq, "rows": rows}
    bc.emit(result, a.json)


if __name__ == "__main__":
    main()
