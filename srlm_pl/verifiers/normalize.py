"""Normalise an extracted answer into a canonical LaTeX-ish string.

Design choices:

* Pure string rewriting with precompiled, non-backtracking regexes, so it is linear in the answer length and
  safe on hostile input. Nothing here evaluates anything.
* Presentation is stripped, meaning is kept: math delimiters, ``\\left``/``\\right``, spacing commands,
  ``\\dfrac``/``\\tfrac``, degree signs, percent signs and the word "percent", currency, markdown bold,
  a trailing period, a ``\\text{}`` wrapper, trailing unit words after a number, and an ``x =`` prefix.
* Percent is dropped (``20\\%`` means ``20``): graders of MATH and GSM8K expect the number as written.
* ``7,425,000`` and ``32,\\!349`` (LaTeX's negative thin space after a thousands comma) become plain
  integers; a comma list like ``1, 2`` is left alone. Mixed numbers (``2\\frac{1}{2}``, ``2 1/2``) become
  improper fractions.
* A GSM8K-style plain number takes a short fast path that skips every other rule.
"""

from __future__ import annotations

import re

from .extract import last_boxed

_SIMPLE_NUMBER = re.compile(r"\s*\\?\$?\s*(-?(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?|-?\.\d+)\s*\.?\s*")
_UNICODE = {
    "\u2212": "-",
    "\u2013": "-",
    "\u00d7": "\\times ",
    "\u00b7": "\\cdot ",
    "\u03c0": "\\pi ",
    "\u221e": "\\infty ",
    "\u221a": "\\sqrt",
    "\u2264": "\\le ",
    "\u2265": "\\ge ",
    "\u2260": "\\ne ",
    "\u222a": "\\cup ",
    "\u00b0": "",
    "\u00a0": " ",
}
_UNICODE_RE = re.compile("|".join(map(re.escape, _UNICODE)))
_DELIMS = (("$$", "$$"), ("\\[", "\\]"), ("\\(", "\\)"), ("$", "$"))
_BOLD = re.compile(r"\*\*|__")
_LEFT_RIGHT = re.compile(
    r"\\(?:left|right|bigl|bigr|Bigl|Bigr|biggl|biggr|big|Big|bigg|Bigg)(?![A-Za-z])\s*\.?"
)
_THOUSANDS_HINT = re.compile(r"(\d),\s*\\!\s*(?=\d{3})|(\d)\{,\}(?=\d{3})")
_SPACING = re.compile(r"\\\\|\\[!,;:> ]|\\(?:quad|qquad|displaystyle|textstyle|limits)(?![A-Za-z])|~")
_FRAC_ALIAS = re.compile(r"\\[dt]frac(?![A-Za-z])")
_BINOM_ALIAS = re.compile(r"\\[dt]binom(?![A-Za-z])")
_DEGREES = re.compile(
    r"\^\s*\{?\s*\\circ\s*\}?|\^\s*\{\s*\}|\\circ(?![A-Za-z])|\\degree(?![A-Za-z])|\s*\bdegrees?\b"
)
_PERCENT = re.compile(r"\\%|%|\s*\bpercent\b|\s*\bpct\b")
_DOLLAR = re.compile(r"\\\$|\$")
_TEXT_CMD = re.compile(
    r"\\(?:text|textbf|textit|textrm|textnormal|mbox|mathrm|mathbf|mathit|mathsf|operatorname|hbox)\s*"
    r"\{([^{}]*)\}(\s*\^\s*\{?\s*[23]\s*\}?)?"
)
_UNIT_WORDS = re.compile(r"[A-Za-z][A-Za-z.\s/]*")
_MATH_WORDS = frozenset(
    "pi sqrt sin cos tan cot sec csc log ln exp arcsin arccos arctan sinh cosh tanh or and i e inf".split()
)
_TRAILING_UNITS = re.compile(r"^(.*?[\d}])\s+([A-Za-z][A-Za-z.\s/]*?)(\^\s*\{?[23]\}?)?\.?\s*$")
_THOUSANDS = re.compile(r"-?\d{1,3}(?:,\d{3})+(?:\.\d+)?")
_MIXED_LATEX = re.compile(r"(?<![\d.^_{}\w])(\d+)\s*\\frac\s*\{\s*(\d+)\s*\}\s*\{\s*(\d+)\s*\}")
_MIXED_PLAIN = re.compile(r"^(-?)(\d+)\s+(\d+)\s*/\s*(\d+)$")
_ASSIGN_PREFIX = re.compile(
    r"^\s*(?:\\?[A-Za-z]+(?:_\{?[A-Za-z0-9]+\}?)?(?:\s*\(\s*[A-Za-z]\s*\))?)\s*(?:=|\\in(?![A-Za-z]))\s*"
)
_OR_AND = re.compile(r"\s+(?:or|and)\s+|\\(?:text|mbox)\{\s*(?:or|and)\s*\}|\s*\\(?:quad|qquad)\s*")
_SUBSCRIPT_BRACE = re.compile(r"_\{(\w)\}")
_WS_NOT_BETWEEN_LETTERS = re.compile(r"(?<![A-Za-z])\s+|\s+(?![A-Za-z])")
_WS = re.compile(r"\s+")
_ALIASES = re.compile(
    r"\\(?:le|ge|ne|neq|leqslant|geqslant|infinity|lbrace|rbrace|emptyset|varnothing)(?![A-Za-z])"
)
_ALIAS_MAP = {
    "\\le": "\\leq",
    "\\ge": "\\geq",
    "\\ne": "\\neq",
    "\\neq": "\\neq",
    "\\leqslant": "\\leq",
    "\\geqslant": "\\geq",
    "\\infinity": "\\infty",
    "\\lbrace": "\\{",
    "\\rbrace": "\\}",
    "\\emptyset": "\\varnothing",
    "\\varnothing": "\\varnothing",
}
_TEXT_KEY_DROP = re.compile(r"[^a-z0-9]")


