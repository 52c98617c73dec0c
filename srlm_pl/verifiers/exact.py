"""Exact, in-process comparison of numeric answers with :class:`fractions.Fraction` (no sympy).

Design choices:

* Handles what most GSM8K and about two thirds of MATH-500 answers are: integers, decimals, fractions
  (``\\frac{a}{b}``, ``\\frac12``, ``a/b``), scientific notation (``1.5\\times10^{3}``), small integer
  powers (``10^{-20}``), and tuples, sets, comma lists and intervals of these (with ``\\infty``). Everything
  is compared exactly, so ``18.00 == 18`` and ``10^{-20} != 10^{-30}``.
* Parsing is a tiny hand-written scanner over an already normalised string; anything it does not fully
  recognise returns None and is left to the symbolic path. It never raises on bad input.
* Numbers longer than ``MAX_FRACTION_DIGITS`` are not converted to ``int`` (CPython refuses beyond 4300
  digits and conversion is quadratic); plain decimals that long are compared by their canonical digit
  string instead, which is exact too.
* Bare comma lists and ``\\{...\\}`` are unordered sets (MATH: "enter all solutions separated by commas");
  parenthesised tuples are ordered; ``(a, b)`` is both a 2-tuple and an open interval.
"""

from __future__ import annotations

import re
from fractions import Fraction
from typing import Union

MAX_FRACTION_DIGITS = 2000
MAX_POWER_BITS = 4096
MAX_ITEMS = 64

INF = float("inf")
Scalar = Union[Fraction, float, tuple[str, str]]  # noqa: UP007 - runtime alias
ExactValue = Union[Scalar, tuple]  # noqa: UP007

_DECIMAL = re.compile(r"[-+]?(?:\d+(?:\.\d*)?|\.\d+)")
_INTEGER = re.compile(r"[-+]?\d+")
_FRAC = re.compile(
    r"(-?)\\frac(?:\{([-+]?(?:\d+(?:\.\d*)?|\.\d+))\}\{([-+]?(?:\d+(?:\.\d*)?|\.\d+))\}|(\d)(\d))"
)
_FRAC_MIXED_BRACES = re.compile(r"(-?)\\frac(?:(\d)\{(\d+)\}|\{(\d+)\}(\d))")
_SLASH = re.compile(r"([-+]?(?:\d+(?:\.\d*)?|\.\d+))/([-+]?(?:\d+(?:\.\d*)?|\.\d+))")
_SCI = re.compile(r"([-+]?(?:\d+(?:\.\d*)?|\.\d+))(?:\\times|\\cdot|\*|x)10\^(?:\{([-+]?\d+)\}|([-+]?\d))")
_POW = re.compile(r"([-+]?)(\d+)\^(?:\{([-+]?\d+)\}|(\d))")
_INFTY = re.compile(r"([-+]?)\\infty")


def _decimal(text: str) -> Scalar | None:
    digits = len(text)
    if digits <= MAX_FRACTION_DIGITS:
        return Fraction(text)
    sign = "-" if text.startswith("-") else ""
    body = text.lstrip("+-")
    whole, _, frac = body.partition(".")
    whole = whole.lstrip("0") or "0"
    frac = frac.rstrip("0")
    canonical = sign + whole + ("." + frac if frac else "")
    if whole == "0" and not frac:
        return Fraction(0)
    if len(canonical) <= MAX_FRACTION_DIGITS:
        return Fraction(canonical)
    return ("bignum", canonical)


