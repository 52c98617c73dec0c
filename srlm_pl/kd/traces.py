"""R1-style reasoning traces from a teacher: is a sample one closed ``<think> ... </think>`` block followed by a
final answer, and does that final answer (the text after the block) match the gold.

Used by ``tools/make_traces.py --format r1``, which writes rows in the layout of ``camel-ai/gsm8k_distilled``
(``problem``, ``reasoning_solution``, ``groud_truth_solution`` [sic]).

Choices:

* Well-formedness is :func:`srlm_pl.verifiers.check_trace`, the one rule set that ``DataSource(format="r1")``
  and ``ThinkFormatReward`` apply too (docs/verifiers.md has the rules), so every kept row loads as ``format: r1``;
  ``DROP_REASONS`` maps its problems to the drop reasons written here. The answer check never reads the text
  inside the block, so a right answer inside the block and a wrong one after it is rejected.
* Tags are never invented: a sample that reasons without tags is dropped (``no_think``). The one exception is
  a chat template that opens the block itself (DeepSeek-R1's ends the prompt with ``<think>\\n``): the
  completion then continues inside that block, and the tag, which the teacher was given, goes back in front.
* Completions are decoded without special tokens except the think tags, so a tokenizer that registers
  ``<think>`` as a special token keeps it in the text.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from srlm_pl.verifiers.think import THINK_CLOSE, THINK_OPEN
from srlm_pl.verifiers.trace import (
    EMPTY_BLOCK,
    NO_BLOCK,
    NO_FINAL_ANSWER,
    TEXT_BEFORE,
    TRACE_PROBLEMS,
    TWO_BLOCKS,
    UNCLOSED,
    UNOPENED,
    check_trace,
)

R1_INSTRUCTION = ("Solve the following math problem. First reason step by step inside <think> </think> tags, then "
                  "after </think> give the final answer within \\boxed{}.")
# the drop reason make_traces writes for each problem of srlm_pl.verifiers.check_trace
DROP_REASONS: dict[str, str] = {NO_BLOCK: "no_think", TWO_BLOCKS: "two_think_blocks", UNCLOSED: "unclosed_think",
                                UNOPENED: "unopened_think", TEXT_BEFORE: "text_before_think",
                                EMPTY_BLOCK: "empty_think", NO_FINAL_ANSWER: "no_final_answer"}
# why a sample is not a well-formed trace, in the order they are checked
R1_DROP_REASONS: tuple[str, ...] = tuple(DROP_REASONS[p] for p in TRACE_PROBLEMS)


@dataclass(frozen=True)
class TraceParts:
    """One sample split at its think block: ``reason`` is None for a well-formed trace, else why it is not (one
    of ``R1_DROP_REASONS``); ``think`` is the text inside the block, ``final`` the text after it."""

    reason: str | None
    think: str = ""
    final: str = ""


def split_trace(text: str) -> TraceParts:
    """``srlm_pl.verifiers.check_trace`` on ``text``, its problem named by its drop reason."""
    checked = check_trace(text)
    reason = None if checked.problem is None else DROP_REASONS[checked.problem]
    return TraceParts(reason, checked.think, checked.final)


def with_prompt_opening(prompt: str, completion: str) -> str:
    """The trace the teacher wrote: ``<think>`` + newline + ``completion`` when ``prompt`` ends with an open
    ``<think>`` (the chat template opened the block), else ``completion`` unchanged."""
    return f"{THINK_OPEN}\n{completion}" if prompt.rstrip().endswith(THINK_OPEN) else completion


def r1_statuses(golds: Sequence[str], texts: Sequence[str],
                check: Callable[[list[str], list[str]], list[str]]) -> list[str]:
    """Per sample: why it is not a well-formed trace (``split_trace``), else ``check``'s status (``correct``,
    ``incorrect``, ...) of its final part alone against the gold (a ``no_answer`` status is reported as
    ``no_final_answer``)."""
    parts = [split_trace(t) for t in texts]
    out: list[str] = [p.reason or "" for p in parts]
    ok = [i for i, p in enumerate(parts) if p.reason is None]
    if ok:
        checked = check([golds[i] for i in ok], [parts[i].final for i in ok])
        for i, status in zip(ok, checked, strict=True):
            out[i] = "no_final_answer" if status == "no_answer" else status
    return out


def skipped_special_ids(tokenizer: Any) -> set[int]:
    """Ids of the tokenizer's special added tokens (those ``skip_special_tokens`` removes), the think tags
    excepted."""
    return {i for i, tok in tokenizer.added_tokens_decoder.items()
            if tok.special and str(tok) not in (THINK_OPEN, THINK_CLOSE)}


def decode_keeping_think(tokenizer: Any, ids: Sequence[int], skip: set[int]) -> str:
    """``ids`` as text without the special tokens in ``skip`` (see ``skipped_special_ids``), stripped."""
    return tokenizer.decode([i for i in ids if i not in skip], skip_special_tokens=False).strip()
