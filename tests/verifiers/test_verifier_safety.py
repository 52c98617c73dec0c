"""Hostile input: no code execution, bounded time and memory, and the pool survives."""

from __future__ import annotations

import ast
import random
import shutil
import string
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from srlm_pl.verifiers import verify, verify_batch

PACKAGE = Path(__file__).resolve().parents[2] / "srlm_pl" / "verifiers"
FORBIDDEN_CALLS = {
    "eval",
    "exec",
    "sympify",
    "parse_expr",
    "lambdify",
    "system",
    "popen",
    "__import__",
    "alarm",
}
FORBIDDEN_IMPORTS = {"pickle", "signal", "sympy.parsing", "latex2sympy2_extended", "math_verify"}


def _calls_and_imports(source: str) -> tuple[set[str], set[str]]:
    calls, imports = set(), set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Call):
            func = node.func
            name = (
                func.id
                if isinstance(func, ast.Name)
                else func.attr
                if isinstance(func, ast.Attribute)
                else ""
            )
            calls.add(name)
            if name == "compile" and isinstance(func, ast.Name):
                calls.add("builtin-compile")
            for kw in node.keywords:
                if kw.arg == "shell" and not (isinstance(kw.value, ast.Constant) and kw.value.value is False):
                    calls.add("shell=True")
        elif isinstance(node, ast.Import):
            imports.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            imports.add(node.module)
    return calls, imports


def test_package_source_has_no_eval_like_calls() -> None:
    files = sorted(PACKAGE.glob("*.py"))
    assert len(files) >= 10
    for path in files:
        calls, imports = _calls_and_imports(path.read_text())
        bad_calls = calls & (FORBIDDEN_CALLS | {"builtin-compile", "shell=True"})
        assert not bad_calls, f"{path.name} calls {bad_calls}"
        bad_imports = {i for i in imports if any(i == f or i.startswith(f + ".") for f in FORBIDDEN_IMPORTS)}
        assert not bad_imports, f"{path.name} imports {bad_imports}"


def _payloads(marker: Path) -> list[str]:
    m = str(marker)
    code = f"__import__('os').system('touch {m}')"
    return [
        f"\\boxed{{{code}}}",
        code,
        f"The answer is {code}.",
        f"Answer: {code}",
        f"#### {code}",
        f"\\boxed{{eval(\"__import__('os').system('touch {m}')\")}}",
        f"\\boxed{{exec('import os; os.system(\"touch {m}\")')}}",
        f"\\boxed{{\\text{{{code}}}}}",
        f"\\boxed{{$(touch {m})}}",
        f"\\boxed{{`touch {m}`}}",
        f"The answer is ; touch {m}",
        f"\\boxed{{x = __import__('subprocess').call(['touch', '{m}'])}}",
        f"\\boxed{{Symbol('x').__class__.__init__.__globals__['os'].system('touch {m}')}}",
        f"\\boxed{{lambda: open('{m}', 'w')}}",
        f"\\boxed{{\\frac{{{code}}}{{2}}}}",
    ]


@pytest.fixture
def digitless_dir() -> Iterator[Path]:
    """A fresh directory whose path has no digits.

    The payloads embed the marker's path, and a digit in it is a legitimate number to extract: under pytest's
    ``tmp_path`` (``.../pytest-18/...``) the payload "The answer is ; touch .../pytest-18/..." is *correctly* read
    as 18 and matched the gold "18" whenever pytest's run counter reached 18.
    """
    base = Path(tempfile.gettempdir()).resolve()
    if any(c.isdigit() for c in str(base)):
        pytest.skip(f"the temporary directory {base} has digits in its path")
    name = "srlm-marker-" + "".join(random.choices(string.ascii_lowercase, k=12))
    path = base / name
    path.mkdir()
    yield path
    shutil.rmtree(path, ignore_errors=True)


def test_injection_payloads_execute_nothing(warm_pool, digitless_dir: Path) -> None:
    marker = digitless_dir / "MARKER"
    assert not any(c.isdigit() for c in str(marker))
    payloads = _payloads(marker)
    golds = ["\\frac{\\sqrt{2}}{2}", "18", "\\text{Evelyn}", "x^2+1"]
    for payload in payloads:
        for gold in golds:
            assert verify(gold, payload, timeout=5.0).status in {"incorrect", "no_answer"}
            verify(payload, "\\boxed{\\sqrt{2}}", timeout=5.0)  # payload as the gold
            verify(payload, payload, timeout=5.0)
    verify_batch(payloads, payloads[::-1], timeout=5.0)
    verify_batch(["x+1"] * len(payloads), payloads, timeout=5.0)
    time.sleep(0.2)
    assert not marker.exists()


