"""Decide whether two parsed answers are equal: structure first, then numbers, then sympy.

This module runs inside the worker processes (it imports sympy through :mod:`.sympy_bridge`).

Design choices:

* Structures are matched by shape: tuples and matrices element-wise, bare comma lists, ``\\{...\\}`` and
  ``a \\pm b`` as unordered collections (``1 \\pm \\sqrt{19}`` equals ``1-\\sqrt{19}, 1+\\sqrt{19}``),
  intervals by brackets and endpoints (a 2-tuple ``(a, b)`` is also the open interval), unions as
  unordered lists of intervals, a one-variable inequality as the interval it describes, equations up to a
  nonzero constant factor (``2x+2y=4`` equals ``x+y=2``) and inequalities up to a positive one.
* Matching leaves scalar *obligations* (pairs that must be equal or proportional). Every obligation is
  first checked numerically; one clear numeric disagreement makes the answer incorrect without sympy.
* Then sympy tries to prove the survivors, cheap steps first. Before the expensive ``simplify`` step the
  numeric verdict is announced (see :mod:`.worker`): it is used if the deadline expires during
  ``simplify``. Numeric agreement to 30 significant digits at several random points, with sympy unable to
  prove or refute, is accepted as equal.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from fractions import Fraction
from typing import NamedTuple

import sympy

from .latex_parser import STRUCTURES, LimitError, Node, ParseError, free_symbols, parse_latex
from .numeric import AGREE, DISAGREE, Evaluator, compare_at_points, ratio_at_points, sample_points
from .sympy_bridge import PROVED, REFUTED, SympyBuilder, prove_equal, prove_proportional

_UNORDERED = frozenset({"list", "set", "pm", "empty"})
_MIRROR = {"<": ">", ">": "<", "<=": ">=", ">=": "<=", "==": "==", "!=": "!="}
_OO = ("c", "oo")
_NEG_OO = ("neg", _OO)
_MAX_UNORDERED = 16


class Obligation(NamedTuple):
    gold: Node
    answer: Node
    mode: str  # "eq", "prop" (nonzero factor) or "prop+" (positive factor)
    numeric: str


class _Matcher:
    def __init__(self, evaluators: Sequence[Evaluator]) -> None:
        self.evaluators = evaluators
        self.keep: list[Node] = []  # nodes built here must outlive the id()-keyed memos

    def made(self, node: Node) -> Node:
        self.keep.append(node)
        return node

    def match(self, g: Node, a: Node) -> list[Obligation] | None:
        tg, ta = g[0], a[0]
        if tg not in STRUCTURES and ta not in STRUCTURES:
            return self.scalar(g, a)
        if tg == "based" or ta == "based":
            return [] if g == a else None
        if tg in _UNORDERED and ta in _UNORDERED:
            return self.unordered(self.elements(g), self.elements(a))
        if tg == "union" and ta == "union":
            return self.unordered(list(g[1]), list(a[1]))
        if tg == "rel" and ta == "rel":
            return self.relation(g, a)
        gi, ai = self.as_interval(g), self.as_interval(a)
        if gi is not None and ai is not None:
            if gi[1] != ai[1] or gi[4] != ai[4]:
                return None
            return self.ordered((gi[2], gi[3]), (ai[2], ai[3]))
        gv, av = self.as_vector(g), self.as_vector(a)
        if gv is not None and av is not None:
            return self.ordered(gv, av)
        if tg == "matrix" and ta == "matrix":
            if len(g[1]) != len(a[1]) or len(g[1][0]) != len(a[1][0]):
                return None
            return self.ordered([c for r in g[1] for c in r], [c for r in a[1] for c in r])
        return None

    def scalar(self, g: Node, a: Node) -> list[Obligation] | None:
        gi, ai = _infinity(g), _infinity(a)
        if gi or ai:
            return [] if gi == ai else None
        outcome = compare_at_points(g, a, self.evaluators)
        return None if outcome == DISAGREE else [Obligation(g, a, "eq", outcome)]

    def ordered(self, gs: Sequence[Node], as_: Sequence[Node]) -> list[Obligation] | None:
        if len(gs) != len(as_):
            return None
        out: list[Obligation] = []
        for g, a in zip(gs, as_, strict=True):
            sub = self.match(g, a)
            if sub is None:
                return None
            out.extend(sub)
        return out

    def unordered(self, gs: list[Node], as_: list[Node]) -> list[Obligation] | None:
        if len(gs) != len(as_) or len(gs) > _MAX_UNORDERED:
            return None
        used = [False] * len(as_)
        out: list[Obligation] = []
        for g in gs:
            best: tuple[int, list[Obligation]] | None = None
            for j, a in enumerate(as_):
                if used[j]:
                    continue
                sub = self.match(g, a)
                if sub is None:
                    continue
                if all(o.numeric == AGREE for o in sub):
                    best = (j, sub)
                    break
                if best is None:
                    best = (j, sub)
            if best is None:
                return None
            used[best[0]] = True
            out.extend(best[1])
        return out

    def elements(self, node: Node) -> list[Node]:
        tag = node[0]
        if tag == "empty":
            return []
        if tag == "pm":
            left, right = node[1], node[2]
            if left == ("n", Fraction(0)):
                return [right, self.made(("neg", right))]
            return [self.made(("+", (left, right))), self.made(("+", (left, ("neg", right))))]
        if tag in ("list", "set"):
            out: list[Node] = []
            for item in node[1]:
                out.extend(self.elements(item) if item[0] == "pm" else [item])
            return out
        return [node]

    def as_interval(self, node: Node) -> Node | None:
        tag = node[0]
        if tag == "interval":
            return node
        if tag == "tuple" and len(node[1]) == 2:
            return ("interval", "(", node[1][0], node[1][1], ")")
        if tag == "rel":
            return _relation_interval(node)
        return None

    def as_vector(self, node: Node) -> Sequence[Node] | None:
        if node[0] == "tuple":
            return node[1]
        if node[0] == "matrix" and all(len(row) == 1 for row in node[1]):
            return [row[0] for row in node[1]]
        return None

    def relation(self, g: Node, a: Node) -> list[Obligation] | None:
        g_ops, g_args = g[1], g[2]
        a_ops, a_args = a[1], a[2]
        if len(g_ops) != len(a_ops):
            return None
        if a_ops != g_ops:
            mirrored = tuple(_MIRROR[o] for o in reversed(a_ops))
            if mirrored != g_ops:
                return None
            a_ops, a_args = mirrored, tuple(reversed(a_args))
        if len(g_ops) > 1:
            return self.ordered(g_args, a_args)
        dg = self.made(("+", (g_args[0], ("neg", g_args[1]))))
        da = self.made(("+", (a_args[0], ("neg", a_args[1]))))
        positive = g_ops[0] not in ("==", "!=")
        outcome = ratio_at_points(dg, da, self.evaluators, positive)
        if outcome == DISAGREE:
            return None
        return [Obligation(dg, da, "prop+" if positive else "prop", outcome)]


def _infinity(node: Node) -> int:
    if node == _OO:
        return 1
    if node == _NEG_OO:
        return -1
    return 0


def _relation_interval(node: Node) -> Node | None:
    """``x < 3`` as ``(-oo, 3)``, ``1 <= x < 2`` as ``[1, 2)``; None for anything else."""
    ops, args = node[1], node[2]
    if len(ops) == 1:
        left, right = args
        op = ops[0]
        if left[0] != "s":
            if right[0] != "s":
                return None
            left, right, op = right, left, _MIRROR[op]
        if free_symbols(right) or op in ("==", "!="):
            return None
        if op in ("<", "<="):
            return ("interval", "(", _NEG_OO, right, ")" if op == "<" else "]")
        return ("interval", "(" if op == ">" else "[", right, _OO, ")")
    if len(ops) == 2 and args[1][0] == "s" and not free_symbols(args[0]) and not free_symbols(args[2]):
        if all(o in ("<", "<=") for o in ops):
            return (
                "interval",
                "(" if ops[0] == "<" else "[",
                args[0],
                args[2],
                ")" if ops[1] == "<" else "]",
            )
        if all(o in (">", ">=") for o in ops):
            return (
                "interval",
                "(" if ops[1] == ">" else "[",
                args[2],
                args[0],
                ")" if ops[0] == ">" else "]",
            )
    return None


_UNDEFINED = (sympy.zoo, sympy.nan, sympy.oo, -sympy.oo)


def _prove(ob: Obligation, builder: SympyBuilder, allow_simplify: bool) -> str:
    g = builder.build(ob.gold)
    a = builder.build(ob.answer)
    if g.has(*_UNDEFINED) or a.has(*_UNDEFINED):
        return REFUTED  # an undefined or infinite value (1/0, log(0)) equals nothing
    if ob.mode == "eq":
        return prove_equal(g, a, allow_simplify=allow_simplify)
    return prove_proportional(g, a, positive=ob.mode == "prop+", allow_simplify=allow_simplify)


def decide(
    gold_text: str, answer_text: str, announce: Callable[[str], None] | None = None
) -> tuple[str, str]:
    """(status, path) for a normalised gold and answer; ``announce`` receives the fallback verdict
    before the expensive step starts."""
    try:
        gold = parse_latex(gold_text)
    except (ParseError, LimitError):
        return "invalid_gold", "gold_unparsed"
    try:
        answer = parse_latex(answer_text)
    except LimitError:
        return "incorrect", "limit"
    except ParseError:
        return "incorrect", "unparsed"
    names = free_symbols(gold) | free_symbols(answer)
    evaluators = [Evaluator(p) for p in sample_points(names, count=3 if names else 1)]
    matcher = _Matcher(evaluators)
    try:
        obligations = matcher.match(gold, answer)
    except LimitError:
        return "incorrect", "limit"
    if obligations is None:
        return "incorrect", "numeric"
    builder = SympyBuilder()
    pending: list[Obligation] = []
    try:
        for ob in obligations:
            try:
                result = _prove(ob, builder, allow_simplify=False)
            except ParseError:
                result = "unknown"
            if result == REFUTED:
                return "incorrect", "symbolic"
            if result != PROVED:
                pending.append(ob)
        if not pending:
            return "correct", "symbolic"
        fallback = "correct" if all(ob.numeric == AGREE for ob in pending) else "incorrect"
        if announce is not None:
            announce(fallback)
        proved_all = True
        for ob in pending:
            try:
                result = _prove(ob, builder, allow_simplify=True)
            except ParseError:
                result = "unknown"
            if result == REFUTED:
                return "incorrect", "symbolic"
            if result != PROVED:
                proved_all = False
                if ob.numeric != AGREE:
                    return "incorrect", "numeric"
        return "correct", "symbolic" if proved_all else "numeric"
    except LimitError:
        return "incorrect", "limit"
