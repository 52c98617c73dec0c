"""Benchmark srlm_pl.verifiers against math-verify on the same pairs, in the same process.

Usage::

    .venv/bin/python tools/bench_verify.py            # corpus + real data when ../shared/data exists
    .venv/bin/python tools/bench_verify.py --json out.json --repeats 3 --batch 64

Pairs: the hand-built GSM8K-style and MATH-500-style corpus of ``tests/verifiers/verifier_corpus.py``
and, when the real data folder is present (``$SRLM_SHARED_DATA`` or ``<repo>/../shared/data``), pairs
built from the GSM8K test set (gold: the full reference solution; completions: "The answer is N." and a
wrong N) and from MATH-500 (gold: the answer field; completions: the reference solution and another
problem's answer).

Timing: ours runs ``verify_batch`` in chunks of ``--batch`` pairs (one GRPO step's worth) with every cache
cleared before each repeat and the worker pool already warm; math-verify runs ``parse`` + ``verify`` per
pair with its parse caches cleared before each repeat. The best of ``--repeats`` runs is reported. Worst
case latency is measured over the hostile inputs of ``tests/verifiers/test_verifier_safety.py`` with a
1 s timeout.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests" / "verifiers"))

from verifier_corpus import Pair, build_corpus  # noqa: E402

from srlm_pl.verifiers import clear_caches, verify, verify_batch, warmup  # noqa: E402


def _real_pairs(root: Path) -> dict[str, list[Pair]]:
    out: dict[str, list[Pair]] = {"gsm8k": [], "math": []}
    gsm_path, math_path = root / "gsm8k" / "test.jsonl", root / "math500" / "test.jsonl"
    if gsm_path.is_file():
        rows = [json.loads(line) for line in gsm_path.open()]
        for r in rows:
            n = r["answer"].split("####")[-1].strip()
            wrong = str(int(n.replace(",", "")) + 1) if n.replace(",", "").lstrip("-").isdigit() else n + "1"
            out["gsm8k"].append(Pair("gsm8k", r["answer"], f"Adding it all up. The answer is {n}.", True))
            out["gsm8k"].append(
                Pair("gsm8k", r["answer"], f"Adding it all up. The answer is {wrong}.", False)
            )
    if math_path.is_file():
        rows = [json.loads(line) for line in math_path.open()]
        for i, r in enumerate(rows):
            other = rows[(i + 7) % len(rows)]["answer"]
            out["math"].append(Pair("math", r["answer"], r["solution"], True))
            out["math"].append(
                Pair(
                    "math",
                    r["answer"],
                    f"Therefore the answer is $\\boxed{{{other}}}$.",
                    other == r["answer"],
                )
            )
    return out


def _time_ours(pairs: list[Pair], batch: int, repeats: int) -> tuple[float, list[bool]]:
    best, verdicts = float("inf"), []
    for _ in range(repeats):
        clear_caches()
        start = time.perf_counter()
        verdicts = []
        for i in range(0, len(pairs), batch):
            chunk = pairs[i : i + batch]
            verdicts += verify_batch([p.gold for p in chunk], [p.completion for p in chunk], timeout=5.0)
        best = min(best, time.perf_counter() - start)
    return best, [bool(v) for v in verdicts]


def _time_math_verify(pairs: list[Pair], repeats: int) -> tuple[float, list[bool]]:
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


def _timed(gold: str, completion: str, case: object) -> dict:
    start = time.perf_counter()
    verdict = verify(gold, completion, timeout=1.0)
    return {
        "case": case,
        "seconds": time.perf_counter() - start,
        "status": verdict.status,
        "path": verdict.path,
    }


def _hostile() -> tuple[list[dict], list[dict]]:
    """Latency of every hostile input, then of a slow legitimate pair that hits the deadline (its worker
    is killed and respawned) and of the next symbolic pair right after it (served by the other worker)."""
    from test_verifier_safety import HOSTILE

    rows = []
    for i, (gold, completion) in enumerate(HOSTILE):
        clear_caches()
        rows.append(_timed(gold, completion, i))
    deadline = [
        _timed("(x+1)^{300}(x-1)^{300}", "\\boxed{(x^2-1)^{300}}", "slow-expand (deadline)"),
        _timed("\\frac{\\sqrt{6}}{6}", "\\boxed{\\frac{1}{\\sqrt6}}", "next pair after the kill"),
    ]
    return rows, deadline


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument(
        "--data", type=Path, default=Path(os.environ.get("SRLM_SHARED_DATA", ROOT.parent / "shared" / "data"))
    )
    parser.add_argument("--no-real-data", action="store_true")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()

    corpus = build_corpus()
    groups = {
        "gsm8k": [p for p in corpus if p.style == "gsm8k"],
        "math": [p for p in corpus if p.style == "math"],
    }
    real = {} if args.no_real_data or not args.data.is_dir() else _real_pairs(args.data)
    for style, pairs in real.items():
        groups[style] = groups[style] + pairs
    if not warmup(wait=True, timeout=60.0):
        raise SystemExit("worker pool did not start")

    results = {}
    for style, pairs in groups.items():
        ours_s, ours_v = _time_ours(pairs, args.batch, args.repeats)
        mv_s, mv_v = _time_math_verify(pairs, args.repeats)
        agree = sum(a == b for a, b in zip(ours_v, mv_v, strict=True)) / len(pairs)
        results[style] = {
            "pairs": len(pairs),
            "ours_pairs_per_s": len(pairs) / ours_s,
            "math_verify_pairs_per_s": len(pairs) / mv_s,
            "speedup": mv_s / ours_s,
            "agreement": agree,
            "ours_accuracy_vs_label": sum(v == p.expected for v, p in zip(ours_v, pairs, strict=True))
            / len(pairs),
            "math_verify_accuracy_vs_label": sum(v == p.expected for v, p in zip(mv_v, pairs, strict=True))
            / len(pairs),
        }
    hostile, deadline = _hostile()
    worst = max(hostile, key=lambda r: r["seconds"])
    report = {
        "results": results,
        "hostile_worst": worst,
        "hostile": hostile,
        "deadline": deadline,
        "real_data": bool(real),
    }

    names = {"gsm8k": "GSM8K-style", "math": "MATH-500-style"}
    header = (
        f"{'pairs':<16}{'n':>6}{'ours pairs/s':>15}{'math-verify pairs/s':>22}{'speedup':>10}{'agree':>8}"
    )
    print(header + f"{'label acc ours/mv':>20}")
    for style, r in results.items():
        print(
            f"{names[style]:<16}{r['pairs']:>6}{r['ours_pairs_per_s']:>15.0f}{r['math_verify_pairs_per_s']:>22.0f}"
            f"{r['speedup']:>9.1f}x{r['agreement']:>8.1%}"
            f"{r['ours_accuracy_vs_label']:>11.1%} / {r['math_verify_accuracy_vs_label']:.1%}"
        )
    print(
        f"hostile inputs: {len(hostile)} cases, worst latency {worst['seconds'] * 1000:.0f} ms "
        f"(case {worst['case']}, {worst['status']} via {worst['path']}), timeout 1.0 s"
    )
    for row in deadline:
        print(f"{row['case']}: {row['seconds'] * 1000:.0f} ms ({row['status']} via {row['path']})")
    if args.json is not None:
        args.json.write_text(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
