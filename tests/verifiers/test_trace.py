"""``trace_problem`` / ``check_trace``: the one well-formedness rule set for R1 traces (data loader, make_traces,
``ThinkFormatReward``), its split into think / final / answer, and huge or tag-heavy texts."""

from __future__ import annotations

import pytest

from srlm_pl.verifiers import TRACE_PROBLEMS, check_trace, split_think, trace_problem
from srlm_pl.verifiers.extract import TAIL_CHARS

# (text, the problem trace_problem names; None: well-formed)
RULES = [
    ("<think>3 + 2 = 5</think>\n\\boxed{5}", None),
    ("  \n\t<think>3 + 2 = 5</think> The answer is 5.", None),  # leading whitespace is allowed
    ("<think>3 + 2 = 5</think>\n#### 5", None),
    ("<think>3 + 2 = 5</think> so \\boxed{5}\n", None),
    ("3 + 2 = 5, \\boxed{5}", "no <think> block"),
    ("", "no <think> block"),
    ("<think>a</think><think>b</think> \\boxed{5}", "two <think> blocks"),
    ("<think>a</think> \\boxed{5} </think>", "two <think> blocks"),  # a stray closer
    ("<think>a <think> b</think> \\boxed{5}", "two <think> blocks"),  # a stray opener
    ("<think>x</think><think>", "two <think> blocks"),
    ("<think>3 + 2 = 5, \\boxed{5}", "no closing </think>"),
    ("3 + 2 = 5 </think> \\boxed{5}", "no opening <think> before </think>"),
    ("</think> 3 + 2 = 5 <think> \\boxed{5}", "no opening <think> before </think>"),
    ("Sure! <think>3 + 2 = 5</think> \\boxed{5}", "text before <think>"),
    ("<think> \n </think> \\boxed{5}", "empty <think> block"),
    ("<think></think> \\boxed{5}", "empty <think> block"),
    ("<think>\\boxed{5}</think> Done.", "no final answer after </think>"),  # an answer inside the block
    ("<think>3 + 2 = 5</think>\n5", "no final answer after </think>"),  # a bare number
    ("<think>3 + 2 = 5</think>\nAnswer: 5", "no final answer after </think>"),  # not one of the styles
    ("<think>3 + 2 = 5</think>\n  \n", "no final answer after </think>"),
]


@pytest.mark.parametrize(("text", "problem"), RULES)
def test_trace_problem_rules(text: str, problem: str | None) -> None:
    assert trace_problem(text) == problem


def test_every_problem_is_reachable_and_listed_in_order() -> None:
    seen = [p for _, p in RULES if p is not None]
    assert set(seen) == set(TRACE_PROBLEMS) and len(TRACE_PROBLEMS) == 7
    # the first rule that applies wins: text before an unclosed block is "no closing", not "text before"
    assert trace_problem("hi <think> x") == "no closing </think>"
    assert trace_problem("hi <think> </think> 5") == "text before <think>"


def test_check_trace_splits_at_the_block() -> None:
    checked = check_trace(" <think>\n3 + 2 = 5\n</think>\nSo \\boxed{5}.")
    assert checked == (None, "\n3 + 2 = 5\n", "\nSo \\boxed{5}.", "5")
    assert check_trace("<think>a</think> The answer is 12.").answer == "12"
    assert check_trace("<think>a</think> #### 1,234").answer == "1,234"
    # the right answer inside the block, a wrong one after it: the answer is the one after it
    assert check_trace("<think>\\boxed{5}</think> The answer is \\boxed{6}.").answer == "6"
    no_final = check_trace("<think>a</think> done")
    assert (no_final.problem, no_final.think, no_final.final, no_final.answer) == \
        ("no final answer after </think>", "a", " done", None)
    assert check_trace("<think>a").final == "" and check_trace("<think>a").answer is None


def test_extraction_stays_lenient() -> None:
    """The format check does not change what extraction reads from malformed traces."""
    assert split_think("reasoning 42 </think> The total is 18.").answer == " The total is 18."
    assert trace_problem("reasoning 42 </think> The total is 18.") == "no opening <think> before </think>"


def test_huge_and_tag_heavy_texts() -> None:
    block = "7 + 7 = 14 <thin k> </thin> " * 200_000  # about 5.6M characters, tag-like but no tag
    checked = check_trace(f"<think>{block}</think>\nThe answer is 14.")
    assert checked.problem is None and checked.answer == "14" and len(checked.think) == len(block)
    # a final part longer than the extraction window: only its tail is read, so an early answer is not found
    assert trace_problem(f"<think>a</think> \\boxed{{3}} {'x ' * TAIL_CHARS}") == "no final answer after </think>"
    assert trace_problem("<think>" * 100_000) == "two <think> blocks"
    assert trace_problem("<" * 1_000_000 + "<think>a</think> \\boxed{1}") == "text before <think>"
