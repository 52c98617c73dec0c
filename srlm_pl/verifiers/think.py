"""Reasoning blocks: split a completion into its answer text (outside ``<think> ... </think>``) and its thought.

Rules (answer extraction uses them, :func:`srlm_pl.verifiers.extract.find_answer`, which searches the text after
the last closed block before that block, and that block before the text in front of it):

* The content of a closed block ``<think> ... </think>`` is thought; the text outside the blocks is answer text,
  cut at each block into the gaps before, between and after the blocks (:func:`think_segments`).
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


class ThinkSegments(NamedTuple):
    """A text cut at its closed blocks: ``blocks[i]`` is the content of the i-th closed block and ``gaps[i]`` the
    answer text in front of it, ``gaps[-1]`` the answer text after the last one (``len(gaps) == len(blocks) + 1``;
    an unclosed block's content belongs to the gap it starts in)."""

    gaps: list[str]
    blocks: list[str]


def _join(parts: list[str]) -> str:
    return "\n".join(p for p in parts if p.strip())


def think_segments(text: str, *, inside: bool = False) -> ThinkSegments | None:
    """Cut ``text`` at its think tags; None when it has none and does not start ``inside`` a block.

    ``inside``: the text starts inside an open block (a window cut out of a longer text, see
    :func:`window_start`). The pieces of one gap (split by a dropped tag) are joined by newlines."""
    if not inside and THINK_OPEN not in text and THINK_CLOSE not in text:
        return None
    gaps: list[str] = []
    blocks: list[str] = []
    gap: list[str] = []  # pieces of the current gap
    block: list[str] = []  # pieces of the open block's content (a nested <think> splits it)
    pos = 0
    for m in _TAG.finditer(text):
        piece = text[pos : m.start()]
        pos = m.end()
        if m.group() == THINK_OPEN:
            (block if inside else gap).append(piece)
            inside = True
        else:  # closes the open block, or an implicit one that began at the previous boundary
            gaps.append(_join(gap))
            blocks.append("".join(block) + piece)
            gap, block, inside = [], [], False
    gap.extend(block)  # an unclosed block's content counts as answer text
    gap.append(text[pos:])
    gaps.append(_join(gap))
    return ThinkSegments(gaps, blocks)


def split_think(text: str, *, inside: bool = False) -> ThinkSplit | None:
    """Split ``text`` by its think tags into all its answer text and all its thought; None when it has none and
    does not start ``inside`` a block (:func:`think_segments`, joined)."""
    segments = think_segments(text, inside=inside)
    if segments is None:
        return None
    return ThinkSplit(_join(segments.gaps), _join(segments.blocks))


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
