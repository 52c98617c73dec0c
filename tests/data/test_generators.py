import ast
import re

import pytest

from srlm_pl.data.generators import WordProblemGenerator, difficulty_preset

STEP = re.compile(r"(\d+) ([-+*/×÷]) (\d+) = (\d+)")


def _check(problem) -> None:
    """Every solution line is correct arithmetic, steps chain, and #### equals the last result."""
    lines = problem.solution.split("\n")
    assert lines[-1] == f"#### {problem.answer}"
    value = None
    for line in lines[:-1]:
        a, op, b, c = STEP.search(line).groups()
        a, b, c = int(a), int(b), int(c)
        if value is not None:
            assert a == value, "each step starts from the previous result"
        assert c == {"+": a + b, "-": a - b, "*": a * b, "/": a // b, "×": a * b, "÷": a // b}[op]
        if op in "/÷":
            assert a % b == 0
        value = c
    assert str(value) == problem.answer
    assert len(lines) - 1 == problem.steps


@pytest.mark.parametrize("level", [1, 2, 3, 4])
def test_solutions_are_correct_and_steps_match_level(level: int) -> None:
    gen = difficulty_preset(level, seed=7)
    for i in range(300):
        p = gen.problem(i)
        _check(p)
        assert p.steps == level
        assert int(p.answer) >= 0


def test_problem_is_a_pure_function_of_seed_and_index() -> None:
    a, b = difficulty_preset(2, seed=3), difficulty_preset(2, seed=3)
    assert [a.problem(i) for i in range(50)] == [b.problem(i) for i in range(50)]
    assert a.rows(1, start=17)[0]["question"] == a.problem(17).question
    other = difficulty_preset(2, seed=4)
    assert sum(a.problem(i) == other.problem(i) for i in range(50)) < 5


def test_number_range_and_operations_are_respected() -> None:
    gen = WordProblemGenerator(min_steps=1, max_steps=1, max_value=9, operations=("add",), seed=0)
    for i in range(200):
        a, op, b, c = STEP.search(gen.problem(i).solution).groups()
        assert op == "+" and 2 <= int(a) <= 9 and 1 <= int(b) <= 9


def test_calculator_annotations_are_gsm8k_shaped() -> None:
    gen = WordProblemGenerator(calculator_annotations=True, seed=1)
    sol = gen.problem(0).solution
    assert re.search(r"<<\d+[-+]\d+=\d+>>\d+", sol)


@pytest.mark.parametrize("kwargs", [dict(min_steps=0), dict(min_steps=3, max_steps=2), dict(max_steps=5),
                                    dict(max_value=1), dict(operations=("pow",)), dict(operations=())])
def test_bad_settings_are_rejected(kwargs) -> None:
    with pytest.raises(ValueError):
        WordProblemGenerator(**kwargs)


def test_bare_style_is_the_same_computation_as_an_expression() -> None:
    story = WordProblemGenerator(min_steps=1, max_steps=3, operations=("add", "sub", "mul", "div"), seed=4)
    bare = WordProblemGenerator(min_steps=1, max_steps=3, operations=("add", "sub", "mul", "div"), seed=4,
                                style="bare")
    for i in range(200):
        s, b = story.problem(i), bare.problem(i)
        _check(b)
        assert b.answer == s.answer and b.question.startswith("What is ") and b.question.endswith("?")
        expr = b.question[len("What is "):-1].replace("×", "*").replace("÷", "//")
        assert re.fullmatch(r"[\d ()+\-*/]+", expr)
        assert _arith(ast.parse(expr, mode="eval").body) == int(b.answer)


def _arith(node: ast.AST) -> int:
    """Evaluate an integer + - * // expression tree (no eval)."""
    if isinstance(node, ast.Constant):
        return int(node.value)
    ops = {ast.Add: lambda x, y: x + y, ast.Sub: lambda x, y: x - y, ast.Mult: lambda x, y: x * y,
           ast.FloorDiv: lambda x, y: x // y}
    assert isinstance(node, ast.BinOp) and type(node.op) in ops
    return ops[type(node.op)](_arith(node.left), _arith(node.right))
