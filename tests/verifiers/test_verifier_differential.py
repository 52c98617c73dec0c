"""Differential test against Hugging Face math-verify on the hand-built corpus (>= 300 pairs).

Every disagreement must be listed, with the reason ours is right, in
``fixtures/differential_disagreements.json``; an unlisted disagreement (or a listed one that no longer
occurs) fails the test, so the fixture always describes the current behaviour exactly.
"""

from __future__ import annotations

import json
import logging

import pytest

from srlm_pl.verifiers import verify_batch
from verifier_corpus import build_corpus
from verifier_paths import FIXTURES


def math_verify_verdicts(pairs) -> list[bool]:
    """math-verify as it is normally used: gold parsed (bare MATH answers wrapped in $...$), then verify."""
    mv = pytest.importorskip("math_verify")
    logging.getLogger("math_verify").setLevel(logging.CRITICAL)
    out = []
    for pair in pairs:
        gold_text = pair.gold if pair.style == "gsm8k" else f"${pair.gold}$"
        out.append(bool(mv.verify(mv.parse(gold_text), mv.parse(pair.completion))))
    return out


def test_agreement_with_math_verify(warm_pool) -> None:
    pytest.importorskip("math_verify")
    pairs = build_corpus()
    assert len(pairs) >= 300
    assert sum(p.style == "gsm8k" for p in pairs) >= 100 and sum(p.style == "math" for p in pairs) >= 200
    ours = verify_batch([p.gold for p in pairs], [p.completion for p in pairs], timeout=10.0)
    theirs = math_verify_verdicts(pairs)

    wrong = [
        (p.gold, p.completion, v.status) for p, v in zip(pairs, ours, strict=True) if bool(v) != p.expected
    ]
    assert wrong == [], "our verdict differs from the hand label"

    disagreements = {
        (p.gold, p.completion): (bool(v), m)
        for p, v, m in zip(pairs, ours, theirs, strict=True)
        if bool(v) != m
    }
    agreement = 1 - len(disagreements) / len(pairs)
    assert agreement >= 0.97, f"agreement {agreement:.2%}"

    listed = json.loads((FIXTURES / "differential_disagreements.json").read_text())
    listed_keys = {(d["gold"], d["completion"]): (d["ours"], d["math_verify"]) for d in listed}
    assert all(d["reason"].strip() for d in listed)
    assert disagreements == listed_keys
