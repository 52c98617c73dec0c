"""Find the final answer in a completion or a reference solution.

Design choices:

* Only the tail (``TAIL_CHARS``) of a long completion is scanned, so 100k-character outputs cost the same
  as short ones. Input is sanitised first: bytes are decoded with replacement, NUL bytes and lone UTF-16
  surrogates (which cannot be encoded or sent to a worker) are dropped.
* ``\\boxed{}``/``\\fbox{}`` are found with a linear brace scanner: one ``re.finditer`` pass over brace
  tokens with an explicit stack, never a regex that tries to match balanced braces (which backtracks, and
  cannot handle nesting). Escaped braces ``\\{``/``\\}`` and the row break ``\\\\`` are skipped. The box
  that closes last wins, so ``\\boxed{1} ... \\boxed{2}`` gives ``2`` and a truncated trailing
  ``\\boxed{`` falls back to the previous complete box.
* The order of strategies is configurable (``priority``). The default is: last box, ``#### N``,
  "the (final) answer is ...", "Answer: ...", a completion that is nothing but a bare answer, then the last
  number in the text.
* Think-aware by default (:func:`find_answer`): an explicit answer (``EXPLICIT_STYLES``) or a bare answer after
  the last closed ``<think> ... </think>`` block wins, then a ``\\boxed{}`` / ``#### N`` inside that block
  (``STRONG_INSIDE``: "the answer is 20... wait" inside reasoning does not count here), then the segments before
  it the same way; then the weak styles (the last number, an "answer is" inside a block) in the same order. So a
  stray number never beats a boxed answer in the block, and numbers in the block never beat a final answer after
  it. An unclosed ``<think>`` runs to the end and its content counts as
  text after the block (:mod:`.think`). The window's state at its start (inside a block or not) is read from the last
  tag before it with ``str.rfind``, so a block longer than the window followed by a short answer works and a huge
  block costs no more than the window.
* Gold answers use :func:`extract_gold`: a box, then ``#### N``, else the whole string is the answer (a
  bare gold such as ``\\frac{14}{3}`` must not be reduced to its last number).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import NamedTuple

from .think import think_segments, window_start

TAIL_CHARS = 6000
STYLES: tuple[str, ...] = ("boxed", "gsm8k", "answer_is", "answer_colon", "whole", "last_number")
DEFAULT_PRIORITY: tuple[str, ...] = STYLES
EXPLICIT_STYLES: tuple[str, ...] = ("boxed", "gsm8k", "answer_is", "answer_colon")
STRONG_INSIDE: tuple[str, ...] = ("boxed", "gsm8k")  # the styles that let a think block beat a weak answer after it

_BAD_CHARS = re.compile("[\x00\ud800-\udfff]")
_BOX_TOKENS = re.compile(r"\\\\|\\(?:boxed|fbox)(?![A-Za-z])|\\[{}]|[{}]")
_BOX_START = re.compile(r"\\(?:boxed|fbox)(?![A-Za-z])")
_BARE_BOX_ARG = re.compile(r"\s+([^\s$]+)")
_ANSWER_IS = re.compile(r"answer\s+(?:is|was|would\s+be|will\s+be)\b\s*:?\s*", re.IGNORECASE)
_ANSWER_COLON = re.compile(r"answer\s*\**\s*:\s*\**", re.IGNORECASE)
_CLIP_PLAIN = re.compile(r"\.(?:\s|$)|;|,\s+(?=[A-Za-z]{2})|\s+(?:because|since|which|as|so)\b")
_NUMBER = re.compile(r"(?<![\w.)])-?(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?(?:/\d+)?|(?<![\w.])\.\d+")
_LATEX_CMD_WITH_TEXT = re.compile(r"\\(?:text|textbf|textit|mbox|mathrm|mathbf|operatorname)\s*\{[^{}]*\}")
_LATEX_CMD = re.compile(r"\\[A-Za-z]+")
_WORD = re.compile(r"[A-Za-z]{2,}")
_MATH_DELIMS = (("$$", "$$"), ("\\[", "\\]"), ("\\(", "\\)"), ("$", "$"))


class Extraction(NamedTuple):
    """An extracted answer and the strategy that found it."""

    text: str
    style: str


def sanitize(text: str | bytes) -> str:
    """Return ``text`` as a clean ``str``: decoded, without NUL bytes or lone surrogates."""
    if isinstance(text, bytes | bytearray):
        text = bytes(text).decode("utf-8", errors="replace")
    elif not isinstance(text, str):
        text = str(text)
    return _BAD_CHARS.sub("", text)


def _tail(text: str | bytes, tail_chars: int) -> str:
    if isinstance(text, str) and len(text) > tail_chars:
        text = text[-tail_chars:]
    text = sanitize(text)
    return text[-tail_chars:] if len(text) > tail_chars else text


def _think_tail(text: str | bytes, tail_chars: int) -> tuple[str, bool]:
    """The sanitised last ``tail_chars`` characters and whether they start inside a think block
    (:func:`srlm_pl.verifiers.think.window_start`; a tag cut by the window's start is left out of it)."""
    if not isinstance(text, str):
        text = sanitize(text)
    start, inside = window_start(text, len(text) - tail_chars)
    return sanitize(text[start:] if start > 0 else text), inside


def last_boxed(text: str) -> str | None:
    """Content of the last complete ``\\boxed{...}`` / ``\\fbox{...}`` in ``text`` (linear time)."""
    first = _BOX_START.search(text)
    if first is None:
        return None
    stack: list[int] = []
    pending = -1  # index of the '{' that opens a box, when the previous token was \boxed
    best_end = -1
    best: str | None = None
    for m in _BOX_TOKENS.finditer(text, first.start()):
        tok = m.group()
        if tok[0] == "\\" and len(tok) > 2:  # \boxed or \fbox
            end = m.end()
            while end < len(text) and text[end] == " ":
                end += 1
            if end < len(text) and text[end] == "{":
                pending = end
            else:
                bare = _BARE_BOX_ARG.match(text, m.end())
                if bare is not None and bare.end() > best_end:
                    best_end, best = bare.end(), bare.group(1)
                pending = -1
            continue
        if tok == "{":
            stack.append(m.end() if m.start() == pending else -1)
            pending = -1
        elif tok == "}":
            pending = -1
            if stack:
                start = stack.pop()
                if start >= 0 and m.start() > best_end:
                    best_end, best = m.start(), text[start : m.start()]
        else:
            pending = -1
    if best is not None:
        inner = best.strip()
        if _BOX_START.match(inner):
            nested = last_boxed(inner)
            if nested is not None:
                return nested
        return inner
    return None


def _clip(rest: str) -> str:
    """Cut the answer out of the text that follows an answer marker."""
    rest = rest.lstrip(" \t*:")
    for open_, close in _MATH_DELIMS:
        if rest.startswith(open_):
            end = rest.find(close, len(open_))
            body = rest[len(open_) : end] if end >= 0 else rest[len(open_) :]
            return body.strip()
    line_end = rest.find("\n")
    if line_end >= 0:
        rest = rest[:line_end]
    cut = _CLIP_PLAIN.search(rest)
    if cut is not None:
        rest = rest[: cut.start()]
    return rest.strip().rstrip(".").strip("* ")


def _after_marker(text: str, pattern: re.Pattern[str]) -> str | None:
    lower = text.lower()
    pos = len(lower)
    for _ in range(64):
        pos = lower.rfind("answer", 0, pos)
        if pos < 0:
            return None
        m = pattern.match(text, pos)
        if m is None:
            continue
        rest = text[m.end() : m.end() + 600]
        if not rest.split("\n", 1)[0].strip(" \t*:"):
            rest = rest.lstrip(" \t*:\n")
        answer = _clip(rest)
        if answer:
            return answer
    return None


def _gsm8k(text: str) -> str | None:
    pos = text.rfind("####")
    if pos < 0:
        return None
    line = text[pos + 4 :].lstrip("# \t").split("\n", 1)[0].strip()
    return line.rstrip(".").strip() or None


def _whole(text: str) -> str | None:
    """The completion itself when it is nothing but an answer (``18``, ``\\frac{1}{2}``, ``Evelyn``)."""
    s = text.strip()
    if not s or len(s) > 300:
        return None
    for open_, close in _MATH_DELIMS:
        if s.startswith(open_) and s.endswith(close) and len(s) >= len(open_) + len(close):
            s = s[len(open_) : len(s) - len(close)].strip()
            break
    if not s or "\n" in s or _BOX_START.search(s):
        return None
    plain = _LATEX_CMD.sub(" ", _LATEX_CMD_WITH_TEXT.sub(" ", s))
    tokens = plain.split()
    words = [t for t in tokens if t.isalpha() and len(t) >= 2]
    if not words:
        return s.rstrip(".").strip() or None
    if len(tokens) <= 3 and len(s) <= 40 and not any(c.isdigit() for c in s):
        return s.rstrip(".").strip() or None
    return None


def _last_number(text: str) -> str | None:
    window = text[-400:]
    matches = list(_NUMBER.finditer(window))
    if len(text) > len(window) and (not matches or matches[-1].start() == 0):
        matches = list(_NUMBER.finditer(text))  # nothing in the window, or its number starts before it
    return matches[-1].group() if matches else None


def _run_style(style: str, text: str) -> str | None:
    if style == "boxed":
        return last_boxed(text) or None
    if style == "gsm8k":
        return _gsm8k(text)
    if style == "answer_is":
        return _after_marker(text, _ANSWER_IS)
    if style == "answer_colon":
        return _after_marker(text, _ANSWER_COLON)
    if style == "whole":
        return _whole(text)
    if style == "last_number":
        return _last_number(text)
    raise ValueError(f"unknown extraction style {style!r}; expected one of {STYLES}")


def _first_hit(text: str, priority: Sequence[str]) -> Extraction | None:
    for style in priority:
        found = _run_style(style, text)
        if found:
            return Extraction(found, style)
    return None


def _think_hit(gaps: list[str], blocks: list[str], priority: Sequence[str]) -> Extraction | None:
    """The think-aware order over a text cut at its blocks (:func:`.think.think_segments`), in two passes over the
    segments from the last one back. Strong pass: after a block, an explicit answer or a text that is nothing but
    an answer (``whole``); inside a block, only a ``\\boxed{}`` or ``#### N`` (reasoning says "the answer is 20...
    wait" on its way). Weak pass: every other style, after a block before inside it. The text in front of the first
    block comes last, with every style. Each segment is searched at most twice."""
    strong_after = [s for s in priority if s in EXPLICIT_STYLES or s == "whole"]
    strong_inside = [s for s in priority if s in STRONG_INSIDE]
    segments: list[tuple[str, bool]] = []  # (text, is a block), last first
    for i in range(len(blocks) - 1, -1, -1):
        segments += [(gaps[i + 1], False), (blocks[i], True)]
    for text, in_block in segments:
        found = _first_hit(text, strong_inside if in_block else strong_after) if text else None
        if found is not None:
            return found
    for text, in_block in segments:
        rest = [s for s in priority if s not in (strong_inside if in_block else strong_after)]
        found = _first_hit(text, rest) if text else None
        if found is not None:
            return found
    return _first_hit(gaps[0], priority) if gaps[0] else None  # text in front of the blocks never beats them


def find_answer(
    completion: str | bytes,
    priority: Sequence[str] = DEFAULT_PRIORITY,
    *,
    tail_chars: int = TAIL_CHARS,
    think: bool = True,
) -> Extraction | None:
    """Try the strategies in ``priority`` order on the tail of ``completion``; first hit wins.

    With ``think`` (the default) a text with think tags is searched in the order of :func:`_think_hit`: an explicit
    or bare answer after the last closed block, then a ``\\boxed{}`` / ``#### N`` inside it, then earlier
    segments; then the weaker styles in the same order
    (:mod:`srlm_pl.verifiers.think` has the tag rules; an unclosed block's content counts as text after the block).
    A completion without think tags is searched as a whole either way."""
    if not think:
        return _first_hit(_tail(completion, tail_chars), priority)
    text, inside = _think_tail(completion, tail_chars)
    segments = think_segments(text, inside=inside)
    if segments is None:
        return _first_hit(text, priority)
    return _think_hit(segments.gaps, segments.blocks, priority)


def extract_answer(
    completion: str | bytes,
    priority: Sequence[str] = DEFAULT_PRIORITY,
    *,
    tail_chars: int = TAIL_CHARS,
    think: bool = True,
) -> str | None:
    """The final answer's text in ``completion``, or None when there is none (``think``: see :func:`find_answer`)."""
    found = find_answer(completion, priority, tail_chars=tail_chars, think=think)
    return found.text if found is not None else None


def extract_gold(gold: str | bytes, *, tail_chars: int = TAIL_CHARS) -> str | None:
    """The answer in a gold string: a bare answer, a GSM8K ``... #### N`` or a MATH ``\\boxed{}`` solution."""
    text = _tail(gold, tail_chars)
    boxed = last_boxed(text)
    if boxed:
        return boxed
    hashes = _gsm8k(text)
    if hashes:
        return hashes
    text = text.strip()
    return text or None
