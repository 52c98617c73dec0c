"""Bounded numeric evaluation of parser ASTs with mpmath, and a three-way numeric comparison.

Design choices:

* Runs only in the worker processes (mpmath comes with sympy, which workers pre-import).
* 40 significant digits, complex arithmetic throughout (principal branches, so both sides of a comparison
  agree on ``\\sqrt{-1}`` or ``\\log(-2)``), free symbols replaced by deterministic pseudo-random points
  of both signs (``|x|`` and ``x`` differ on them, as they should).
* Every operation whose result can explode is bounded *before* it is computed: powers and ``exp`` may not
  produce more than ``MAX_LOG10`` decimal digits of magnitude, factorials and binomials are capped; a
  violation raises :class:`~srlm_pl.verifiers.latex_parser.LimitError`. Domain errors raise
  :class:`EvalError` (the comparison then falls back to sympy).
* Comparison is relative, never chopped to zero: ``10^{-20}`` and ``10^{-30}`` differ. To stay robust to
  cancellation (``10^{40} + 1 - 10^{40}``), each value carries the largest addend magnitude that went into
  it; differences below that noise floor are "agree", clear relative differences are "disagree", and the
  band between is "unsure" (sympy decides).
"""

from __future__ import annotations

import random
from collections.abc import Iterable, Sequence

import mpmath
from mpmath import mp, mpc, mpf

from .latex_parser import LimitError, Node

DPS = 40
MAX_LOG10 = 10_000
MAX_FACTORIAL = 1000
MAX_BINOM_N = 100_000
AGREE_REL = mpf("1e-30")
DISAGREE_REL = mpf("1e-8")
NOISE_REL = mpf(10) ** (-(DPS - 6))
_LN10 = mpmath.log(10)


class EvalError(ArithmeticError):
    """The expression has no numeric value at this point (division by zero, infinity, unknown symbol)."""


def sample_points(names: Iterable[str], count: int = 3, seed: int = 20240611) -> list[dict[str, mpc]]:
    """``count`` assignments of pseudo-random values in ±[0.3, 2.7] to the symbols in ``names``."""
    names = sorted(names)
    if not names:
        return [{}]
    rng = random.Random(seed)
    points = []
    for _ in range(count):
        point = {}
        for name in names:
            magnitude = rng.uniform(0.3, 2.7)
            point[name] = mpc(magnitude if rng.random() < 0.5 else -magnitude)
        points.append(point)
    return points


class Evaluator:
    """Evaluates nodes at one point, memoising each node's (value, noise magnitude)."""

    def __init__(self, env: dict[str, mpc]) -> None:
        self.env = env
        self.memo: dict[int, tuple[mpc, mpf]] = {}

    def value(self, node: Node) -> tuple[mpc, mpf]:
        key = id(node)
        hit = self.memo.get(key)
        if hit is None:
            with mp.workdps(DPS):
                try:
                    hit = self._eval(node)
                except (ZeroDivisionError, ValueError, OverflowError, TypeError) as exc:
                    if isinstance(exc, LimitError):
                        raise
                    raise EvalError(str(exc)) from None
            self.memo[key] = hit
        return hit

    def _eval(self, node: Node) -> tuple[mpc, mpf]:
        tag = node[0]
        if tag == "n":
            return mpc(mpf(node[1].numerator) / node[1].denominator), mpf(0)
        if tag == "s":
            if node[1] not in self.env:
                raise EvalError(f"no value for {node[1]}")
            return self.env[node[1]], mpf(0)
        if tag == "c":
            name = node[1]
            if name == "pi":
                return mpc(mp.pi), mpf(0)
            if name == "e":
                return mpc(mp.e), mpf(0)
            if name == "i":
                return mpc(0, 1), mpf(0)
            raise EvalError("infinity has no numeric value")
        if tag == "+":
            total, noise = mpc(0), mpf(0)
            for term in node[1]:
                v, n = self.value(term)
                total += v
                noise = max(noise, n, abs(v))
            return total, noise
        if tag == "*":
            product, noise = mpc(1), mpf(0)
            for factor in node[1]:
                v, n = self.value(factor)
                noise = max(noise * abs(v), n * abs(product))
                product *= v
            return product, noise
        if tag == "neg":
            v, n = self.value(node[1])
            return -v, n
        if tag == "/":
            a, na = self.value(node[1])
            b, nb = self.value(node[2])
            if b == 0:
                raise EvalError("division by zero")
            return a / b, max(na / abs(b), nb * abs(a) / abs(b) ** 2)
        if tag == "^":
            return self._power(node)
        if tag == "f":
            return self._function(node[1], node[2])
        raise EvalError(f"{tag} is not a scalar")

    def _power(self, node: Node) -> tuple[mpc, mpf]:
        base, nb = self.value(node[1])
        exponent, ne = self.value(node[2])
        if exponent == 0:
            return mpc(1), mpf(0)
        if base == 0:
            if exponent.real > 0:
                return mpc(0), mpf(0)
            raise EvalError("zero to a non-positive power")
        if abs(exponent) > MAX_LOG10 * 100:
            raise LimitError("exponent too large")
        log10_size = (exponent.real * mpmath.log(abs(base)) - exponent.imag * mpmath.arg(base)) / _LN10
        if abs(log10_size) > MAX_LOG10:
            raise LimitError("power too large")
        if exponent.imag == 0 and exponent.real == int(exponent.real) and base.imag == 0:
            value = mpc(mpmath.power(base.real, int(exponent.real)))
        else:
            value = mpmath.power(base, exponent)
        scale = abs(value)
        noise = scale * (nb / abs(base) * abs(exponent) + ne * abs(mpmath.log(base)))
        return mpc(value), noise

    def _function(self, name: str, args: Sequence[Node]) -> tuple[mpc, mpf]:
        x, nx = self.value(args[0])
        if name == "sqrt":
            return mpc(mpmath.sqrt(x)), nx
        if name == "root":
            n, _ = self.value(args[1])
            if n == 0:
                raise EvalError("zeroth root")
            if n.imag == 0 and n.real == int(n.real) and int(n.real) % 2 == 1 and x.imag == 0:
                k = int(n.real)
                magnitude = mpmath.power(abs(x.real), mpf(1) / k)
                return mpc(magnitude if x.real >= 0 else -magnitude), nx
            if abs(n) > MAX_LOG10:
                raise LimitError("root index too large")
            return mpc(mpmath.power(x, 1 / n)), nx
        if name == "exp":
            if abs(x.real) > MAX_LOG10 * _LN10:
                raise LimitError("exp too large")
            value = mpmath.exp(x)
            return mpc(value), nx * abs(value)
        if name in ("ln", "log"):
            if x == 0:
                raise EvalError("log of zero")
            value = mpmath.log(x)
            if len(args) == 2:
                b, _ = self.value(args[1])
                if b == 0 or b == 1:
                    raise EvalError("bad log base")
                value = value / mpmath.log(b)
            return mpc(value), nx / abs(x)
        if name in _TRIG:
            return mpc(_TRIG[name](x)), nx
        if name == "abs":
            return mpc(abs(x)), nx
        if name in ("floor", "ceil"):
            if abs(x.imag) > NOISE_REL:
                raise EvalError("floor of a complex number")
            return mpc(mpmath.floor(x.real) if name == "floor" else mpmath.ceil(x.real)), mpf(0)
        if name == "fact":
            if abs(x) > MAX_FACTORIAL:
                raise LimitError("factorial too large")
            if x.imag == 0 and x.real == int(x.real):
                if x.real < 0:
                    raise EvalError("factorial of a negative integer")
                return mpc(mpmath.factorial(int(x.real))), mpf(0)
            return mpc(mpmath.gamma(x + 1)), nx
        if name == "binom":
            k, _ = self.value(args[1])
            if abs(x) > MAX_BINOM_N or abs(k) > MAX_BINOM_N:
                raise LimitError("binomial too large")
            return mpc(mpmath.binomial(x, k)), mpf(0)
        raise EvalError(f"unknown function {name}")


