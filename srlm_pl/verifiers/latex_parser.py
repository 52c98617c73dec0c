"""A whitelisting LaTeX/plain-math parser into a small tuple AST; nothing is ever evaluated here.

Why our own parser instead of ``latex2sympy2_extended``: that package turns every numeric token into a
sympy number by calling ``Number(str)``, which runs ``sympify`` (i.e. ``eval``) on text taken from the model,
and its ANTLR runtime is slow. This recursive-descent parser accepts only a fixed vocabulary (digits,
single letters, Greek letters, a whitelist of commands and operators) and builds plain tuples, so model
text can never reach ``eval`` and the tree is bounded *while it is built*:

* at most ``MAX_TOKENS`` tokens, ``MAX_NODES`` nodes, nesting ``MAX_DEPTH`` (so 100,000 nested braces
  raise :class:`LimitError` instead of a ``RecursionError``), ``MAX_DIGITS`` digits per number literal,
  ``MAX_ITEMS`` items per collection;
* the sizes of powers, factorials and the like are bounded later, by the evaluators, before any value
  is computed.

AST node shapes (all tuples, first item is the tag):
``("n", Fraction)`` number, ``("s", name)`` symbol, ``("c", "pi"|"e"|"i"|"oo")`` constant,
``("+", (terms))``, ``("*", (factors))``, ``("neg", x)``, ``("/", num, den)``, ``("^", base, exp)``,
``("f", name, (args))`` function, ``("based", digits, base)`` a numeral like ``52_8``;
structures: ``("list", items)`` (bare comma list), ``("set", items)``, ``("tuple", items)``,
``("interval", left, a, b, right)``, ``("union", parts)``, ``("matrix", rows)``,
``("rel", ops, operands)``, ``("pm", a, b)`` (``a \\pm b``), ``("empty",)``.
"""

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


_TOKEN = re.compile(
    r"(\s+)|(\d+(?:\.\d*)?|\.\d+)|(\\[A-Za-z]+)|(\\[{}|\\])|(\\[,;!: %>])|([A-Za-z])"
    r"|(<=|>=|!=|\*\*|[-+*/^_=<>!(),\[\]{}|&'])"
)
_KINDS = (None, "ws", "num", "cmd", "esc", "skip", "let", "op")

GREEK = frozenset(
    "alpha beta gamma delta epsilon varepsilon zeta eta theta vartheta iota kappa lambda mu nu xi rho sigma "
    "tau upsilon phi varphi chi psi omega Gamma Delta Theta Lambda Xi Sigma Upsilon Phi Psi Omega".split()
)
FUNCTIONS = {
    "sin": "sin", "cos": "cos", "tan": "tan", "cot": "cot", "sec": "sec", "csc": "csc",
    "arcsin": "asin", "arccos": "acos", "arctan": "atan", "sinh": "sinh", "cosh": "cosh", "tanh": "tanh",
    "ln": "ln", "log": "log", "exp": "exp",
}  # fmt: skip
_INVERSE = {"sin": "asin", "cos": "acos", "tan": "atan"}
_TEXT_NAMES = {"sqrt": "sqrt", "pi": "pi", **FUNCTIONS}
_RELOPS = {
    "=": "==", "<": "<", ">": ">", "<=": "<=", ">=": ">=", "!=": "!=",
    "\\leq": "<=", "\\geq": ">=", "\\neq": "!=", "\\lt": "<", "\\gt": ">", "\\le": "<=", "\\ge": ">=",
}  # fmt: skip
_MULOPS = frozenset({"*", "\\cdot", "\\times", "\\ast"})
_DIVOPS = frozenset({"/", "\\div"})
_MATRIX_ENVS = frozenset({"pmatrix", "bmatrix", "Bmatrix", "matrix", "smallmatrix", "array"})
_TEXT_WRAPPERS = frozenset(
    {"\\text", "\\mathrm", "\\textrm", "\\mathit", "\\textit", "\\mbox", "\\operatorname"}
)
_IMPLICIT_CMDS = frozenset(
    {"\\frac", "\\cfrac", "\\sqrt", "\\binom", "\\lfloor", "\\lceil", "\\pi", "\\infty", "\\begin"}
    | {"\\" + g for g in GREEK}
    | {"\\" + f for f in FUNCTIONS}
    | _TEXT_WRAPPERS
)
ONE = ("n", Fraction(1))


