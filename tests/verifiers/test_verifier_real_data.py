"""Self-verification on the real GSM8K test and MATH-500 sets (skipped when ../shared/data is absent).

Every gold answer must verify as correct against itself, against itself in a box, and against its full
reference solution (and the full solution as gold against the bare answer). Known exceptions would be
listed with their reason in ``fixtures/real_data_exceptions.json``; the test fails on any unlisted one.
"""

from __future__ import annotations

import json
from pathlib import Path

from srlm_pl.verifiers import verify_batch
from verifier_paths import FIXTURES


def _rows(path: Path) -> list[dict]:
    with path.open() as f:
        return [json.loads(line) for line in f if line.strip()]


def _checks(root: Path) -> dict[str, tuple[list[str], list[str]]]:
    gsm = _rows(root / "gsm8k" / "test.jsonl")
    math = _rows(root / "math500" / "test.jsonl")
    g_answers = [r["answer"].split("####")[-1].strip() for r in gsm]
    g_solutions = [r["answer"] for r in gsm]
    m_answers = [r["answer"] for r in math]
    m_solutions = [r["solution"] for r in math]
    m_boxed = [f"so the answer is $\\boxed{{{a}}}$." for a in m_answers]
    return {
        "gsm8k/answer~answer": (g_answers, g_answers),
        "gsm8k/answer~solution": (g_answers, g_solutions),
        "gsm8k/solution~answer_is": (g_solutions, [f"The answer is {a}." for a in g_answers]),
        "math500/answer~answer": (m_answers, m_answers),
        "math500/answer~boxed": (m_answers, m_boxed),
        "math500/answer~solution": (m_answers, m_solutions),
        "math500/solution~boxed": (m_solutions, m_boxed),
    }


def test_every_gold_verifies_against_itself(warm_pool, real_data: Path) -> None:
    listed = json.loads((FIXTURES / "real_data_exceptions.json").read_text())
    allowed = {(e["check"], e["index"]) for e in listed}
    assert all(e["reason"].strip() for e in listed)
    failures = set()
    counts = {}
    for name, (golds, completions) in _checks(real_data).items():
        verdicts = verify_batch(golds, completions, timeout=10.0)
        bad = {(name, i) for i, v in enumerate(verdicts) if not v}
        failures |= bad
        counts[name] = (len(verdicts) - len(bad), len(verdicts))
    assert counts["gsm8k/answer~answer"][1] == 1319
    assert counts["math500/answer~answer"][1] == 500
    assert failures == allowed, counts
