"""Build sympy expressions from parser ASTs with constructors only, and prove or refute equalities.

Design choices:

* No string ever reaches sympy: numbers become ``Integer``/``Rational`` from Python ints, symbols
  ``Symbol(name)`` from whitelisted names, operators and functions are called directly. (sympy's internal
  ``_sympify`` on already-built objects is harmless.)
* sympy evaluates eagerly (``Pow(9, 387420489)`` would compute a 370-million-digit integer), so every
  constructor that can blow up is guarded: exact rational powers are limited to ``MAX_POWER_BITS`` bits,
  factorials and binomials of integers are capped. Violations raise ``LimitError``.
* Proof chain, cheapest first: structural equality after sympy's automatic canonicalisation
  (``1/sqrt(3) == sqrt(3)/3``) and a nonzero rational difference (refutes) form the cheap stage
  (``allow_simplify=False``). The full stage adds ``expand``, sympy's zero test for constants, then
  ``simplify``. Those can take long; the caller announces its numeric verdict before starting them so
  that a deadline hit mid-way still yields a decision.
"""

from __future__ import annotations

from collections.abc import Sequence

import sympy
from sympy import Integer, Rational

from .latex_parser import LimitError, Node, ParseError

MAX_POWER_BITS = 20_000
MAX_SYMBOLIC_EXPONENT = 1000
MAX_FACTORIAL = 1000
MAX_BINOM = 10_000

PROVED, REFUTED, UNKNOWN = "proved", "refuted", "unknown"

_FUNCS = {
    "sin": sympy.sin, "cos": sympy.cos, "tan": sympy.tan, "cot": sympy.cot, "sec": sympy.sec,
    "csc": sympy.csc, "asin": sympy.asin, "acos": sympy.acos, "atan": sympy.atan, "sinh": sympy.sinh,
    "cosh": sympy.cosh, "tanh": sympy.tanh, "exp": sympy.exp, "abs": sympy.Abs, "floor": sympy.floor,
    "ceil": sympy.ceiling, "sqrt": sympy.sqrt,
}  # fmt: skip
_CONSTS = {"pi": sympy.pi, "e": sympy.E, "i": sympy.I, "oo": sympy.oo}


class SympyBuilder:
    """Converts nodes to sympy, memoising by node identity."""

    def __init__(self) -> None:
        self.memo: dict[int, sympy.Expr] = {}
        self.symbols: dict[str, sympy.Symbol] = {}

    def build(self, node: Node) -> sympy.Expr:
        key = id(node)
        hit = self.memo.get(key)
        if hit is None:
            hit = self._build(node)
            self.memo[key] = hit
        return hit

    def _build(self, node: Node) -> sympy.Expr:
        tag = node[0]
        if tag == "n":
            value = node[1]
            return (
                Integer(value.numerator)
                if value.denominator == 1
                else Rational(value.numerator, value.denominator)
            )
        if tag == "s":
            sym = self.symbols.get(node[1])
            if sym is None:
                sym = self.symbols[node[1]] = sympy.Symbol(node[1])
            return sym
        if tag == "c":
            return _CONSTS[node[1]]
        if tag == "+":
            return sympy.Add(*[self.build(t) for t in node[1]])
        if tag == "*":
            factors = [self.build(f) for f in node[1]]
            _check_product(factors)
            return sympy.Mul(*factors)
        if tag == "neg":
            return -self.build(node[1])
        if tag == "/":
            den = self.build(node[2])
            if den == 0:
                return sympy.zoo  # undefined; the comparison treats it as equal to nothing
            return self.build(node[1]) / den
        if tag == "^":
            return _guarded_pow(self.build(node[1]), self.build(node[2]))
        if tag == "f":
            return self._function(node[1], node[2])
        raise ParseError(f"{tag} is not a scalar")

    def _function(self, name: str, args: Sequence[Node]) -> sympy.Expr:
        x = self.build(args[0])
        if name in _FUNCS:
            return _FUNCS[name](x)
        if name == "root":
            n = self.build(args[1])
            if n.is_Integer and n.is_odd and x.is_real:
                return sympy.real_root(x, n)
            return _guarded_pow(x, 1 / n)
        if name in ("ln", "log"):
            if len(args) == 2:
                return sympy.log(x) / sympy.log(self.build(args[1]))
            return sympy.log(x)
        if name == "fact":
            if x.is_Number and abs(x) > MAX_FACTORIAL:
                raise LimitError("factorial too large")
            return sympy.factorial(x)
        if name == "binom":
            k = self.build(args[1])
            if (x.is_Number and abs(x) > MAX_BINOM) or (k.is_Number and abs(k) > MAX_BINOM):
                raise LimitError("binomial too large")
            return sympy.binomial(x, k)
        raise ParseError(f"unknown function {name}")


def _bits(value: sympy.Expr) -> int:
    if value.is_Integer:
        return int(abs(value)).bit_length()
    if value.is_Rational:
        return max(int(abs(value.p)).bit_length(), int(value.q).bit_length())
    return 1


def _check_product(factors: Sequence[sympy.Expr]) -> None:
    if sum(_bits(f) for f in factors if f.is_Rational) > MAX_POWER_BITS * 4:
        raise LimitError("product too large")


def _guarded_pow(base: sympy.Expr, exponent: sympy.Expr) -> sympy.Expr:
    if exponent.is_Number and not exponent.is_Integer and not exponent.is_Rational:
        raise LimitError("non-rational numeric exponent")
    if exponent.is_Rational:
        magnitude = abs(exponent.p)
        if base.is_Rational and base not in (0, 1, -1):
            if magnitude * _bits(base) > MAX_POWER_BITS:
                raise LimitError("power too large")
        elif magnitude > (MAX_POWER_BITS if base.is_number else MAX_SYMBOLIC_EXPONENT):
            raise LimitError("exponent too large")
    elif exponent.is_number:
        if exponent.has(sympy.oo, sympy.zoo, sympy.nan):
            raise LimitError("infinite exponent")
    return sympy.Pow(base, exponent)


def prove_equal(a: sympy.Expr, b: sympy.Expr, *, allow_simplify: bool = True) -> str:
    """``proved`` / ``refuted`` / ``unknown`` for ``a == b``."""
    diff = a - b
    if diff == 0:
        return PROVED
    if diff.is_Number:
        return REFUTED
    if not allow_simplify:
        return UNKNOWN
    expanded = sympy.expand(diff)
    if expanded == 0:
        return PROVED
    if expanded.is_Number:
        return REFUTED
    if not expanded.free_symbols:
        zero = expanded.is_zero
        if zero is not None:
            return PROVED if zero else REFUTED
    simplified = sympy.simplify(expanded)
    if simplified == 0:
        return PROVED
    if simplified.is_Number:
        return REFUTED
    return UNKNOWN


def prove_proportional(a: sympy.Expr, b: sympy.Expr, *, positive: bool, allow_simplify: bool = True) -> str:
    """Whether ``a / b`` is a nonzero constant (positive when ``positive``)."""
    if b == 0:
        return PROVED if a == 0 else REFUTED
    ratio = a / b
    if ratio.free_symbols:
        if not allow_simplify:
            return UNKNOWN
        ratio = sympy.cancel(sympy.together(ratio))
    if ratio.free_symbols:
        ratio = sympy.simplify(ratio)
        if ratio.free_symbols:
            return UNKNOWN
    if ratio == 0 or ratio.has(sympy.zoo, sympy.nan, sympy.oo):
        return REFUTED
    if positive:
        sign = ratio.is_positive
        if sign is None:
            return UNKNOWN
        return PROVED if sign else REFUTED
    return PROVED