def tokenize(text: str) -> list[tuple[str, str, int, int]]:
    """Split ``text`` into (kind, text, start, end) tokens; unknown characters raise ParseError."""
    tokens: list[tuple[str, str, int, int]] = []
    pos, n = 0, len(text)
    while pos < n:
        m = _TOKEN.match(text, pos)
        if m is None:
            raise ParseError(f"unexpected character {text[pos]!r}")
        kind = _KINDS[m.lastindex or 0]
        if kind not in ("ws", "skip"):
            tokens.append((kind, m.group(), m.start(), m.end()))
            if len(tokens) > MAX_TOKENS:
                raise LimitError("too many tokens")
        pos = m.end()
    return tokens


class _Parser:
    def __init__(self, tokens: list[tuple[str, str, int, int]]) -> None:
        self.toks = tokens
        self.i = 0
        self.depth = 0
        self.nodes = 0
        self.abs_depth = 0

    # -- helpers -----------------------------------------------------------------------------------
    def node(self, *parts: object) -> Node:
        self.nodes += 1
        if self.nodes > MAX_NODES:
            raise LimitError("expression too large")
        return parts

    def peek(self, k: int = 0) -> tuple[str, str, int, int] | None:
        j = self.i + k
        return self.toks[j] if j < len(self.toks) else None

    def at(self, text: str) -> bool:
        tok = self.peek()
        return tok is not None and tok[1] == text and tok[0] in ("op", "cmd", "esc")

    def expect(self, text: str) -> None:
        if not self.at(text):
            got = self.peek()
            raise ParseError(f"expected {text!r}, got {got[1] if got else 'end'!r}")
        self.i += 1

    def enter(self) -> None:
        self.depth += 1
        if self.depth > MAX_DEPTH:
            raise LimitError("nesting too deep")

    # -- grammar -------------------------------------------------------------------------------------
    def parse(self) -> Node:
        items = self.parse_items()
        if self.i != len(self.toks):
            raise ParseError(f"unexpected {self.toks[self.i][1]!r}")
        return items[0] if len(items) == 1 else self.node("list", tuple(items))

    def parse_items(self) -> list[Node]:
        items = [self.parse_union()]
        while self.at(","):
            self.i += 1
            items.append(self.parse_union())
            if len(items) > MAX_ITEMS:
                raise LimitError("too many items")
        return items

    def parse_union(self) -> Node:
        parts = [self.parse_relation()]
        while self.at("\\cup"):
            self.i += 1
            parts.append(self.parse_relation())
        return parts[0] if len(parts) == 1 else self.node("union", tuple(parts))

    def parse_relation(self) -> Node:
        operands = [self.parse_arith()]
        ops: list[str] = []
        while True:
            tok = self.peek()
            if tok is None or tok[0] not in ("op", "cmd") or tok[1] not in _RELOPS:
                break
            self.i += 1
            ops.append(_RELOPS[tok[1]])
            operands.append(self.parse_arith())
        if not ops:
            return operands[0]
        return self.node("rel", tuple(ops), tuple(operands))

    def parse_arith(self) -> Node:
        self.enter()
        terms: list[Node] = []
        if self.at("\\pm") or self.at("\\mp"):
            self.i += 1
            right = self.parse_arith()
            self.depth -= 1
            return self.node("pm", ("n", Fraction(0)), right)
        negate = False
        if self.at("-"):
            self.i += 1
            negate = True
        elif self.at("+"):
            self.i += 1
        term = self.parse_term()
        terms.append(self.node("neg", term) if negate else term)
        while True:
            if self.at("+"):
                self.i += 1
                terms.append(self.parse_term())
            elif self.at("-"):
                self.i += 1
                terms.append(self.node("neg", self.parse_term()))
            elif self.at("\\pm") or self.at("\\mp"):
                self.i += 1
                left = terms[0] if len(terms) == 1 else self.node("+", tuple(terms))
                right = self.parse_arith()
                self.depth -= 1
                return self.node("pm", left, right)
            else:
                break
        self.depth -= 1
        return terms[0] if len(terms) == 1 else self.node("+", tuple(terms))

    def starts_atom(self) -> bool:
        tok = self.peek()
        if tok is None:
            return False
        kind, text = tok[0], tok[1]
        if kind in ("num", "let"):
            return True
        if kind == "cmd":
            return text in _IMPLICIT_CMDS
        if kind == "op":
            return text == "(" or (text == "|" and self.abs_depth == 0)
        return False

    def parse_term(self) -> Node:
        current = self.parse_unary()
        while True:
            tok = self.peek()
            if tok is not None and tok[1] in _MULOPS and tok[0] in ("op", "cmd"):
                self.i += 1
                current = self.mul(current, self.parse_unary())
            elif tok is not None and tok[1] in _DIVOPS and tok[0] in ("op", "cmd"):
                self.i += 1
                current = self.node("/", current, self.parse_unary())
            elif self.starts_atom():
                current = self.mul(current, self.parse_power())
            else:
                return current

    def mul(self, a: Node, b: Node) -> Node:
        if a[0] == "*":
            return self.node("*", a[1] + (b,))
        return self.node("*", (a, b))

    def parse_unary(self) -> Node:
        if self.at("-"):
            self.i += 1
            self.enter()
            inner = self.parse_unary()
            self.depth -= 1
            return self.node("neg", inner)
        if self.at("+"):
            self.i += 1
            return self.parse_unary()
        return self.parse_power()

    def parse_power(self) -> Node:
        base = self.parse_postfix()
        exponents = []
        while self.at("^") or self.at("**"):
            self.i += 1
            exponents.append(self.parse_script())
        if not exponents:
            return base
        exponent = exponents[-1]
        for e in reversed(exponents[:-1]):
            exponent = self.node("^", e, exponent)
        result = self.node("^", base, exponent)
        while self.at("!"):
            self.i += 1
            result = self.node("f", "fact", (result,))
        return result

    def parse_script(self) -> Node:
        """The argument of ``^``: a braced group, a parenthesised group, or one atom (with a sign)."""
        self.enter()
        try:
            if self.at("{"):
                self.i += 1
                inner = self.parse_relation()
                self.expect("}")
                return inner
            if self.at("-"):
                self.i += 1
                return self.node("neg", self.parse_script())
            if self.at("+"):
                self.i += 1
                return self.parse_script()
            return self.parse_postfix()
        finally:
            self.depth -= 1

    def parse_postfix(self) -> Node:
        node = self.parse_primary()
        while True:
            if self.at("!"):
                self.i += 1
                node = self.node("f", "fact", (node,))
            elif self.at("_"):
                self.i += 1
                sub = self.raw_group()
                if node[0] == "s":
                    node = self.node("s", node[1] + "_" + sub)
                elif node[0] == "n" and node[1].denominator == 1 and sub.isdigit():
                    node = self.node("based", str(node[1].numerator), sub)
                else:
                    raise ParseError("unsupported subscript")
            elif self.at("'"):
                raise ParseError("primes are not supported")
            else:
                return node

    def raw_group(self) -> str:
        """Text of a subscript: ``{...}`` or a single token (digits of a number: first one only)."""
        if self.at("{"):
            self.i += 1
            parts = []
            while not self.at("}"):
                tok = self.peek()
                if tok is None or len(parts) > 16:
                    raise ParseError("bad subscript")
                parts.append(tok[1].lstrip("\\"))
                self.i += 1
            self.i += 1
            return "".join(parts)
        tok = self.peek()
        if tok is None or tok[0] not in ("num", "let", "cmd"):
            raise ParseError("bad subscript")
        self.i += 1
        if tok[0] == "num" and len(tok[1]) > 1:
            self.push_back_digits(tok, 1)
            return tok[1][0]
        return tok[1].lstrip("\\")

    def push_back_digits(self, tok: tuple[str, str, int, int], keep: int) -> None:
        """Split a number token so a LaTeX one-character argument (``\\frac12``) takes one digit."""
        rest = tok[1][keep:]
        self.toks.insert(self.i, ("num", rest, tok[2] + keep, tok[3]))

    def arg(self) -> Node:
        """A LaTeX macro argument: ``{...}``, or a single token (one digit of a number)."""
        self.enter()
        try:
            if self.at("{"):
                self.i += 1
                inner = self.parse_relation()
                self.expect("}")
                return inner
            tok = self.peek()
            if tok is None:
                raise ParseError("missing argument")
            if tok[0] == "num":
                self.i += 1
                if len(tok[1]) > 1 and "." not in tok[1]:
                    self.push_back_digits(tok, 1)
                    return self.number(tok[1][0])
                return self.number(tok[1])
            return self.parse_primary()
        finally:
            self.depth -= 1

    def number(self, text: str) -> Node:
        if len(text) > MAX_DIGITS:
            raise LimitError("number literal too long")
        return self.node("n", Fraction(text))

    def paren_group(self, open_: str) -> Node:
        self.enter()
        items = self.parse_items()
        tok = self.peek()
        if tok is None or tok[1] not in (")", "]"):
            raise ParseError("unclosed bracket")
        close = tok[1]
        self.i += 1
        self.depth -= 1
        if len(items) == 1:
            if (open_, close) in (("(", ")"), ("[", "]")):
                return items[0]
            raise ParseError("half-open group with one item")
        if len(items) == 2 and (open_, close) != ("(", ")"):
            return self.node("interval", open_, items[0], items[1], close)
        if (open_, close) in (("(", ")"), ("[", "]")):
            return self.node("tuple", tuple(items))
        raise ParseError("mismatched brackets")

    def letter_run(self) -> str:
        """Letters adjacent to the current one (``sqrt``, ``pi``, ``sin`` written without a backslash)."""
        run = [self.toks[self.i][1]]
        end = self.toks[self.i][3]
        j = self.i + 1
        while j < len(self.toks) and self.toks[j][0] == "let" and self.toks[j][2] == end and len(run) < 8:
            run.append(self.toks[j][1])
            end = self.toks[j][3]
            j += 1
        return "".join(run)

    def parse_primary(self) -> Node:
        tok = self.peek()
        if tok is None:
            raise ParseError("unexpected end")
        self.enter()
        try:
            return self._primary(tok)
        finally:
            self.depth -= 1

    def _primary(self, tok: tuple[str, str, int, int]) -> Node:
        kind, text = tok[0], tok[1]
        if kind == "num":
            self.i += 1
            return self.number(text)
        if kind == "let":
            run = self.letter_run()
            name = _TEXT_NAMES.get(run)
            if name is not None and (
                self.i + len(run) >= len(self.toks) or self.toks[self.i + len(run)][0] != "let"
            ):
                self.i += len(run)
                if name == "pi":
                    return self.node("c", "pi")
                if name == "sqrt":
                    return self.node("f", "sqrt", (self.function_argument(),))
                return self.function(name)
            self.i += 1
            if text == "e":
                return self.node("c", "e")
            if text == "i":
                return self.node("c", "i")
            return self.node("s", text)
        if kind == "esc":
            if text == "\\{":
                self.i += 1
                if self.at("\\}"):
                    self.i += 1
                    return self.node("empty")
                items = self.parse_items()
                self.expect("\\}")
                return self.node("set", tuple(items))
            raise ParseError(f"unexpected {text!r}")
        if kind == "op":
            if text in ("(", "["):
                self.i += 1
                return self.paren_group(text)
            if text == "{":
                self.i += 1
                inner = self.parse_relation()
                self.expect("}")
                return inner
            if text == "|":
                self.i += 1
                self.abs_depth += 1
                inner = self.parse_arith()
                self.expect("|")
                self.abs_depth -= 1
                return self.node("f", "abs", (inner,))
            raise ParseError(f"unexpected {text!r}")
        return self.command(text)

    def command(self, text: str) -> Node:
        self.i += 1
        name = text[1:]
        if text in ("\\frac", "\\cfrac"):
            num = self.arg()
            den = self.arg()
            return self.node("/", num, den)
        if text == "\\sqrt":
            index = None
            if self.at("["):
                self.i += 1
                index = self.parse_arith()
                self.expect("]")
            radicand = self.function_argument() if self.at("(") else self.arg()
            if index is None:
                return self.node("f", "sqrt", (radicand,))
            return self.node("f", "root", (radicand, index))
        if text == "\\binom":
            return self.node("f", "binom", (self.arg(), self.arg()))
        if text == "\\pi":
            return self.node("c", "pi")
        if text == "\\infty":
            return self.node("c", "oo")
        if text == "\\varnothing":
            return self.node("empty")
        if name in GREEK:
            return self.node("s", name)
        if name in FUNCTIONS:
            return self.function(FUNCTIONS[name])
        if text in ("\\lfloor", "\\lceil"):
            inner = self.parse_arith()
            self.expect("\\rfloor" if text == "\\lfloor" else "\\rceil")
            return self.node("f", "floor" if text == "\\lfloor" else "ceil", (inner,))
        if text in ("\\lvert", "\\vert"):
            inner = self.parse_arith()
            self.expect("\\rvert" if text == "\\lvert" else "\\vert")
            return self.node("f", "abs", (inner,))
        if text in _TEXT_WRAPPERS:
            return self.text_wrapper()
        if text == "\\begin":
            return self.matrix()
        raise ParseError(f"unsupported command {text!r}")

    def text_wrapper(self) -> Node:
        """``\\mathrm{e}`` and friends around a single name: treat the letters as if written plainly."""
        self.expect("{")
        start = self.i
        while self.peek() is not None and self.peek()[0] == "let":
            self.i += 1
        letters = "".join(t[1] for t in self.toks[start : self.i])
        self.expect("}")
        if letters == "e":
            return self.node("c", "e")
        if letters == "i":
            return self.node("c", "i")
        if len(letters) == 1:
            return self.node("s", letters)
        raise ParseError("text inside an expression")

    def function_argument(self) -> Node:
        if self.at("("):
            self.i += 1
            self.enter()
            inner = self.parse_arith()
            self.expect(")")
            self.depth -= 1
            return inner
        if self.at("{"):
            return self.arg()
        # \sin 2x: a product of plain atoms (numbers, letters, constants), not of further functions
        arg = self.parse_power()
        while True:
            tok = self.peek()
            if tok is None or not (tok[0] in ("num", "let") or tok[1] in ("\\pi",) or tok[1][1:] in GREEK):
                return arg
            arg = self.mul(arg, self.parse_power())

    def function(self, name: str) -> Node:
        power = None
        base = None
        if self.at("^"):
            self.i += 1
            power = self.parse_script()
        if name == "log" and self.at("_"):
            self.i += 1
            base = self.arg()
            if power is None and self.at("^"):
                self.i += 1
                power = self.parse_script()
        argument = self.function_argument()
        if power is not None and power == ("neg", ONE) and name in _INVERSE:
            return self.node("f", _INVERSE[name], (argument,))
        node = self.node("f", name, (argument,) if base is None else (argument, base))
        return node if power is None else self.node("^", node, power)

    def matrix(self) -> Node:
        self.expect("{")
        start = self.i
        while self.peek() is not None and self.peek()[0] == "let":
            self.i += 1
        env = "".join(t[1] for t in self.toks[start : self.i])
        self.expect("}")
        if env not in _MATRIX_ENVS:
            raise ParseError(f"unsupported environment {env!r}")
        if env == "array" and self.at("{"):
            while self.peek() is not None and not self.at("}"):
                self.i += 1
            self.expect("}")
        rows: list[tuple[Node, ...]] = []
        row: list[Node] = []
        while True:
            if self.at("\\end"):
                break
            row.append(self.parse_arith())
            if self.at("&"):
                self.i += 1
            elif self.at("\\\\"):
                self.i += 1
                rows.append(tuple(row))
                row = []
            elif not self.at("\\end"):
                raise ParseError("bad matrix cell")
            if len(rows) * 8 + len(row) > MAX_ITEMS * 8:
                raise LimitError("matrix too large")
        if row:
            rows.append(tuple(row))
        self.expect("\\end")
        self.expect("{")
        while self.peek() is not None and self.peek()[0] == "let":
            self.i += 1
        self.expect("}")
        if not rows or any(len(r) != len(rows[0]) for r in rows):
            raise ParseError("ragged matrix")
        return self.node("matrix", tuple(rows))