HOSTILE = [
    ("5", "\\boxed{9^{9^{9^{9}}}}"),
    ("5", "\\boxed{2^{2^{2^{2^{2^{2}}}}}}"),
    ("5", "\\boxed{(10^{10})!}"),
    ("5", "\\boxed{\\binom{10^{9}}{5000}}"),
    ("5", "\\boxed{e^{e^{e^{e^{10}}}}}"),
    ("5", "\\boxed{\\sqrt[10^{9}]{2}}"),
    ("5", "\\boxed{x^{10^{9}}}"),
    ("5", "\\boxed{10!!!!}"),
    ("9^{9^{9^{9}}}", "\\boxed{9^{9^{9^{9}}} + 1}"),
    ("x", "\\boxed{" + "+".join(["x"] * 2000) + "}"),
    ("5", "\\boxed{" + "(" * 3000 + "1" + ")" * 3000 + "}"),
    ("5", "\\boxed{" + "{" * 100_000 + "5" + "}" * 100_000 + "}"),
    ("5", "{" * 100_000),
    ("5", "a" * 100_000),
    ("5", "\\boxed{5}" + "\\" * 100_000),
    ("1" * 1_000_000, "1" * 1_000_000),
    ("5", "\\boxed{" + "1" * 1_000_000 + "}"),
    ("5", "\\boxed{\\sqrt{" + "1" * 100_000 + "}}"),
    ("5", "\\boxed{5\x00}"),
    ("5", "\\boxed{5\ud800\udfff}"),
    ("\\frac{1}{2}\x00", "\\boxed{\\frac{1}{2}}\ud800"),
    ("5", "\\boxed{" + "\\frac{1}{" * 500 + "1" + "}" * 500 + "}"),
    ("5", "\\boxed{" + "\\sqrt{" * 2000 + "2" + "}" * 2000 + "}"),
    ("5", "\\boxed{" + "-" * 5000 + "5}"),
    ("5", "\\boxed{" + "x^" * 3000 + "x}"),
    ("18", "<think>" + "We check 7 + 7 = 14 again. " * 80_000 + "</think>\nThe answer is 18."),  # 2 MB think block
    ("5", "</think>" * 250_000 + " so 5"),
    ("7", "<think>" + "the answer is 7 <think> " * 80_000),  # unclosed, with nested openers
]


@pytest.mark.parametrize(("gold", "completion"), HOSTILE, ids=range(len(HOSTILE)))
def test_hostile_inputs_return_within_deadline(warm_pool, gold: str, completion: str) -> None:
    timeout = 1.0
    start = time.monotonic()
    verdict = verify(gold, completion, timeout=timeout)
    elapsed = time.monotonic() - start
    assert elapsed < timeout + 2.0, (elapsed, verdict)
    assert verdict.status in {"correct", "incorrect", "no_answer", "invalid_gold", "timeout"}
    if gold == "5" and verdict.status != "no_answer":
        assert verdict.status != "correct" or verdict.extracted.strip("\x00") == "5"


def test_specific_hostile_verdicts(warm_pool) -> None:
    assert verify("1" * 1_000_000, "1" * 1_000_000).status == "correct"
    assert verify("5", "\\boxed{9^{9^{9^{9}}}}").status == "incorrect"
    assert verify("5", "\\boxed{5\x00}").status == "correct"
    assert verify("\\frac{1}{2}\x00", "\\boxed{\\frac{1}{2}}\ud800").status == "correct"
    for gold, completion in HOSTILE[-3:]:  # the think-block cases: the answer after (or in) the block
        assert verify(gold, completion).status == "correct"


def test_hostile_batch_respects_batch_deadline(warm_pool) -> None:
    golds = [g for g, _ in HOSTILE]
    completions = [c for _, c in HOSTILE]
    start = time.monotonic()
    verdicts = verify_batch(golds, completions, timeout=1.0, batch_timeout=3.0)
    assert time.monotonic() - start < 3.0 + 2.0
    assert len(verdicts) == len(HOSTILE)


def test_slow_symbolic_job_is_killed_and_pool_recovers(warm_pool) -> None:
    restarts = warm_pool.restarts
    # numerically equal polynomials of degree 600: sympy's expand takes several seconds on this pair
    start = time.monotonic()
    verdict = verify("(x+1)^{300}(x-1)^{300}", "\\boxed{(x^2-1)^{300}}", timeout=1.0)
    assert time.monotonic() - start < 3.0
    assert verdict.status == "correct"  # the numeric verdict announced before the slow step
    assert verdict.path == "numeric_deadline"
    assert warm_pool.restarts == restarts + 1
    no_time = verify("(x+2)^{300}(x-2)^{300}", "\\boxed{(x^2-4)^{300}}", timeout=0.0)
    assert no_time.status == "timeout"  # deadline already passed: not even sent to a worker
    assert warm_pool.restarts == restarts + 1
    assert verify("\\frac{\\sqrt{5}}{5}", "\\boxed{\\frac{1}{\\sqrt5}}", timeout=20.0).status == "correct"


def test_workers_have_a_memory_cap(warm_pool) -> None:
    warm_pool.wait_ready(30.0)
    for pid in warm_pool.pids():
        limits = Path(f"/proc/{pid}/limits")
        if not limits.exists():
            pytest.skip("no /proc on this platform")
        line = next(x for x in limits.read_text().splitlines() if x.startswith("Max address space"))
        soft = line.split()[3]
        assert soft != "unlimited"
        assert int(soft) >= 2048 * 2**20
