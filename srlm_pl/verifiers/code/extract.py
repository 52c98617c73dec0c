"""The program in a completion: the last fenced Python block, else the whole text when it parses as Python.

Only ``ast.parse`` ever looks at the text (parsing runs nothing); the code itself runs only in the sandbox.
A fence is ```` ```python ````, ```` ```py ````, ```` ```python3 ```` or a bare ```` ``` ```` (or a longer run of
backticks or tildes, closed only by a run of the same character at least as long; an indented fence has
its indent removed from the block; CRLF line ends count as LF); an unclosed last fence takes the rest of
the text (a completion cut by the length limit). Blocks tagged with another
language (```` ```bash ````, ```` ```json ````) are skipped.
"""

from __future__ import annotations

import ast
import re
import warnings

# an opening fence (its indent, its run of 3+ backticks or tildes, a tag), the body, then a closing fence of
# the same character at least as long (CommonMark), or the end of the text
_FENCE = re.compile(r"^(?P<indent>[ \t]*)(?P<fence>(?P<ch>[`~])(?P=ch){2,})[ \t]*(?P<tag>[A-Za-z0-9_+-]*)[^\n]*\n"
                    r"(?P<body>.*?)(?:^[ \t]*(?P=fence)(?P=ch)*[ \t]*$|\Z)", re.M | re.S)
_PYTHON_TAGS = {"", "python", "py", "python3", "py3"}


def _parses(text: str) -> bool:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # invalid escape sequences in model text are not our concern
            ast.parse(text)
    except (SyntaxError, ValueError, MemoryError, RecursionError):
        return False
    return True


def _dedent(body: str, indent: str) -> str:
    """``body`` with up to ``len(indent)`` leading blanks removed from each line (a fence indented in a list)."""
    if not indent:
        return body
    return "".join(line[min(len(indent), len(line) - len(line.lstrip(" \t"))):]
                   for line in body.splitlines(keepends=True))


def extract_code(completion: str) -> str | None:
    """The last fenced Python block of ``completion`` (or the whole text if it parses), else None."""
    if not isinstance(completion, str) or not completion.strip():
        return None
    completion = completion.replace("\r\n", "\n")
    blocks = [_dedent(m.group("body"), m.group("indent")) for m in _FENCE.finditer(completion)
              if m.group("tag").lower() in _PYTHON_TAGS]
    blocks = [b for b in blocks if b.strip()]
    if blocks:
        return blocks[-1]
    if "```" not in completion and _parses(completion):
        return completion
    return None