def parse_latex(text: str) -> Node:
    """Parse a normalised answer into an AST; raises ParseError or LimitError."""
    if len(text) > MAX_TOKENS * 4:
        raise LimitError("answer too long")
    tokens = tokenize(text)
    if not tokens:
        raise ParseError("empty")
    return _Parser(tokens).parse()


STRUCTURES = frozenset({"list", "set", "tuple", "interval", "union", "matrix", "rel", "pm", "empty", "based"})


def children(node: Node) -> tuple[Node, ...]:
    """The sub-nodes of ``node``."""
    tag = node[0]
    if tag in ("+", "*", "list", "set", "tuple", "union"):
        return node[1]
    if tag == "neg":
        return (node[1],)
    if tag in ("/", "^", "pm"):
        return (node[1], node[2])
    if tag in ("f", "rel"):
        return node[2]
    if tag == "interval":
        return (node[2], node[3])
    if tag == "matrix":
        return tuple(cell for row in node[1] for cell in row)
    return ()


def free_symbols(node: Node) -> set[str]:
    """Names of the symbols in ``node`` (iterative, so deep trees cannot overflow the stack)."""
    out: set[str] = set()
    stack = [node]
    while stack:
        cur = stack.pop()
        if cur[0] == "s":
            out.add(cur[1])
        else:
            stack.extend(children(cur))
    return out
