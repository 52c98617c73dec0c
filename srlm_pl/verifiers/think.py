"""Reasoning blocks: split a completion into its answer text (outside ``<think> ... </think>``) and its thought.

Rules (answer extraction uses them, :func:`srlm_pl.verifiers.extract.find_answer`):

* The content of a closed block ``<think> ... </think>`` is thought; the text outside the blocks is answer text.
* A ``</think>`` with no open block closes an implicit one that began at the previous boundary (the start of the
  text or the end of the previous block): chat templates that put ``<think>`` in the prompt make completions of
  the form ``reasoning </think> answer``, and a window that starts inside a long block looks the same.
* An unclosed ``<think>`` runs to the end of the text and its content counts as answer text (a completion cut off
  while thinking: its own last answer is all there is).
* A ``<think>`` inside an open block is dropped (blocks do not nest). Tags are matched exactly (lower case).

Only plain string searches are used (``str.rfind`` and one literal regex), so the cost is linear in the text and a
huge block costs no Python-level work outside the scanned window (:func:`window_start`).
"""

from __future__ import annotations

import re
from typing import NamedTuple

THINK_OPEN = "<think>"
THINK_CLOSE = "</think>"
_TAG = re.compile(r"</?think>")


class ThinkSplit(NamedTuple):
    """The answer text (outside closed blocks) and the thought (closed blocks' content), each joined by newlines
    from its non-blank pieces."""

    answer: str
    thought: str


def _join(parts: list[str]) -> str:
    return "\n".join(p for p in parts if p.strip())


def split_think(text: str, *, inside: bool = False) -> ThinkSplit | None:
    """Split ``text`` by its think tags; None when it has none and does not start ``inside`` a block.

    ``inside``: the text starts inside an open block (a window cut out of a longer text, see
    :func:`window_start`)."""
    if not inside and THINK_OPEN not in text and THINK_CLOSE not in text:
        return None
    answer: list[str] = []
    thought: list[str] = []
    block: list[str] = []  # pieces of the open block's content (a nested <think> splits it)
    pos = 0
    for m in _TAG.finditer(text):
        piece = text[pos : m.start()]
        pos = m.end()
        if m.group() == THINK_OPEN:
            (block if inside else answer).append(piece)
            inside = True
        else:  # closes the open block, or an implicit one that began at the previous boundary
            thought.append("".join(block) + piece)
            block, inside = [], False
    answer.extend(block)  # an unclosed block's content counts as answer text
    answer.append(text[pos:])
    return ThinkSplit(_join(answer), _join(thought))


def window_start(text: str, start: int) -> tuple[int, bool]:
    """Where a window of ``text`` beginning at ``start`` should begin, and whether it begins inside a block.

    The state at ``start`` is set by the last tag before it (after an opener the text is inside a block, after a
    closer it is not: nested openers and stray closers do not change that), found with two ``str.rfind`` calls.
    A tag cut by ``start`` moves the window's start to the tag's end."""
    if start <= 0:
        return 0, False
    opener = text.rfind(THINK_OPEN, 0, start + len(THINK_OPEN) - 1)  # the last opener that starts before `start`
    closer = text.rfind(THINK_CLOSE, 0, start + len(THINK_CLOSE) - 1)
    if opener < 0 and closer < 0:
        return start, False
    if opener > closer:
        return max(start, opener + len(THINK_OPEN)), True
    return max(start, closer + len(THINK_CLOSE)), False
