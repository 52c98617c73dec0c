"""The benchmark's copies of the verifier test data (``tools/benchlib/data``) equal the tests' own, so the two
cannot drift apart (tools never import tests; this test reads the tools' files as data)."""

from __future__ import annotations

import json
from pathlib import Path

from test_verifier_safety import HOSTILE

from verifier_corpus import build_corpus

DATA = Path(__file__).resolve().parents[2] / "tools" / "benchlib" / "data"


def test_benchmark_corpus_copy_is_current() -> None:
    rows = [json.loads(line) for line in (DATA / "verifier_corpus.jsonl").read_text().splitlines() if line.strip()]
    expected = [{"style": p.style, "gold": p.gold, "completion": p.completion, "expected": p.expected}
                for p in build_corpus()]
    assert len(rows) == len(expected) > 400
    assert rows == expected


def test_benchmark_hostile_inputs_copy_is_current() -> None:
    def join(parts: list[list]) -> str:
        return "".join(text * repeat for text, repeat in parts)

    cases = json.loads((DATA / "verifier_hostile.json").read_text())
    assert [(join(c["gold"]), join(c["completion"])) for c in cases] == list(HOSTILE)
