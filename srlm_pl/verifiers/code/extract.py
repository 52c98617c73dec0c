"""The program in a completion: the last fenced Python block, else the whole text when it parses as Python.

Only ``ast.parse`` ever looks at the text (parsing runs nothing); the code itself runs only in the sandbox.
A fence is ```` ```python ````, ```` ```py ````, ```` ```python3 ```` or a bare ```` ``` ````; an unclosed
last fence takes the rest of the text (a completion cut by the length limit). Blocks tagged with another
language (```` ```bash ````, ```` ```json ````) are skipped.
"""

from __future__ import annotations

import ast
import re
import warnings

_FENCE = re.compile(r"^[ \t]*```[ \t]*([A-Za-z0-9_+-]*)[^\n]*\n(.*?)(?:^[ \t]*```[ \t]*$|\Z)", re.M | re.S)
_PYTHON_TAGS = {"", "python", "py", "python3", "py3"}


def _parses(text: str) -> bool:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # invalid escape sequences in model text are not our concern
            ast.parse(text)
    except (SyntaxError, ValueError, MemoryError, RecursionError):
        return False
    return True


def extract_code(completion: str) -> str | None:
    """The last fenced Python block of ``completion`` (or the whole text if it parses), else None."""
    if not isinstance(completion, str) or not completion.strip():
        return None
    blocks = [m.group(2) for m in _FENCE.finditer(completion) if m.group(1).lower() in _PYTHON_TAGS]
    blocks = [b for b in blocks if b.strip()]
    if blocks:
        return blocks[-1]
    if "```" not in completion and _parses(completion):
        return completion
    return None
