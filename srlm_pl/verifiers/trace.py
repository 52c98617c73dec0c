"""Is a text a well-formed R1 reasoning trace: one ``<think> ... </think>`` block, then a final answer after it.

The one rule set for every consumer: ``DataSource(format="r1" | "messages")`` (``srlm_pl.data.sources``),
``tools/make_traces.py --format r1`` (``srlm_pl.kd.traces``, which maps the problems to its drop reasons) and
:class:`srlm_pl.verifiers.ThinkFormatReward`. Checked in this order, the first that applies is the problem:

* ``no <think> block``: neither tag occurs;
* ``two <think> blocks``: more than one ``<think>`` or more than one ``</think>`` (a second block or a stray tag);
* ``no closing </think>``: one ``<think>`` and no ``</think>``;
* ``no opening <think> before </think>``: a ``</think>`` with no ``<think>``, or before it;
* ``text before <think>``: anything but whitespace before the block;
* ``empty <think> block``: only whitespace inside it;
* ``no final answer after </think>``: the text after ``</think>`` states no answer as ``\\boxed{}``, ``#### N`` or
  "The answer is N" (``FINAL_ANSWER_STYLES``, found by :func:`.extract.find_answer` in that text alone, so an
  answer inside the block does not count and a bare number is no final answer).

This is a format check, not answer extraction: :func:`.think.split_think` keeps its lenient reading of the same
tags (stray closers, unclosed blocks) for finding answers. The cost is linear in the text: ``str.count`` /
``str.find`` for the tags (no regular expression over the whole text), and the answer search reads only the
last ``TAIL_CHARS`` of the part after ``</think>``.
"""

from __future__ import annotations

from typing import NamedTuple

from .extract import find_answer
from .think import THINK_CLOSE, THINK_OPEN

# The final-answer styles a trace may end with (strategy names of srlm_pl.verifiers.extract).
FINAL_ANSWER_STYLES: tuple[str, ...] = ("boxed", "gsm8k", "answer_is")

NO_BLOCK = "no <think> block"
TWO_BLOCKS = "two <think> blocks"
UNCLOSED = "no closing </think>"
UNOPENED = "no opening <think> before </think>"
TEXT_BEFORE = "text before <think>"
EMPTY_BLOCK = "empty <think> block"
NO_FINAL_ANSWER = "no final answer after </think>"
# every problem trace_problem can name, in the order they are checked
TRACE_PROBLEMS: tuple[str, ...] = (NO_BLOCK, TWO_BLOCKS, UNCLOSED, UNOPENED, TEXT_BEFORE, EMPTY_BLOCK,
                                   NO_FINAL_ANSWER)


class TraceCheck(NamedTuple):
    """The verdict on one text: ``problem`` is None for a well-formed trace, else one of ``TRACE_PROBLEMS``.

    ``think`` (the text inside the block) and ``final`` (the text after ``</think>``) are set once the block is
    well-formed (also for ``no final answer after </think>``), else empty; ``answer`` is the final answer found
    in ``final`` (None unless the trace is well-formed)."""

    problem: str | None
    think: str = ""
    final: str = ""
    answer: str | None = None


def check_trace(text: str) -> TraceCheck:
    """Check ``text`` against the trace rules (module docstring) and split it at its block."""
    n_open, n_close = text.count(THINK_OPEN), text.count(THINK_CLOSE)
    if n_open == 0 and n_close == 0:
        return TraceCheck(NO_BLOCK)
    if n_open > 1 or n_close > 1:
        return TraceCheck(TWO_BLOCKS)
    if n_close == 0:
        return TraceCheck(UNCLOSED)
    start, end = text.find(THINK_OPEN), text.find(THINK_CLOSE)
    if start < 0 or end < start:
        return TraceCheck(UNOPENED)
    if text[:start].strip():
        return TraceCheck(TEXT_BEFORE)
    think, final = text[start + len(THINK_OPEN) : end], text[end + len(THINK_CLOSE) :]
    if not think.strip():
        return TraceCheck(EMPTY_BLOCK)
    found = find_answer(final, FINAL_ANSWER_STYLES, think=False)
    if found is None:
        return TraceCheck(NO_FINAL_ANSWER, think, final)
    return TraceCheck(None, think, final, found.text)


def trace_problem(text: str) -> str | None:
    """None when ``text`` is a well-formed trace, else the first problem (one of ``TRACE_PROBLEMS``)."""
    return check_trace(text).problem