def _strip_delims(s: str) -> str:
    changed = True
    while changed:
        changed = False
        s = s.strip()
        for open_, close in _DELIMS:
            if len(s) >= len(open_) + len(close) and s.startswith(open_) and s.endswith(close):
                s = s[len(open_) : len(s) - len(close)]
                changed = True
                break
    return s


def _mixed_latex(m: re.Match[str]) -> str:
    whole, num, den = int(m.group(1)), int(m.group(2)), int(m.group(3))
    if den == 0 or num >= den:
        return m.group(0)
    return f"\\frac{{{whole * den + num}}}{{{den}}}"


def _text_cmd(m: re.Match[str], has_math_outside: bool) -> str:
    content = m.group(1).strip()
    if has_math_outside and (not content or _UNIT_WORDS.fullmatch(content)) and content not in _MATH_WORDS:
        return " "
    return " " + content + " "


def _strip_units(s: str) -> str:
    m = _TRAILING_UNITS.match(s)
    if m is None:
        return s
    words = m.group(2).replace(".", " ").replace("/", " ").split()
    if any(len(w) < 2 or w.lower() in _MATH_WORDS for w in words):
        return s
    return m.group(1)


def _strip_assignment(s: str) -> str:
    whole = _ASSIGN_PREFIX.match(s)
    if whole is not None and _THOUSANDS.fullmatch(s[whole.end():].strip()):  # "N = 25,000": one number
        return s[whole.end():].strip()
    if s.count("=") > 1 and "," not in s:
        return s
    parts = _split_top_commas(s)
    stripped = []
    for part in parts:
        m = _ASSIGN_PREFIX.match(part)
        rest = part[m.end() :] if m else part
        if m is None or not rest.strip() or "=" in rest:
            return s
        stripped.append(rest.strip())
    return ", ".join(stripped)


def _split_top_commas(s: str) -> list[str]:
    parts, depth, start = [], 0, 0
    for i, ch in enumerate(s):
        if ch in "([{":
            depth += 1
        elif ch in ")]}":
            depth -= 1
        elif ch == "," and depth == 0:
            parts.append(s[start:i])
            start = i + 1
    parts.append(s[start:])
    return parts


def normalize(answer: str) -> str:
    """Canonical form of an extracted answer (see the module docstring for the rules)."""
    fast = _SIMPLE_NUMBER.fullmatch(answer)
    if fast is not None:
        number = fast.group(1)
        return number.replace(",", "") if "," in number else number
    s = _UNICODE_RE.sub(lambda m: _UNICODE[m.group()], answer)
    s = _BOLD.sub("", s)
    s = _strip_delims(s)
    if "\\boxed" in s or "\\fbox" in s:
        s = _strip_delims(last_boxed(s) or s)
    s = _LEFT_RIGHT.sub("", s)
    s = _THOUSANDS_HINT.sub(lambda m: (m.group(1) or m.group(2)) + ",", s)
    s = _SPACING.sub(lambda m: m.group() if m.group() == "\\\\" else " ", s)
    s = _FRAC_ALIAS.sub(r"\\frac", s)
    s = _BINOM_ALIAS.sub(r"\\binom", s)
    s = _DEGREES.sub("", s)
    s = _PERCENT.sub("", s)
    s = _DOLLAR.sub("", s)
    s = _OR_AND.sub(", ", s)
    if "\\" in s and _TEXT_CMD.search(s):
        outside = _TEXT_CMD.sub(" ", s)
        has_math = any(c.isdigit() for c in outside) or "\\" in outside
        s = _TEXT_CMD.sub(lambda m: _text_cmd(m, has_math), s)
    s = _ALIASES.sub(lambda m: _ALIAS_MAP[m.group()], s)
    s = _WS.sub(" ", s).strip().rstrip(".").strip()
    s = _strip_units(s)
    s = _strip_delims(s).rstrip(".,;:").strip()
    if _THOUSANDS.fullmatch(s):
        s = s.replace(",", "")
    s = _MIXED_LATEX.sub(_mixed_latex, s)
    mixed = _MIXED_PLAIN.match(s)
    if mixed is not None and 0 < int(mixed.group(3)) < int(mixed.group(4)):
        whole, num, den = int(mixed.group(2)), int(mixed.group(3)), int(mixed.group(4))
        s = f"{mixed.group(1)}\\frac{{{whole * den + num}}}{{{den}}}"
    if "=" in s or "\\in" in s:
        s = _strip_assignment(s)
    s = _SUBSCRIPT_BRACE.sub(r"_\1", s)
    s = _WS_NOT_BETWEEN_LETTERS.sub("", s)
    fast = _SIMPLE_NUMBER.fullmatch(s)
    if fast is not None:
        number = fast.group(1)
        return number.replace(",", "") if _THOUSANDS.fullmatch(number) else number
    return s


def text_key(normalized: str) -> str:
    """Key for comparing plain-text answers: case-insensitive, letters and digits only."""
    return _TEXT_KEY_DROP.sub("", normalized.lower())
