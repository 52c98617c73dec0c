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

from fractions import Fraction

from srlm_pl.verifiers.latex_ast import STRUCTURES, children, free_symbols
from srlm_pl.verifiers.latex_commands import CommandParser
from srlm_pl.verifiers.latex_lexer import (
    DIVOPS,
    IMPLICIT_CMDS,
    MAX_DEPTH,
    MAX_DIGITS,
    MAX_ITEMS,
    MAX_NODES,
    MAX_TOKENS,
    MULOPS,
    RELOPS,
    TEXT_NAMES,
    LimitError,
    Node,
    ParseError,
    tokenize,
)

__all__ = ["STRUCTURES", "LimitError", "Node", "ParseError", "children", "free_symbols", "parse_latex", "tokenize"]


class _Parser(CommandParser):
    """Recursive descent over the tokens; the backslash commands, functions and matrices are in ``CommandParser``."""

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
            if tok is None or tok[0] not in ("op", "cmd") or tok[1] not in RELOPS:
                break
            self.i += 1
            ops.append(RELOPS[tok[1]])
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
            return text in IMPLICIT_CMDS
        if kind == "op":
            return text == "(" or (text == "|" and self.abs_depth == 0)
        return False

    def parse_term(self) -> Node:
        current = self.parse_unary()
        while True:
            tok = self.peek()
            if tok is not None and tok[1] in MULOPS and tok[0] in ("op", "cmd"):
                self.i += 1
                current = self.mul(current, self.parse_unary())
            elif tok is not None and tok[1] in DIVOPS and tok[0] in ("op", "cmd"):
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
            name = TEXT_NAMES.get(run)
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


def parse_latex(text: str) -> Node:
    """Parse a normalised answer into an AST; raises ParseError or LimitError."""
    if len(text) > MAX_TOKENS * 4:
        raise LimitError("answer too long")
    tokens = tokenize(text)
    if not tokens:
        raise ParseError("empty")
    return _Parser(tokens).parse()
