"""``bench.py verify``: ``srlm_pl.verifiers`` against math-verify on the same pairs, in the same process.

Pairs: the hand-built GSM8K-style and MATH-500-style corpus (``data/verifier_corpus.jsonl``) and, unless
``--no-real-data``, pairs built from the GSM8K test set and MATH-500 in ``--data``. Ours runs ``verify_batch`` in
chunks of ``--batch`` pairs (one GRPO step's worth) with every cache cleared before each repeat and the worker pool
already warm; math-verify runs ``parse`` + ``verify`` per pair with its parse caches cleared before each repeat; best
of ``--repeats``. ``speedup`` is math-verify's time over ours. Worst-case latency is measured over the hostile inputs
(``data/verifier_hostile.json``) with a 1 s timeout, then a slow legitimate pair that hits the deadline (its worker is
killed and respawned) and the next symbolic pair right after it (served by the other worker). With ``--think``,
only think-aware extraction is timed against the tag-blind path on long reasoning traces (:mod:`benchlib.verify_think`);
with ``--trace-load``, ``format: r1`` loading with and without the trace-answer check
(:mod:`benchlib.verify_trace_load`).
"""

from __future__ import annotations

import argparse
import logging
import os
import time
from pathlib import Path
from typing import Any

from benchlib import common
from benchlib.verify_data import Pair, corpus, hostile, real_pairs
from benchlib.verify_think import COLUMNS as THINK_COLUMNS
from benchlib.verify_think import think_rows
from benchlib.verify_trace_load import COLUMNS as TRACE_LOAD_COLUMNS
from benchlib.verify_trace_load import trace_load_rows

COLUMNS = ["pairs", "n", "ours_pairs_per_s", "math_verify_pairs_per_s", "speedup", "agreement",
           "ours_accuracy_vs_label", "math_verify_accuracy_vs_label"]
NAMES = {"gsm8k": "GSM8K-style", "math": "MATH-500-style"}


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--repeats", type=int, default=3, help="best of")
    p.add_argument("--batch", type=int, default=64, help="pairs per verify_batch call")
    p.add_argument("--data", type=Path, default=Path(os.environ.get("SRLM_SHARED_DATA", common.DATA)),
                   help="folder with gsm8k/test.jsonl and math500/test.jsonl")
    p.add_argument("--no-real-data", action="store_true", help="only the hand-built corpus")
    p.add_argument("--json", help="also write the result here")
    p.add_argument("--think", action="store_true",
                   help="only time think-aware extraction against the tag-blind path on long reasoning traces")
    p.add_argument("--trace-load", action="store_true",
                   help="only time format: r1 loading of a synthetic split with and without the trace-answer check")
    p.add_argument("--rows", type=int, default=7000, help="rows of the synthetic split (--trace-load)")


def time_ours(pairs: list[Pair], batch: int, repeats: int) -> tuple[float, list[bool]]:
    from srlm_pl.verifiers import clear_caches, verify_batch

    best, verdicts = float("inf"), []
    for _ in range(repeats):
        clear_caches()
        start = time.perf_counter()
        verdicts = []
        for i in range(0, len(pairs), batch):
            chunk = pairs[i: i + batch]
            verdicts += verify_batch([p.gold for p in chunk], [p.completion for p in chunk], timeout=5.0)
        best = min(best, time.perf_counter() - start)
    return best, [bool(v) for v in verdicts]


def time_math_verify(pairs: list[Pair], repeats: int) -> tuple[float, list[bool]]:
    import math_verify
    from math_verify import parser as mv_parser

    logging.getLogger("math_verify").setLevel(logging.CRITICAL)
    best, verdicts = float("inf"), []
    for _ in range(repeats):
        for name in ("parse_latex_cached", "parse_expr_cached"):
            cached = getattr(mv_parser, name, None)
            if cached is not None and hasattr(cached, "cache_clear"):
                cached.cache_clear()
        start = time.perf_counter()
        verdicts = []
        for p in pairs:
            gold = math_verify.parse(p.gold if p.style == "gsm8k" else f"${p.gold}$")
            verdicts.append(bool(math_verify.verify(gold, math_verify.parse(p.completion))))
        best = min(best, time.perf_counter() - start)
    return best, verdicts


def _timed(gold: str, completion: str, case: object) -> dict[str, Any]:
    from srlm_pl.verifiers import verify

    start = time.perf_counter()
    verdict = verify(gold, completion, timeout=1.0)
    return {"case": case, "seconds": time.perf_counter() - start, "status": verdict.status, "path": verdict.path}


def latency() -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Latency of every hostile input; then of the slow pair that hits the deadline and of the pair after it."""
    from srlm_pl.verifiers import clear_caches

    rows = []
    for i, (gold, completion) in enumerate(hostile()):
        clear_caches()
        rows.append(_timed(gold, completion, i))
    deadline = [_timed("(x+1)^{300}(x-1)^{300}", "\\boxed{(x^2-1)^{300}}", "slow-expand (deadline)"),
                _timed("\\frac{\\sqrt{6}}{6}", "\\boxed{\\frac{1}{\\sqrt6}}", "next pair after the kill")]
    return rows, deadline


def run(a: argparse.Namespace) -> None:
    from srlm_pl.verifiers import warmup

    if a.trace_load:
        rows = trace_load_rows(a.rows, a.repeats)
        print(common.table(rows, TRACE_LOAD_COLUMNS))
        common.emit({"bench": "verify_trace_load", "rows": rows}, a.json)
        return
    if a.think:
        rows = think_rows(a.data, a.repeats)
        print(common.table(rows, THINK_COLUMNS))
        common.emit({"bench": "verify_think", "rows": rows}, a.json)
        return
    pairs = corpus()
    groups = {style: [p for p in pairs if p.style == style] for style in NAMES}
    real = {} if a.no_real_data or not a.data.is_dir() else real_pairs(a.data)
    for style, extra in real.items():
        groups[style] += extra
    if not warmup(wait=True, timeout=60.0):
        raise SystemExit("verifier worker pool did not start")
    rows = []
    for style, group in groups.items():
        ours_s, ours_v = time_ours(group, a.batch, a.repeats)
        mv_s, mv_v = time_math_verify(group, a.repeats)
        n = len(group)
        rows.append({"pairs": NAMES[style], "n": n, "ours_pairs_per_s": n / ours_s, "math_verify_pairs_per_s": n / mv_s,
                     "speedup": mv_s / ours_s, "agreement": sum(x == y for x, y in zip(ours_v, mv_v, strict=True)) / n,
                     "ours_accuracy_vs_label": sum(v == p.expected for v, p in zip(ours_v, group, strict=True)) / n,
                     "math_verify_accuracy_vs_label": sum(v == p.expected for v, p in zip(mv_v, group, strict=True))
                     / n})
    hostile_rows, deadline = latency()
    worst = max(hostile_rows, key=lambda r: r["seconds"])
    print(common.table(rows, COLUMNS))
    print(f"hostile inputs: {len(hostile_rows)} cases, worst latency {worst['seconds'] * 1000:.0f} ms "
          f"(case {worst['case']}, {worst['status']} via {worst['path']}), timeout 1.0 s")
    for row in deadline:
        print(f"{row['case']}: {row['seconds'] * 1000:.0f} ms ({row['status']} via {row['path']})")
    common.emit({"bench": "verify", "rows": rows, "hostile_worst": worst, "hostile": hostile_rows,
                 "deadline": deadline, "real_data": bool(real)}, a.json)
