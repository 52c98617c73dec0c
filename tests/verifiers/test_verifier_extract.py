"""Answer extraction: boxes, markers, bare answers, last number, priorities, hostile text."""

from __future__ import annotations

import time

import pytest

from srlm_pl.verifiers import extract_answer, extract_gold, find_answer
from srlm_pl.verifiers.extract import TAIL_CHARS, last_boxed, sanitize


@pytest.mark.parametrize(
    ("completion", "expected", "style"),
    [
        ("So \\boxed{\\frac{1}{2}} and finally \\boxed{3}.", "3", "boxed"),
        (
            "We get $\\boxed{\\left( 3, \\frac{\\pi}{2} \\right)}$.",
            "\\left( 3, \\frac{\\pi}{2} \\right)",
            "boxed",
        ),
        ("\\boxed{\\boxed{7}}", "7", "boxed"),
        ("first \\boxed{1} then truncated \\boxed{2", "1", "boxed"),
        ("\\fbox{12}", "12", "boxed"),
        ("\\boxed {5}", "5", "boxed"),
        ("so the answer is \\boxed 5 here", "5", "boxed"),
        ("set \\boxed{\\{1, 2\\}} done", "\\{1, 2\\}", "boxed"),
        (
            "matrix \\boxed{\\begin{pmatrix} 1 \\\\ {2} \\end{pmatrix}}",
            "\\begin{pmatrix} 1 \\\\ {2} \\end{pmatrix}",
            "boxed",
        ),
        ("Janet sells 9 eggs.\n#### 18", "18", "gsm8k"),
        ("#### 1,450,000\n", "1,450,000", "gsm8k"),
        ("Thus, the answer is $18.00$.", "18.00", "answer_is"),
        ("The final answer is 18 apples, because she had more.", "18 apples", "answer_is"),
        ("So the answer is: 42.", "42", "answer_is"),
        ("The final answer is:\n\n$$\n\\frac{14}{3}\n$$", "\\frac{14}{3}", "answer_is"),
        ("**Final Answer:** 7", "7", "answer_colon"),
        ("Answer: $-3$", "-3", "answer_colon"),
        ("\\frac{14}{3}", "\\frac{14}{3}", "whole"),
        ("$\\left( 3, \\frac{\\pi}{2} \\right)$", "\\left( 3, \\frac{\\pi}{2} \\right)", "whole"),
        ("Evelyn", "Evelyn", "whole"),
        ("She has 5 apples and buys 7 more, 12 in total.", "12", "last_number"),
        ("The cost was 1,250 dollars.", "1,250", "last_number"),
        ("Temperature fell to -4 overnight", "-4", "last_number"),
    ],
)
def test_extraction_cases(completion: str, expected: str, style: str) -> None:
    found = find_answer(completion)
    assert found is not None
    assert found.text == expected
    assert found.style == style
    assert extract_answer(completion) == expected


def test_no_answer_returns_none() -> None:
    assert extract_answer("I am not sure how to solve this problem, sorry about that.") is None
    assert extract_answer("") is None
    assert extract_answer("\\boxed{}") is None


def test_priority_is_configurable() -> None:
    text = "The answer is 5.\n#### 7\nso \\boxed{9}"
    assert extract_answer(text) == "9"
    assert extract_answer(text, ("gsm8k", "answer_is")) == "7"
    assert extract_answer(text, ("answer_is", "gsm8k")) == "5"
    assert extract_answer("the total is 12", ("boxed",)) is None
    with pytest.raises(ValueError, match="unknown extraction style"):
        extract_answer("x", ("nope",))


def test_escaped_braces_and_row_breaks_do_not_confuse_the_scanner() -> None:
    assert last_boxed("\\boxed{\\{1,2\\}}") == "\\{1,2\\}"
    assert last_boxed("\\boxed{a \\\\{b} c}") == "a \\\\{b} c"
    assert last_boxed("} } \\boxed{4} }") == "4"


def test_only_the_tail_is_scanned() -> None:
    early = "\\boxed{1}" + "x" * (TAIL_CHARS + 10) + " no final answer here"
    assert extract_answer(early, ("boxed",)) is None
    late = "y" * 100_000 + " so \\boxed{42}"
    assert extract_answer(late) == "42"


def test_gold_extraction() -> None:
    assert extract_gold("She makes 9 * 2 = $<<9*2=18>>18 every day.\n#### 18") == "18"
    assert extract_gold("Therefore $\\boxed{\\frac{14}{3}}$.") == "\\frac{14}{3}"
    assert extract_gold("\\frac{14}{3}") == "\\frac{14}{3}"
    assert extract_gold("  ") is None


def test_sanitize_drops_nul_and_surrogates_and_decodes_bytes() -> None:
    assert sanitize("1\x002\ud8003") == "123"
    assert sanitize(b"\\boxed{4}\xff") == "\\boxed{4}\ufffd"
    assert extract_answer("\x00\\boxed{5\ud800}") == "5"
    assert extract_answer(b"so \\boxed{6}") == "6"


def test_hostile_inputs_extract_quickly() -> None:
    start = time.perf_counter()
    assert extract_answer("{" * 100_000 + "\\boxed{" * 50_000) is None
    assert extract_answer("\\boxed{" + "{" * 100_000 + "1" + "}" * 100_000 + "}") is None  # tail: only "}"s
    nested = "\\boxed{" + "{" * 2000 + "1" + "}" * 2000 + "}"
    assert extract_answer(nested) == "{" * 2000 + "1" + "}" * 2000
    assert extract_answer("9" * 1_000_000) == "9" * TAIL_CHARS
    assert time.perf_counter() - start < 5.0
