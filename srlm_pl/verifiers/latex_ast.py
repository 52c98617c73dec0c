"""The tuple AST of ``latex_parser``: which tags are structures, a node's children, its free symbols."""

from __future__ import annotations

from srlm_pl.verifiers.latex_lexer import Node

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