_TRIG = {
    "sin": mpmath.sin, "cos": mpmath.cos, "tan": mpmath.tan,
    "cot": mpmath.cot, "sec": mpmath.sec, "csc": mpmath.csc,
    "asin": mpmath.asin, "acos": mpmath.acos, "atan": mpmath.atan,
    "sinh": mpmath.sinh, "cosh": mpmath.cosh, "tanh": mpmath.tanh,
}  # fmt: skip


AGREE, DISAGREE, UNSURE = "agree", "disagree", "unsure"


def compare_values(a: tuple[mpc, mpf], b: tuple[mpc, mpf]) -> str:
    """Three-way comparison of two evaluated values (see the module docstring)."""
    (va, na), (vb, nb) = a, b
    diff = abs(va - vb)
    scale = max(abs(va), abs(vb))
    noise = NOISE_REL * max(na, nb)
    if diff <= max(AGREE_REL * scale, noise):
        return AGREE
    if diff > max(DISAGREE_REL * scale, noise * 10**4):
        return DISAGREE
    return UNSURE


def compare_at_points(gold: Node, answer: Node, evaluators: Sequence[Evaluator]) -> str:
    """Compare two scalar nodes at every point; one "disagree" decides, all "agree" agree."""
    outcome = AGREE
    for ev in evaluators:
        try:
            g = ev.value(gold)
            a = ev.value(answer)
        except EvalError:
            outcome = UNSURE
            continue
        result = compare_values(g, a)
        if result == DISAGREE:
            return DISAGREE
        if result == UNSURE:
            outcome = UNSURE
    return outcome


def ratio_at_points(gold: Node, answer: Node, evaluators: Sequence[Evaluator], positive: bool) -> str:
    """Whether ``gold = c * answer`` for one nonzero constant ``c`` (``c > 0`` when ``positive``)."""
    ratios = []
    for ev in evaluators:
        try:
            g, ng = ev.value(gold)
            a, na = ev.value(answer)
        except EvalError:
            return UNSURE
        noise = NOISE_REL * max(ng, na, mpf(1))
        if abs(g) <= noise and abs(a) <= noise:
            continue
        if abs(g) <= noise or abs(a) <= noise:
            return DISAGREE
        ratios.append(g / a)
    if not ratios:
        return UNSURE
    first = ratios[0]
    for r in ratios[1:]:
        if abs(r - first) > DISAGREE_REL * abs(first):
            return DISAGREE
    if positive and (abs(first.imag) > DISAGREE_REL * abs(first) or first.real <= 0):
        return DISAGREE
    return AGREE