def parse_scalar(s: str) -> Scalar | None:
    """An exact number from a normalised string, or None."""
    if not s:
        return None
    if _DECIMAL.fullmatch(s):
        return _decimal(s)
    if len(s) > MAX_FRACTION_DIGITS:
        return None
    m = _FRAC.fullmatch(s)
    if m is not None:
        num, den = (m.group(2), m.group(3)) if m.group(2) is not None else (m.group(4), m.group(5))
        return _ratio(m.group(1), num, den)
    m = _FRAC_MIXED_BRACES.fullmatch(s)
    if m is not None:
        num, den = (m.group(2), m.group(3)) if m.group(2) is not None else (m.group(4), m.group(5))
        return _ratio(m.group(1), num, den)
    m = _SLASH.fullmatch(s)
    if m is not None:
        return _ratio("", m.group(1), m.group(2))
    m = _SCI.fullmatch(s)
    if m is not None:
        exponent = int(m.group(2) or m.group(3))
        if abs(exponent) > 1000:
            return None
        return Fraction(m.group(1)) * Fraction(10) ** exponent
    m = _POW.fullmatch(s)
    if m is not None:
        base, exponent = int(m.group(2)), int(m.group(3) or m.group(4))
        if base == 0 and exponent < 0:
            return None
        if base > 1 and abs(exponent) * base.bit_length() > MAX_POWER_BITS:
            return None
        value = Fraction(base) ** exponent
        return -value if m.group(1) == "-" else value
    m = _INFTY.fullmatch(s)
    if m is not None:
        return -INF if m.group(1) == "-" else INF
    return None


def _ratio(sign: str, num: str, den: str) -> Fraction | None:
    den_value = Fraction(den)
    if den_value == 0:
        return None
    value = Fraction(num) / den_value
    return -value if sign == "-" else value


def _split_items(s: str) -> list[str] | None:
    items, depth, start = [], 0, 0
    for i, ch in enumerate(s):
        if ch in "([{":
            depth += 1
        elif ch in ")]}":
            depth -= 1
            if depth < 0:
                return None
        elif ch == "," and depth == 0:
            items.append(s[start:i])
            start = i + 1
            if len(items) > MAX_ITEMS:
                return None
    items.append(s[start:])
    return items


def _scalars(items: list[str]) -> list[Scalar] | None:
    values = []
    for item in items:
        value = parse_scalar(item.strip())
        if value is None:
            return None
        values.append(value)
    return values


def _sort_key(value: Scalar) -> tuple[int, object]:
    if isinstance(value, tuple):
        return (1, value[1])
    return (0, value)


def parse_exact(s: str) -> ExactValue | None:
    """Exact value of a normalised answer: a scalar, or ("tuple"|"interval"|"set", ...), or None."""
    scalar = parse_scalar(s)
    if scalar is not None:
        return scalar
    if len(s) > MAX_FRACTION_DIGITS or not s:
        return None
    if s.startswith("\\{") and s.endswith("\\}"):
        items = _split_items(s[2:-2])
        values = _scalars(items) if items is not None else None
        return ("set", tuple(sorted(set(values), key=_sort_key))) if values is not None else None
    if s[0] in "([" and s[-1] in ")]":
        items = _split_items(s[1:-1])
        if items is None:
            return None
        values = _scalars(items)
        if values is None:
            return None
        if len(values) == 1:
            return values[0] if s[0] == "(" and s[-1] == ")" else None
        if len(values) == 2 and (s[0], s[-1]) != ("(", ")"):
            return ("interval", s[0], values[0], values[1], s[-1])
        if (s[0], s[-1]) == ("(", ")"):
            return ("tuple", tuple(values))
        return None
    if "," in s:
        items = _split_items(s)
        values = _scalars(items) if items is not None else None
        if values is not None:
            return ("set", tuple(sorted(set(values), key=_sort_key)))
    return None


def exact_equal(a: ExactValue, b: ExactValue) -> bool:
    """Exact equality; a 2-tuple ``(x, y)`` equals the open interval ``(x, y)``."""
    if isinstance(a, tuple) and isinstance(b, tuple) and a[0] != b[0]:
        a, b = _as_interval(a), _as_interval(b)
    return a == b


def _as_interval(value: tuple) -> tuple:
    if value[0] == "tuple" and len(value[1]) == 2:
        return ("interval", "(", value[1][0], value[1][1], ")")
    return value


def is_plain_number(value: ExactValue | None) -> bool:
    """True for a finite scalar (not a collection, not infinity)."""
    return isinstance(value, Fraction) or (isinstance(value, tuple) and value[0] == "bignum")
