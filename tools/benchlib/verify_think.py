"""``bench.py verify --think``: think-aware answer extraction against the tag-blind path, in the same process.

Traces imitate R1-style completions: ``<think>`` + reasoning + ``</think>`` + a short answer. The reasoning is GSM8K
test solutions (``--data``; a fixed arithmetic sentence when the file is missing) concatenated up to each length,
so it is dense with numbers; the answer after the block is "The answer is N." with N the trace's own gold.
For every length, ``extract_answer`` runs on every trace with ``think=True`` (the default) and ``think=False`` (the
extraction without think handling, the baseline), best of ``--repeats``; ``ratio`` is think-aware time over
baseline time, and ``think_correct``/``plain_correct`` the fraction of traces whose extracted answer is N.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

LENGTHS = (1_000, 4_000, 8_000, 32_000, 1_000_000)
COLUMNS = ["chars", "traces", "think_us", "plain_us", "ratio", "think_correct", "plain_correct"]
FALLBACK_REASONING = "She sells 16 - 3 - 4 = 9 eggs, so she makes 9 * 2 = 18 dollars a day.\n"


def _reasoning(data: Path) -> list[str]:
    path = data / "gsm8k" / "test.jsonl"
    if not path.is_file():
        return [FALLBACK_REASONING] * 50
    return [json.loads(line)["answer"].split("####")[0] for line in path.open()]


def traces(data: Path, length: int, count: int) -> list[tuple[str, str]]:
    """``count`` (trace, gold) pairs whose think block holds ``length`` characters of reasoning."""
    pool = _reasoning(data)
    out = []
    for i in range(count):
        parts, size, j = [], 0, i
        while size < length:
            parts.append(pool[j % len(pool)])
            size += len(parts[-1])
            j += 7
        gold = str(100 + i)
        out.append((f"<think>\n{''.join(parts)[:length]}\n</think>\n\nThe answer is {gold}.", gold))
    return out


def _best(fn: Any, items: list[str], repeats: int) -> tuple[float, list[str | None]]:
    best, out = float("inf"), []
    for _ in range(repeats):
        start = time.perf_counter()
        out = [fn(t) for t in items]
        best = min(best, time.perf_counter() - start)
    return best, out


def think_rows(data: Path, repeats: int) -> list[dict[str, Any]]:
    from srlm_pl.verifiers import extract_answer

    rows = []
    for length in LENGTHS:
        pairs = traces(data, length, 20 if length > 100_000 else 200)
        texts, golds = [t for t, _ in pairs], [g for _, g in pairs]
        think_s, think_out = _best(extract_answer, texts, repeats)
        plain_s, plain_out = _best(lambda t: extract_answer(t, think=False), texts, repeats)
        n = len(texts)
        rows.append({"chars": length, "traces": n, "think_us": think_s / n * 1e6, "plain_us": plain_s / n * 1e6,
                     "ratio": think_s / plain_s,
                     "think_correct": sum(a == g for a, g in zip(think_out, golds, strict=True)) / n,
                     "plain_correct": sum(a == g for a, g in zip(plain_out, golds, strict=True)) / n})
    return rows
