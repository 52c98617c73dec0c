"""The lexer of ``latex_parser``: bounds, errors, the whitelisted vocabulary and ``tokenize`` (nothing evaluated)."""

from __future__ import annotations

import re
from fractions import Fraction

MAX_TOKENS = 1500
MAX_NODES = 600
MAX_DEPTH = 40
MAX_DIGITS = 200
MAX_ITEMS = 32

Node = tuple


class ParseError(ValueError):
    """The text is not an expression this parser accepts."""


class LimitError(ValueError):
    """The expression is larger than the configured bounds (treated as not equal to anything)."""


TOKEN = re.compile(
    r"(\s+)|(\d+(?:\.\d*)?|\.\d+)|(\\[A-Za-z]+)|(\\[{}|\\])|(\\[,;!: %>])|([A-Za-z])"
    r"|(<=|>=|!=|\*\*|[-+*/^_=<>!(),\[\]{}|&'])"
)
KINDS = (None, "ws", "num", "cmd", "esc", "skip", "let", "op")

GREEK = frozenset(
    "alpha beta gamma delta epsilon varepsilon zeta eta theta vartheta iota kappa lambda mu nu xi rho sigma "
    "tau upsilon phi varphi chi psi omega Gamma Delta Theta Lambda Xi Sigma Upsilon Phi Psi Omega".split()
)
FUNCTIONS = {
    "sin": "sin", "cos": "cos", "tan": "tan", "cot": "cot", "sec": "sec", "csc": "csc",
    "arcsin": "asin", "arccos": "acos", "arctan": "atan", "sinh": "sinh", "cosh": "cosh", "tanh": "tanh",
    "ln": "ln", "log": "log", "exp": "exp",
}  # fmt: skip
INVERSE = {"sin": "asin", "cos": "acos", "tan": "atan"}
TEXT_NAMES = {"sqrt": "sqrt", "pi": "pi", **FUNCTIONS}
RELOPS = {
    "=": "==", "<": "<", ">": ">", "<=": "<=", ">=": ">=", "!=": "!=",
    "\\leq": "<=", "\\geq": ">=", "\\neq": "!=", "\\lt": "<", "\\gt": ">", "\\le": "<=", "\\ge": ">=",
}  # fmt: skip
MULOPS = frozenset({"*", "\\cdot", "\\times", "\\ast"})
DIVOPS = frozenset({"/", "\\div"})
MATRIX_ENVS = frozenset({"pmatrix", "bmatrix", "Bmatrix", "matrix", "smallmatrix", "array"})
TEXT_WRAPPERS = frozenset(
    {"\\text", "\\mathrm", "\\textrm", "\\mathit", "\\textit", "\\mbox", "\\operatorname"}
)
IMPLICIT_CMDS = frozenset(
    {"\\frac", "\\cfrac", "\\sqrt", "\\binom", "\\lfloor", "\\lceil", "\\pi", "\\infty", "\\begin"}
    | {"\\" + g for g in GREEK}
    | {"\\" + f for f in FUNCTIONS}
    | TEXT_WRAPPERS
)
ONE = ("n", Fraction(1))


def tokenize(text: str) -> list[tuple[str, str, int, int]]:
    """Split ``text`` into (kind, text, start, end) tokens; unknown characters raise ParseError."""
    tokens: list[tuple[str, str, int, int]] = []
    pos, n = 0, len(text)
    while pos < n:
        m = TOKEN.match(text, pos)
        if m is None:
            raise ParseError(f"unexpected character {text[pos]!r}")
        kind = KINDS[m.lastindex or 0]
        if kind not in ("ws", "skip"):
            tokens.append((kind, m.group(), m.start(), m.end()))
            if len(tokens) > MAX_TOKENS:
                raise LimitError("too many tokens")
        pos = m.end()
    return tokens
