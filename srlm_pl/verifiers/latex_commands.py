"""Backslash commands, text wrappers, functions and matrix environments for ``latex_parser._Parser``.

A mixin: its methods use the cursor and the expression rules of the parser class that inherits it."""

from __future__ import annotations

from srlm_pl.verifiers.latex_lexer import (
    FUNCTIONS,
    GREEK,
    INVERSE,
    MATRIX_ENVS,
    MAX_ITEMS,
    ONE,
    TEXT_WRAPPERS,
    LimitError,
    Node,
    ParseError,
)


class CommandParser:
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
        if text in TEXT_WRAPPERS:
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
        if power is not None and power == ("neg", ONE) and name in INVERSE:
            return self.node("f", INVERSE[name], (argument,))
        node = self.node("f", name, (argument,) if base is None else (argument, base))
        return node if power is None else self.node("^", node, power)

    def matrix(self) -> Node:
        self.expect("{")
        start = self.i
        while self.peek() is not None and self.peek()[0] == "let":
            self.i += 1
        env = "".join(t[1] for t in self.toks[start : self.i])
        self.expect("}")
        if env not in MATRIX_ENVS:
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
