"""``bench.py verify --trace-load``: the trace-answer check of ``format: r1`` loading, on a synthetic split.

Writes a CAMEL-format JSONL file of ``--rows`` R1-style rows (default 7,000, the size of ``camel-ai/gsm8k_distilled``):
a ``<think>`` block of ``TRACE_CHARS`` characters of number-dense arithmetic (about the median trace of that set),
then ``\\boxed{N}``; the gold is a GSM8K solution ending ``#### N``; every ``WRONG_EVERY``-th trace boxes ``N + 1``.
``load_rows`` runs on it with the check (``srlm_pl.data.traces.wrong_traces``, one ``verify_batch`` call) and, as the
baseline in the same process, with the check replaced by a no-op; best of ``--repeats``, caches cleared before each
run. ``ratio`` is the loading time with the check over the time without it.
"""

from __future__ import annotations

import json
import tempfile
import time
from pathlib import Path
from typing import Any

TRACE_CHARS = 3600
WRONG_EVERY = 20
COLUMNS = ["rows", "wrong_counted", "load_s", "load_without_check_s", "check_s", "check_us_per_row", "ratio"]


def write_split(path: Path, rows: int) -> Path:
    """``rows`` CAMEL rows; trace ``i`` answers ``100 + i`` (``101 + i`` when ``i % WRONG_EVERY == 0``)."""
    lines = []
    for i in range(rows):
        n = 100 + i
        step = f"She sells {i % 17} + {i % 5} = {i % 17 + i % 5} eggs, so {i % 9} * 2 = {i % 9 * 2} dollars.\n"
        reasoning = (step * (TRACE_CHARS // len(step) + 1))[:TRACE_CHARS]
        final = n + 1 if i % WRONG_EVERY == 0 else n
        trace = f"<think>\n{reasoning}\n</think>\n\nThe total is \\boxed{{{final}}}."
        lines.append(json.dumps({"id": f"r{i}", "problem": f"Problem {i}?", "reasoning_solution": trace,
                                 "groud_truth_solution": f"{n - 1} + 1 = <<{n - 1}+1={n}>>{n}\n#### {n}"}))
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def _best_load(path: Path, repeats: int) -> tuple[float, Any]:
    from srlm_pl.data.sources import DataSource, load_rows
    from srlm_pl.verifiers import clear_caches

    best, report = float("inf"), None
    for _ in range(repeats):
        clear_caches()
        start = time.perf_counter()
        _, report = load_rows(DataSource(path=str(path), format="r1", id_field="id"),
                              need=("question", "solution", "answer"))
        best = min(best, time.perf_counter() - start)
    return best, report


def trace_load_rows(rows: int, repeats: int) -> list[dict[str, Any]]:
    import srlm_pl.data.sources as sources

    with tempfile.TemporaryDirectory() as tmp:
        path = write_split(Path(tmp) / "train.jsonl", rows)
        with_check, report = _best_load(path, repeats)
        check = sources.wrong_traces
        sources.wrong_traces = lambda golds, traces: []  # the baseline: the same load without the check
        try:
            without, _ = _best_load(path, repeats)
        finally:
            sources.wrong_traces = check
    expected = len(range(0, rows, WRONG_EVERY))
    if report.wrong_traces != expected:
        raise SystemExit(f"counted {report.wrong_traces} wrong traces, expected {expected}")
    return [{"rows": rows, "wrong_counted": report.wrong_traces, "load_s": with_check, "load_without_check_s": without,
             "check_s": with_check - without, "check_us_per_row": (with_check - without) / rows * 1e6,
             "ratio": with_check / without}]
