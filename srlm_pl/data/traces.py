"""Reasoning-trace rows: the CAMEL field names of ``format: r1``, golds, and reading chat ``messages`` rows.

Whether a trace (CAMEL's ``reasoning_solution``, or the assistant turn of a ``messages`` row) is well-formed is
:func:`srlm_pl.verifiers.check_trace` (one ``<think> ... </think>`` block, then a final answer; docs/verifiers.md
has the rules), the same check make_traces and ``ThinkFormatReward`` use; ``srlm_pl.data.sources`` adds the file,
line and field to its problem and raises or skips the row. Whether a trace's final answer is the gold is
:func:`wrong_traces` (one ``verify_batch`` call per split).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from srlm_pl.data.answers import gold_from_solution
from srlm_pl.verifiers import Verdict, verify_batch
from srlm_pl.verifiers.extract import extract_gold

# ``format: r1``: camel-ai/gsm8k_distilled's field names (its ``groud_truth_solution`` is spelled so).
R1_FIELDS: dict[str, str] = {"question_field": "problem", "solution_field": "reasoning_solution",
                             "answer_field": "groud_truth_solution"}
ROLES = ("system", "user", "assistant")
# verify_batch deadlines of the trace-answer check: per symbolic pair, and for a whole split (numbers never need them)
TRACE_VERIFY_TIMEOUT = 1.0
TRACE_VERIFY_BATCH_TIMEOUT = 60.0
TRACE_VERIFY_PER_ROW = 0.02  # added to the split's deadline per row: large symbolic splits get time in proportion


class TraceProblem(ValueError):
    """What is wrong with one ``messages`` value, as a short phrase (no location)."""


def gold_from_text(text: str) -> str | None:
    """The gold in a text that holds a final answer: ``#### N`` (thousands commas dropped), ``\\boxed{N}``, or
    the text itself when it is a bare answer (``srlm_pl.data.answers.gold_from_solution``, then
    ``srlm_pl.verifiers.extract.extract_gold``)."""
    return gold_from_solution(text) or extract_gold(text)


def _turn_text(turn: Any, i: int) -> tuple[str, str]:
    if not isinstance(turn, dict):
        raise TraceProblem(f"turn {i} is a {type(turn).__name__}, expected an object with 'role' and 'content'")
    role, content = turn.get("role"), turn.get("content")
    if role not in ROLES:
        raise TraceProblem(f"turn {i} has role {role!r}, expected one of {list(ROLES)}")
    if not isinstance(content, str):
        raise TraceProblem(f"turn {i} ({role}) has content of type {type(content).__name__}, expected text")
    return role, content


def split_messages(messages: Any) -> tuple[str, str | None]:
    """(first user turn, last assistant turn or None) of a chat ``messages`` list; raises ``TraceProblem``.

    System turns are ignored (the prompt template's ``system_prompt`` applies), and so are the turns between the
    first user turn and the last assistant turn."""
    if not isinstance(messages, list):
        raise TraceProblem(f"is a {type(messages).__name__}, expected a list of {{role, content}} turns")
    turns = [_turn_text(turn, i) for i, turn in enumerate(messages)]
    users = [content for role, content in turns if role == "user"]
    if not users or not users[0].strip():
        raise TraceProblem("has no user turn" if not users else "has an empty first user turn")
    assistants = [content for role, content in turns if role == "assistant"]
    return users[0].strip(), assistants[-1] if assistants else None


def wrong_traces(golds: Sequence[str], traces: Sequence[str]) -> list[tuple[int, Verdict]]:
    """(index, verdict) of each trace whose final answer does not verify against its gold: ``incorrect``,
    ``no_answer``, ``invalid_gold``, ... but never ``timeout``: a deadline depends on the machine's load, and every
    process of a distributed run must keep the same rows, so an answer that could not be checked in time is kept
    and not counted. One :func:`srlm_pl.verifiers.verify_batch` call: think-aware extraction (the final answer after
    ``</think>``), numbers on the exact in-process path, other answers on the worker pool within
    ``TRACE_VERIFY_TIMEOUT`` each and ``TRACE_VERIFY_BATCH_TIMEOUT`` plus ``TRACE_VERIFY_PER_ROW`` per row in all."""
    verdicts = verify_batch(list(golds), list(traces), timeout=TRACE_VERIFY_TIMEOUT,
                            batch_timeout=TRACE_VERIFY_BATCH_TIMEOUT + TRACE_VERIFY_PER_ROW * len(golds))
    return [(i, v) for i, v in enumerate(verdicts) if not v.correct and v.status != "timeout"]
