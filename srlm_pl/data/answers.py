"""Gold answers from reference solutions, and rewriting a solution's final line to an answer format.

Reference solutions end in GSM8K's ``#### N`` or contain MATH's ``\\boxed{...}``; the gold answer is
what follows the last ``####``, else the content of the last ``\\boxed{}``.
"""

from __future__ import annotations

import re
from typing import Literal

from srlm_pl.verifiers.extract import last_boxed

AnswerFormat = Literal["gsm8k", "boxed", "answer_is", "keep"]
_CALC = re.compile(r"<<[^<>]*>>")
_FINAL = re.compile(r"\n?#### *(.+?)\s*$", re.S)


def gold_from_solution(solution: str) -> str | None:
    """The final answer of a reference solution (``#### N`` first, then the last ``\\boxed{}``)."""
    if "####" in solution:
        answer = solution.rsplit("####", 1)[1].strip()
        return answer.replace(",", "") if re.fullmatch(r"[-\d,.]+", answer) else (answer or None)
    boxed = last_boxed(solution)
    return boxed.strip() or None if boxed is not None else None


def strip_calculator(text: str) -> str:
    """Remove GSM8K calculator annotations: ``$<<48/2=24>>24`` becomes ``$24``."""
    return _CALC.sub("", text)


def format_solution(solution: str, answer: str | None, fmt: AnswerFormat) -> str:
    """Rewrite the final-answer line of a worked solution to the requested format.

    ``gsm8k``: ends with ``#### N``; ``boxed``: ends with ``The final answer is \\boxed{N}.``;
    ``answer_is``: ends with ``The answer is N.``; ``keep``: unchanged.
    """
    if fmt == "keep" or answer is None:
        return solution
    body = _FINAL.sub("", solution).rstrip() if "####" in solution else solution.rstrip()
    if fmt == "gsm8k":
        return f"{body}\n#### {answer}"
    if fmt == "boxed":
        return body if last_boxed(body) is not None else f"{body}\nThe final answer is \\boxed{{{answer}}}."
    return f"{body}\nThe answer is {answer}."
