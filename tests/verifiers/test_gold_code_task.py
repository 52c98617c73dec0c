"""Code-task golds: the JSON format round-trips, bad golds raise errors naming the field, and completions become
the programs the module docstring of ``srlm_pl.verifiers.code_task`` promises (truncation, imports, modes)."""

from __future__ import annotations

import json

import pytest

from srlm_pl.verifiers.code_task import (
    CodeGoldError,
    CodeTask,
    build_program,
    code_gold,
    defines,
    is_code_gold,
    parse_code_gold,
    prompt_imports,
    truncate_completion,
)

PROMPT = 'from typing import List\n\n\ndef add_7(xs: List[int]) -> int:\n    """Return ..."""\n'
TESTS = "def check(candidate):\n    assert candidate([1]) == 8\n\ncheck(add_7)\n"


def test_gold_round_trips_and_is_recognised() -> None:
    gold = code_gold(TESTS, "add_7", PROMPT)
    assert parse_code_gold(gold) == CodeTask(TESTS, "add_7", PROMPT)
    assert json.loads(gold) == {"tests": TESTS, "entry_point": "add_7", "prompt": PROMPT}
    assert parse_code_gold(code_gold(TESTS, "add_7")).prompt is None
    assert is_code_gold(gold) and not any(is_code_gold(g) for g in ("18", "{1, 2}", "\\{1,2\\}", '{"a": 1}', None))


@pytest.mark.parametrize("gold, field", [
    ('{"entry_point": "f"}', "'tests'"),
    ('{"tests": "assert f(1) == 2", "entry_point": 3}', "'entry_point'"),
    ('{"tests": "assert f(1) == 2", "entry_point": "not a name"}', "'entry_point'"),
    ('{"tests": "", "entry_point": "f"}', "'tests'"),
    ('{"tests": "x", "entry_point": "f", "prompt": 5}', "'prompt'"),
    ("#### 18", "not valid JSON"),
    ('["tests"]', "JSON object"),
])
def test_bad_gold_names_the_field(gold: str, field: str) -> None:
    with pytest.raises(CodeGoldError, match=field) as err:
        parse_code_gold(gold, where="golds[3]")
    assert "golds[3]" in str(err.value)


def test_truncation_stops_at_top_level_only() -> None:
    body = "    def inner(y):\n        return y\n    # a comment\n    return inner(1)\n"
    assert truncate_completion(body) == body  # indented def/comment: part of the function
    assert truncate_completion(body + "\n\ndef main():\n    pass\n") == body + "\n"
    assert truncate_completion(body + "\nif __name__ == '__main__':\n    main()") == body
    assert truncate_completion(body + "\nprint(add_7([1]))") == body


def test_programs_by_mode() -> None:
    task = CodeTask(TESTS, "add_7", PROMPT)
    body = "    return sum(xs) + 7\n\n\ndef unused():\n    pass\n"
    assert build_program(body, task, "prompt_completion") == PROMPT + "    return sum(xs) + 7\n\n"
    assert build_program("   \n", task, "prompt_completion") is None
    assert prompt_imports(PROMPT) == "from typing import List\n"
    assert defines("x = 1\ndef add_7(xs):\n    pass", "add_7") and not defines("    def add_7(xs):", "add_7")
    assert not defines("def add_70(xs):", "add_7")
    with pytest.raises(CodeGoldError, match="'prompt'"):
        build_program(body, CodeTask(TESTS, "add_7"), "prompt_completion")
    with pytest.raises(ValueError, match="program mode"):
        build_program(body, task, "run_it")  # type: ignore[arg-type]
