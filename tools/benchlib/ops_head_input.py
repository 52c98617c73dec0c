"""Last-position logits of a bfloat16 model: the LM head on a strided ``hidden[:, -1:]`` view vs a contiguous copy.

Both variants alternate in this one process (best of ``--repeats``); a thread samples the resident memory every
0.5 ms for the transient of each call (median over the repeats):

* ``linear``: ``F.linear`` of a ``[B, 1, H]`` slice of ``[B, T, H]`` with the model's LM head weight, strided vs
  ``.contiguous()``;
* ``teacher``: a frozen model's forward with ``logits_to_keep=1`` (what the distillation teacher runs), without vs
  inside ``srlm_pl.models.forward.contiguous_head_input``.

The model is SmolLM2-135M-Instruct in bf16 when its assets exist, else the ``tiny`` preset.
"""

from __future__ import annotations

import contextlib
import statistics
import threading
import time
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F

from benchlib import common
from srlm_pl.models import ModelSpec, load_model, load_tokenizer
from srlm_pl.models.forward import contiguous_head_input


class Peak:
    """Resident set size sampled in a thread: the peak above the level at ``reset``, in MiB."""

    def __init__(self) -> None:
        self.base = self.peak = self.rss()
        threading.Thread(target=self._run, daemon=True).start()

    @staticmethod
    def rss() -> int:
        return int(common.rss_gib() * common.GIB)

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


def _measure(fn: Callable[[], Any], peak: Peak) -> tuple[float, float]:
    peak.reset()
    t = time.perf_counter()
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16, cache_enabled=False):
        fn()
    return time.perf_counter() - t, peak.above()


def bench_head_input(batch: int, seq: int, repeats: int) -> tuple[str, list[dict[str, Any]]]:
    """The model used, and one row per measurement."""
    torch.manual_seed(0)
    spec = ModelSpec(name_or_path=str(common.SMOLLM2) if common.SMOLLM2.is_dir() else "tiny", dtype="bfloat16")
    model = load_model(spec, load_tokenizer(spec), trainable=False)
    head = model.get_output_embeddings().weight
    ids = torch.randint(0, model.config.vocab_size, (batch, seq))
    hidden = torch.randn(batch, seq, head.shape[1], dtype=torch.bfloat16)

    def teacher(hook: bool) -> Callable[[], Any]:
        def run() -> Any:
            with contiguous_head_input(model) if hook else contextlib.nullcontext():
                return model(input_ids=ids, attention_mask=torch.ones_like(ids), use_cache=False, logits_to_keep=1)
        return run

    variants = {("linear", "strided"): lambda: F.linear(hidden[:, -1:], head),
                ("linear", "contiguous"): lambda: F.linear(hidden[:, -1:].contiguous(), head),
                ("teacher", "strided"): teacher(False), ("teacher", "contiguous"): teacher(True)}
    peak = Peak()
    for fn in variants.values():  # warm-up: pages the weights in, builds oneDNN primitives
        _measure(fn, peak)
    runs: dict[tuple[str, str], list[tuple[float, float]]] = {key: [] for key in variants}
    for _ in range(repeats):
        for key, fn in variants.items():
            runs[key].append(_measure(fn, peak))
    # fastest time; median transient memory (a sampler read racing a reset can inflate one repeat)
    best = {key: (min(s for s, _ in r), statistics.median(m for _, m in r)) for key, r in runs.items()}
    rows = []
    for what in ("linear", "teacher"):
        (s0, m0), (s1, m1) = best[(what, "strided")], best[(what, "contiguous")]
        rows.append({"bench": "head input", "variant": what, "strided_ms": s0 * 1e3, "contiguous_ms": s1 * 1e3,
                     "ratio": s1 / s0, "strided_peak_mib": m0, "contiguous_peak_mib": m1})
    return spec.name_or_path, rows
