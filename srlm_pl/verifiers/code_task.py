"""Code tasks as gold answers: the JSON gold format, and how a completion becomes the program that is run.

A code task reaches a reward or an evaluation the way a math gold answer does: as the ``answer`` string of a
data row. That string is a JSON object (build it with :func:`code_gold`, read it with :func:`parse_code_gold`)::

    {"tests": "def check(candidate):\\n    assert candidate(2) == 9\\n\\ncheck(add_7)\\n",
     "entry_point": "add_7",
     "prompt": "def add_7(x: int) -> int:\\n    \\"\\"\\"Return x plus 7.\\"\\"\\"\\n"}

- ``tests`` (required): complete test code that raises on failure and sees the program's definitions (for
  HumanEval: its ``test`` field followed by ``check(<entry_point>)``);
- ``entry_point`` (required): the function the tests call;
- ``prompt`` (optional): the function header the model was shown (signature and docstring); needed when a
  completion is only the function body (completion style).

How a completion becomes a program (``mode``):

- ``extract``: :func:`srlm_pl.verifiers.extract_code` (the last fenced Python block, or the whole text when it
  parses as Python), with the prompt's top-level ``import``/``from`` lines put first, so a chat model's block
  that uses ``List`` as the prompt did still runs; this is what TRL/open-r1 and verl code rewards do;
- ``prompt_completion``: the prompt followed by the completion, cut at the first top-level stop sequence of the
  Codex paper (``\\nclass``, ``\\ndef``, ``\\n#``, ``\\nif``, ``\\nprint``): HumanEval's completion style;
- ``auto``: ``extract`` when the extracted code defines ``entry_point`` at top level (``def name(``), otherwise
  ``prompt_completion`` when the gold has a prompt, otherwise ``extract``.

Model output is never parsed or run here: the only check on it is a regular expression; it runs only in the
sandbox of :mod:`srlm_pl.verifiers.code`.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Literal

ProgramMode = Literal["auto", "extract", "prompt_completion"]
PROGRAM_MODES: tuple[str, ...] = ("auto", "extract", "prompt_completion")
STOP_SEQUENCES: tuple[str, ...] = ("\nclass", "\ndef", "\n#", "\nif", "\nprint")
_IMPORT = re.compile(r"^(?:import|from)\s+\S.*$", re.M)


class CodeGoldError(ValueError):
    """A gold answer that is not a valid code-task JSON object; the message names the field."""


@dataclass(frozen=True)
class CodeTask:
    """One parsed code-task gold: the tests, the function they call, and the prompt shown (if any)."""

    tests: str
    entry_point: str
    prompt: str | None = None


def code_gold(tests: str, entry_point: str, prompt: str | None = None) -> str:
    """The gold-answer string of a code task (a JSON object; see the module docstring)."""
    task = {"tests": tests, "entry_point": entry_point, **({"prompt": prompt} if prompt is not None else {})}
    _check_fields(task, "code_gold()")
    return json.dumps(task, ensure_ascii=False, sort_keys=True)


def is_code_gold(gold: object) -> bool:
    """Whether ``gold`` is a code-task gold (a JSON object with a ``tests`` field); never raises."""
    if not isinstance(gold, str) or not gold.lstrip().startswith("{"):
        return False
    try:
        value = json.loads(gold)
    except ValueError:
        return False
    return isinstance(value, dict) and "tests" in value


def parse_code_gold(gold: object, where: str = "gold") -> CodeTask:
    """Read a code-task gold; raises :class:`CodeGoldError` naming ``where`` and the bad field."""
    if not isinstance(gold, str):
        raise CodeGoldError(f"{where}: a code-task gold must be a JSON string, got {type(gold).__name__}")
    try:
        value = json.loads(gold)
    except ValueError as err:
        raise CodeGoldError(f"{where}: not a code-task gold: not valid JSON ({err}); expected "
                            '{"tests": ..., "entry_point": ..., "prompt": ...} (srlm_pl.verifiers.code_gold)') from err
    if not isinstance(value, dict):
        raise CodeGoldError(f"{where}: a code-task gold must be a JSON object, got {type(value).__name__}")
    _check_fields(value, where)
    return CodeTask(tests=value["tests"], entry_point=value["entry_point"], prompt=value.get("prompt"))


def _check_fields(value: dict, where: str) -> None:
    for name in ("tests", "entry_point"):
        if name not in value:
            raise CodeGoldError(f"{where}: code-task gold has no field {name!r} (fields: {sorted(value)})")
        if not isinstance(value[name], str) or not value[name].strip():
            raise CodeGoldError(f"{where}: code-task gold field {name!r} must be a non-empty string, "
                                f"got {value[name]!r:.80}")
    if not value["entry_point"].isidentifier():
        raise CodeGoldError(f"{where}: code-task gold field 'entry_point' must be a Python identifier, "
                            f"got {value['entry_point']!r:.80}")
    if value.get("prompt") is not None and not isinstance(value["prompt"], str):
        raise CodeGoldError(f"{where}: code-task gold field 'prompt' must be a string or absent, "
                            f"got {type(value['prompt']).__name__}")


def truncate_completion(completion: str) -> str:
    """The completion up to the first top-level stop sequence (:data:`STOP_SEQUENCES`), as HumanEval expects."""
    cut = min((i for i in (completion.find(s) for s in STOP_SEQUENCES) if i >= 0), default=len(completion))
    return completion[:cut]


def defines(code: str, entry_point: str) -> bool:
    """Whether ``code`` has a top-level ``def entry_point(`` line (a textual check: nothing is parsed)."""
    return re.search(rf"^(?:async\s+)?def\s+{re.escape(entry_point)}\s*\(", code, re.M) is not None


def prompt_imports(prompt: str | None) -> str:
    """The top-level import lines of a (trusted, dataset-given) prompt, one per line."""
    return "".join(f"{line}\n" for line in _IMPORT.findall(prompt or ""))


def build_program(completion: str, task: CodeTask, mode: ProgramMode = "auto") -> str | None:
    """The program to run for one completion, or None when there is no code to run (see the module docstring)."""
    if mode not in PROGRAM_MODES:
        raise ValueError(f"unknown program mode {mode!r}; expected one of {list(PROGRAM_MODES)}")
    if mode != "prompt_completion":
        from srlm_pl.verifiers import extract_code  # the sandbox package's public name (lazy)

        extracted = extract_code(completion)
        if mode == "extract" or task.prompt is None or (extracted is not None and defines(extracted, task.entry_point)):
            return prompt_imports(task.prompt) + extracted if extracted is not None and extracted.strip() else None
    if task.prompt is None:
        raise CodeGoldError("program mode 'prompt_completion' needs the code-task gold's 'prompt' field, "
                            "which is absent")
    body = truncate_completion(completion)
    return task.prompt + body if body.strip() else None
