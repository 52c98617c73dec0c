"""Summary math of the evaluation harness: pass@k against brute-force enumeration of k-subsets, maj@k, counts,
throughput, and the summary files (JSON keys, markdown tables)."""

from __future__ import annotations

import itertools
import json
import random
from pathlib import Path

import pytest

from srlm_pl.evaluation.summary import comparison_markdown, summarize, to_markdown, write_summary


def _rows(pid: str, verdicts: list[str], answers: list[str | None] | None = None, tokens: int = 10,
          seconds: float = 0.5) -> list[dict]:
    answers = answers or [None] * len(verdicts)
    return [{"id": pid, "sample": j, "verdict": v, "normalized": a, "extracted": a, "tokens": tokens,
             "truncated": j == 0, "seconds": seconds} for j, (v, a) in enumerate(zip(verdicts, answers, strict=True))]


def _brute_pass_at_k(flags: list[bool], k: int) -> float:
    """Fraction of all k-subsets of the samples that contain a correct one."""
    subsets = list(itertools.combinations(range(len(flags)), k))
    return sum(any(flags[i] for i in s) for s in subsets) / len(subsets)


def test_pass_at_k_of_the_summary_equals_brute_force_enumeration() -> None:
    rng = random.Random(0)
    n = 7
    problems = {}
    for p in range(12):
        flags = [rng.random() < rng.choice([0.0, 0.2, 0.5, 0.9]) for _ in range(n)]
        problems[f"p{p}"] = _rows(f"p{p}", ["correct" if f else "incorrect" for f in flags])
    s = summarize(problems, [1, 2, 3, 5, 7], data_report={}, info={})
    for k in (1, 2, 3, 5, 7):
        expected = sum(_brute_pass_at_k([r["verdict"] == "correct" for r in rows], k) for rows in problems.values())
        assert s["pass@k"][str(k)] == pytest.approx(expected / len(problems), abs=1e-12)
    assert s["accuracy"] == pytest.approx(s["pass@k"]["1"], abs=1e-12)  # pass@1 estimate = mean c/n
    assert s["samples_per_problem"] == n and s["problems"] == 12


def test_maj_at_k_counts_answers_ignores_no_answer_and_breaks_ties_by_first_seen() -> None:
    problems = {
        # majority "5" (wrong) beats a single correct "4"
        "a": _rows("a", ["incorrect", "correct", "incorrect", "no_answer"], ["5", "4", "5", None]),
        # tie 1-1 among answers: the first seen ("4", correct) wins; the no-answer sample does not vote
        "b": _rows("b", ["no_answer", "correct", "incorrect", "incorrect"], [None, "4", "7", "8"]),
        # nothing extracted: not correct
        "c": _rows("c", ["no_answer"] * 4, [None] * 4),
    }
    s = summarize(problems, [1, 2, 4], data_report={}, info={})
    # maj@1: only the first sample: a -> "5" wrong, b -> no vote, c -> no vote
    assert s["maj@k"]["1"] == 0.0
    # maj@2: a -> "5","4" tie -> "5" first -> wrong; b -> only "4" -> correct
    assert s["maj@k"]["2"] == pytest.approx(1 / 3)
    # maj@4: a -> "5" x2 -> wrong; b -> 4,7,8 tie -> "4" -> correct
    assert s["maj@k"]["4"] == pytest.approx(1 / 3)
    assert s["counts"] == {"correct": 2, "incorrect": 4, "no_answer": 6, "invalid_gold": 0, "timeout": 0}
    assert s["no_answer_rate"] == pytest.approx(6 / 12)
    assert s["correct_problems_any"] == 2


def test_counts_lengths_throughput_and_k_larger_than_n_dropped() -> None:
    problems = {"x": _rows("x", ["correct", "timeout"], tokens=12, seconds=0.25),
                "y": _rows("y", ["invalid_gold", "incorrect"], tokens=4, seconds=0.25)}
    s = summarize(problems, [1, 2, 8], data_report={"rows_without_answer": 3}, info={"model": "m"})
    assert set(s["pass@k"]) == {"1", "2"}  # k=8 > n=2 is left out
    assert s["accuracy"] == pytest.approx(0.25)
    assert s["pass@k"]["2"] == pytest.approx(0.5)
    assert s["counts"]["timeout"] == 1 and s["counts"]["invalid_gold"] == 1
    assert s["truncated"] == 2
    assert s["mean_completion_tokens"] == pytest.approx(8.0)
    assert s["generated_tokens"] == 32 and s["tokens_per_s"] == pytest.approx(32.0)
    assert s["rows_without_answer"] == 3 and s["model"] == "m"


def test_summary_files_have_the_documented_keys_and_tables(tmp_path: Path) -> None:
    problems = {"x": _rows("x", ["correct", "incorrect"], ["3", "4"]), "y": _rows("y", ["incorrect", "no_answer"])}
    data = {"rows_read": 4, "problems_in_data": 2, "rows_without_answer": 2, "rows_without_answer_ids": ["7", "9"],
            "rows_without_answer_reasons": ["f.jsonl:7: field 'Answer' is missing"], "bad_rows": 0,
            "bad_row_reasons": []}
    s = summarize(problems, [1, 2], data_report=data, info={"model": "m", "dataset": "svamp", "settings": {"n": 2}})
    js, md = write_summary(tmp_path, s)
    loaded = json.loads(js.read_text())
    for key in ("model", "dataset", "problems", "accuracy", "pass@k", "maj@k", "counts", "no_answer_rate",
                "truncated", "mean_completion_tokens", "tokens_per_s", "rows_read", "rows_without_answer",
                "rows_without_answer_ids", "bad_rows"):
        assert key in loaded, key
    assert loaded["accuracy"] == 0.25 and loaded["pass@k"]["2"] == 0.5
    text = md.read_text()
    assert text.splitlines()[0].startswith("| model | dataset | problems | accuracy | pass@2 | maj@2 |")
    assert "| `m` | svamp | 2 | 25.0% | 50.0% | 50.0% | 1 | 0 |" in text
    assert "rows without a gold answer (not scored): 2" in text and "Ids without an answer: 7, 9." in text
    assert "field 'Answer' is missing" in text
    assert to_markdown(s) == text
    table = comparison_markdown([("sft", s), ("grpo", s)], notes=["same set"])
    assert table.splitlines()[0] == "| recipe | accuracy | pass@2 | maj@2 | problems | no answer | mean tokens |"
    assert "| sft | 25.0% | 50.0% | 50.0% | 2 | 25.0% | 10.0 |" in table and table.rstrip().endswith("- same set")
