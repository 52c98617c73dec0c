"""R1-style reasoning traces from a teacher: is a sample one closed ``<think> ... </think>`` block followed by a
final answer, and does that final answer (the text after the block) match the gold.

Used by ``tools/make_traces.py --format r1``, which writes rows in the layout of ``camel-ai/gsm8k_distilled``
(``problem``, ``reasoning_solution``, ``groud_truth_solution`` [sic]).

Choices:

* The block boundaries are found with ``str.count`` / ``str.find`` (one linear pass each, no regular
  expression, so no catastrophic backtracking on long model output); the answer check never reads the text
  inside the block, so a right answer inside the block and a wrong one after it is rejected.
* Tags are never invented: a sample that reasons without tags is dropped (``no_think``). The one exception is
  a chat template that opens the block itself (DeepSeek-R1's ends the prompt with ``<think>\\n``): the
  completion then continues inside that block, and the tag, which the teacher was given, goes back in front.
* The final part must state its answer in one of ``FINAL_ANSWER_STYLES`` (``\\boxed{}``, ``#### N``, "The answer
  is N"; found by ``srlm_pl.verifiers.find_answer``), the styles ``DataSource(format="r1")`` accepts, so every
  kept row loads there; a bare trailing number is ``no_final_answer``.
* Completions are decoded without special tokens except the think tags, so a tokenizer that registers
  ``<think>`` as a special token keeps it in the text.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

THINK_OPEN, THINK_CLOSE = "<think>", "</think>"
R1_INSTRUCTION = ("Solve the following math problem. First reason step by step inside <think> </think> tags, then "
                  "after </think> give the final answer within \\boxed{}.")
FINAL_ANSWER_STYLES = ("boxed", "gsm8k", "answer_is")  # srlm_pl.verifiers.extract strategy names
# why a sample is not a well-formed trace, in the order they are checked
R1_DROP_REASONS = ("no_think", "two_think_blocks", "unclosed_think", "unopened_think", "text_before_think",
                   "empty_think", "no_final_answer")


@dataclass(frozen=True)
class TraceParts:
    """One sample split at its think block: ``reason`` is None for a well-formed trace, else why it is not (one
    of ``R1_DROP_REASONS``); ``think`` is the text inside the block, ``final`` the text after it."""

    reason: str | None
    think: str = ""
    final: str = ""


def split_trace(text: str) -> TraceParts:
    """Check that ``text`` is optional whitespace, one ``<think>`` block with some reasoning in it, its closing
    ``</think>``, then a non-blank final part; split it there."""
    n_open, n_close = text.count(THINK_OPEN), text.count(THINK_CLOSE)
    if n_open == 0 and n_close == 0:
        return TraceParts("no_think")
    if n_open > 1 or n_close > 1:
        return TraceParts("two_think_blocks")
    if n_close == 0:
        return TraceParts("unclosed_think")
    start, end = text.find(THINK_OPEN), text.find(THINK_CLOSE)
    if n_open == 0 or end < start:
        return TraceParts("unopened_think")
    if text[:start].strip():
        return TraceParts("text_before_think")
    think, final = text[start + len(THINK_OPEN): end], text[end + len(THINK_CLOSE):]
    if not think.strip():
        return TraceParts("empty_think")
    if not final.strip():
        return TraceParts("no_final_answer")
    return TraceParts(None, think, final)


def with_prompt_opening(prompt: str, completion: str) -> str:
    """The trace the teacher wrote: ``<think>`` + newline + ``completion`` when ``prompt`` ends with an open
    ``<think>`` (the chat template opened the block), else ``completion`` unchanged."""
    return f"{THINK_OPEN}\n{completion}" if prompt.rstrip().endswith(THINK_OPEN) else completion


def r1_statuses(golds: Sequence[str], texts: Sequence[str],
                check: Callable[[list[str], list[str]], list[str]]) -> list[str]:
    """Per sample: why it is not a well-formed trace (``split_trace``; ``no_final_answer`` also when the final
    part states no answer in ``FINAL_ANSWER_STYLES``), else ``check``'s status (``correct``, ``incorrect``, ...)
    of its final part alone against the gold (a ``no_answer`` status is reported as ``no_final_answer``)."""
    from srlm_pl.verifiers import find_answer

    parts = [split_trace(t) for t in texts]
    parts = [p if p.reason is not None or find_answer(p.final, FINAL_ANSWER_STYLES, think=False) is not None
             else TraceParts("no_final_answer") for p in parts]
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
