"""Built-in, offline, seeded function-writing tasks with hidden tests, at four difficulty levels.

Each task is a Python function to complete: the prompt is its signature and a one-line docstring (HumanEval's
layout), the canonical solution its body, and the hidden tests five ``assert candidate(...) == ...`` lines
whose expected values come from a reference implementation in this file (never from running generated code).
The gold answer of a task is a code-task JSON gold (``srlm_pl.verifiers.code_gold``), so ``CodeReward``, the
validation loop and the evaluation harness score it with the sandbox.

Levels: 1, one integer argument and one operation with a constant (``Return x plus 7.``: one line);
2, two arguments or a condition (larger of two, divisibility, clamping, ``a * x + b``); 3, a loop over a list
or string (sum, count above a threshold, filter, reverse, count a letter); 4, two steps (sum of squares of the
odd numbers, digit sum, vowels, palindromes, Fibonacci, gcd, running maximum).

Task ``i`` depends only on ``(seed, level, i)``. ``part`` splits the task space (a template with its constants)
by a stable hash into ``train`` (80%) and ``heldout`` (20%), so a model can be evaluated on functions it never
saw, not only on new seeds of the same ones.
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

from srlm_pl.verifiers.code_task import code_gold

Part = Literal["all", "train", "heldout"]
SolutionStyle = Literal["body", "function"]
HELDOUT_BUCKETS = 5  # one bucket of five is held out
LETTERS = "abcdeilnorst"


@dataclass(frozen=True)
class GeneratedTask:
    """One generated task: prompt (signature + docstring), entry point, canonical body, hidden tests."""

    key: str
    level: int
    prompt: str
    entry_point: str
    body: str
    tests: str

    def solution(self, style: SolutionStyle = "body") -> str:
        """The canonical completion: the body (completion style) or the whole function in a fenced block."""
        return self.body if style == "body" else f"```python\n{self.prompt}{self.body}```"

    def gold(self) -> str:
        return code_gold(self.tests, self.entry_point, self.prompt)

    def as_row(self, index: int, style: SolutionStyle = "body") -> dict[str, Any]:
        return {"id": f"code{self.level}-{index}", "question": self.prompt, "solution": self.solution(style),
                "answer": self.gold(), "entry_point": self.entry_point, "level": self.level}


@dataclass(frozen=True)
class Spec:
    """A drawn template instance: name, signature arguments/types, docstring, body, reference, input sampler."""

    name: str
    args: str
    returns: str
    doc: str
    body: str
    ref: Callable[..., Any]
    inputs: Callable[[random.Random], tuple]


def _ints(lo: int, hi: int, n: int = 1) -> Callable[[random.Random], tuple]:
    return lambda r: tuple(r.randint(lo, hi) for _ in range(n))


def _int_list(r: random.Random) -> tuple:
    return ([r.randint(-9, 20) for _ in range(r.randint(1, 6))],)


def _word(r: random.Random) -> tuple:
    return ("".join(r.choice(LETTERS) for _ in range(r.randint(1, 8))),)


def _level1(r: random.Random) -> Spec:
    c = r.randint(2, 19)
    kind = r.choice(["add", "sub", "mul", "mod", "div", "above"])
    doc, expr, ref = {
        "add": (f"Return x plus {c}.", f"x + {c}", lambda x: x + c),
        "sub": (f"Return x minus {c}.", f"x - {c}", lambda x: x - c),
        "mul": (f"Return x times {c}.", f"x * {c}", lambda x: x * c),
        "mod": (f"Return the remainder of x divided by {c}.", f"x % {c}", lambda x: x % c),
        "div": (f"Return x divided by {c}, rounded down.", f"x // {c}", lambda x: x // c),
        "above": (f"Return True if x is greater than {c}, else False.", f"x > {c}", lambda x: x > c),
    }[kind]
    return Spec(f"{kind}_{c}", "x: int", "bool" if kind == "above" else "int", doc, f"    return {expr}\n", ref,
                _ints(-30, 60))


def _level2(r: random.Random) -> Spec:
    a, b = r.randint(2, 9), r.randint(1, 19)
    lo, hi = r.randint(-5, 5), r.randint(10, 30)
    kind = r.choice(["larger", "smaller", "distance", "multiple", "clamp", "linear"])
    if kind == "larger":
        return Spec("larger", "a: int, b: int", "int", "Return the larger of a and b.",
                    "    return a if a > b else b\n", max, _ints(-20, 20, 2))
    if kind == "smaller":
        return Spec("smaller", "a: int, b: int", "int", "Return the smaller of a and b.",
                    "    return a if a < b else b\n", min, _ints(-20, 20, 2))
    if kind == "distance":
        return Spec("distance", "a: int, b: int", "int", "Return the absolute difference of a and b.",
                    "    return abs(a - b)\n", lambda x, y: abs(x - y), _ints(-20, 20, 2))
    if kind == "multiple":
        return Spec(f"is_multiple_of_{a}", "x: int", "bool", f"Return True if x is divisible by {a}, else False.",
                    f"    return x % {a} == 0\n", lambda x: x % a == 0, _ints(-40, 40))
    if kind == "clamp":
        return Spec(f"clamp_{hi}" if lo == 0 else f"clamp_{lo}_{hi}".replace("-", "m"), "x: int", "int",
                    f"Return x limited to the range from {lo} to {hi}.", f"    return max({lo}, min(x, {hi}))\n",
                    lambda x: max(lo, min(x, hi)), _ints(-20, 40))
    return Spec(f"line_{a}_{b}", "x: int", "int", f"Return {a} times x plus {b}.", f"    return {a} * x + {b}\n",
                lambda x: a * x + b, _ints(-20, 20))


def _level3(r: random.Random) -> Spec:
    c, ch = r.randint(0, 9), r.choice(LETTERS)
    kind = r.choice(["total", "count_above", "evens", "scale", "largest", "reverse", "count_letter"])
    loop = "    result = []\n    for x in xs:\n"
    specs = {
        "total": ("total", "xs: list", "int", "Return the sum of the numbers in xs.",
                  "    total = 0\n    for x in xs:\n        total += x\n    return total\n", sum, _int_list),
        "count_above": (f"count_above_{c}", "xs: list", "int", f"Return how many numbers in xs are greater than {c}.",
                        f"    count = 0\n    for x in xs:\n        if x > {c}:\n            count += 1\n"
                        "    return count\n",
                        lambda xs: sum(x > c for x in xs), _int_list),
        "evens": ("evens", "xs: list", "list", "Return the even numbers of xs, in order.",
                  loop + "        if x % 2 == 0:\n            result.append(x)\n    return result\n",
                  lambda xs: [x for x in xs if x % 2 == 0], _int_list),
        "scale": (f"scale_{c + 2}", "xs: list", "list", f"Return each number of xs multiplied by {c + 2}.",
                  loop + f"        result.append(x * {c + 2})\n    return result\n",
                  lambda xs: [x * (c + 2) for x in xs], _int_list),
        "largest": ("largest", "xs: list", "int", "Return the largest number in xs (xs is not empty).",
                    "    best = xs[0]\n    for x in xs:\n        if x > best:\n            best = x\n    return best\n",
                    max, _int_list),
        "reverse": ("reverse", "s: str", "str", "Return s reversed.", "    return s[::-1]\n",
                    lambda s: s[::-1], _word),
        "count_letter": (f"count_{ch}", "s: str", "int", f"Return how many times the letter '{ch}' occurs in s.",
                         f"    return s.count('{ch}')\n", lambda s: s.count(ch), _word),
    }
    return Spec(*specs[kind])


def _fib(n: int) -> int:
    a, b = 0, 1
    for _ in range(n):
        a, b = b, a + b
    return a


def _gcd(a: int, b: int) -> int:
    while b:
        a, b = b, a % b
    return a


def _running_max(xs: list) -> list:
    out, best = [], None
    for x in xs:
        best = x if best is None or x > best else best
        out.append(best)
    return out


def _level4(r: random.Random) -> Spec:
    kind = r.choice(["odd_squares", "digit_sum", "vowels", "palindrome", "fib", "gcd", "running_max"])
    specs = {
        "odd_squares": ("odd_squares", "xs: list", "int", "Return the sum of the squares of the odd numbers in xs.",
                        "    return sum(x * x for x in xs if x % 2 == 1)\n",
                        lambda xs: sum(x * x for x in xs if x % 2 == 1), _int_list),
        "digit_sum": ("digit_sum", "n: int", "int", "Return the sum of the decimal digits of n (n >= 0).",
                      "    return sum(int(d) for d in str(n))\n", lambda n: sum(int(d) for d in str(n)),
                      _ints(0, 99999)),
        "vowels": ("vowels", "s: str", "int", "Return how many letters of s are vowels (a, e, i, o, u).",
                   "    return sum(1 for c in s if c in 'aeiou')\n", lambda s: sum(c in "aeiou" for c in s), _word),
        "palindrome": ("is_palindrome", "s: str", "bool", "Return True if s reads the same backwards, else False.",
                       "    return s == s[::-1]\n", lambda s: s == s[::-1],
                       lambda r: (r.choice(["abba", "racecar", "noon", "a", "level"]),) if r.random() < 0.4
                       else _word(r)),
        "fib": ("fib", "n: int", "int", "Return the n-th Fibonacci number, where fib(0) = 0 and fib(1) = 1.",
                "    a, b = 0, 1\n    for _ in range(n):\n        a, b = b, a + b\n    return a\n", _fib, _ints(0, 25)),
        "gcd": ("gcd", "a: int, b: int", "int", "Return the greatest common divisor of the positive a and b.",
                "    while b:\n        a, b = b, a % b\n    return a\n", _gcd, _ints(1, 120, 2)),
        "running_max": ("running_max", "xs: list", "list", "Return the running maximum of xs: item i is the "
                        "largest of xs[0], ..., xs[i].", "    best = xs[0]\n    result = []\n    for x in xs:\n"
                        "        best = max(best, x)\n        result.append(best)\n    return result\n",
                        _running_max, _int_list),
    }
    return Spec(*specs[kind])


LEVELS: dict[int, Callable[[random.Random], Spec]] = {1: _level1, 2: _level2, 3: _level3, 4: _level4}


def _tests(spec: Spec, r: random.Random, n: int) -> str:
    lines, seen = [], set()
    for _ in range(10 * n):
        args = spec.inputs(r)
        if repr(args) in seen:
            continue
        seen.add(repr(args))
        lines.append(f"    assert candidate({', '.join(map(repr, args))}) == {spec.ref(*args)!r}\n")
        if len(lines) == n:
            break
    return "def check(candidate):\n" + "".join(lines) + f"\n\ncheck({spec.name})\n"


def task_part(key: str) -> str:
    """``heldout`` for one task key (template and constants) in :data:`HELDOUT_BUCKETS`, else ``train``."""
    digest = hashlib.sha256(key.encode()).digest()
    return "heldout" if digest[0] % HELDOUT_BUCKETS == 0 else "train"


class CodeTaskGenerator:
    """Seeded generator of small function-writing tasks with hidden tests."""

    def __init__(self, level: int = 1, seed: int = 0, part: Part = "all", num_tests: int = 5) -> None:
        """
        Args:
            level: difficulty 1-4 (see the module docstring).
            seed: task ``i`` is a pure function of ``(seed, level, i)``.
            part: ``train`` or ``heldout`` keep only the tasks whose template and constants hash into that part
                (80% / 20% of the task space); ``all`` keeps every task.
            num_tests: hidden test cases per task.
        """
        if level not in LEVELS:
            raise ValueError(f"code task level must be 1-4, got {level}")
        if part not in ("all", "train", "heldout"):
            raise ValueError(f"code task part must be 'all', 'train' or 'heldout', got {part!r}")
        if num_tests < 1:
            raise ValueError(f"num_tests must be >= 1, got {num_tests}")
        self.level, self.seed, self.part, self.num_tests = level, seed, part, num_tests

    def task(self, index: int) -> GeneratedTask:
        r = random.Random(f"code:{self.seed}:{self.level}:{index}")
        for _ in range(1000):
            spec = LEVELS[self.level](r)
            key = f"{self.level}:{spec.name}:{spec.doc}"
            if self.part == "all" or task_part(key) == self.part:
                break
        else:  # a level whose task space has no task in this part: a bug in the templates, not in the input
            raise RuntimeError(f"level {self.level} has no task in part {self.part!r}")
        prompt = f"def {spec.name}({spec.args}) -> {spec.returns}:\n    \"\"\"{spec.doc}\"\"\"\n"
        return GeneratedTask(key, self.level, prompt, spec.name, spec.body, _tests(spec, r, self.num_tests))

    def rows(self, n: int, start: int = 0, style: SolutionStyle = "body") -> list[dict[str, Any]]:
        return [self.task(i).as_row(i, style) for i in range(start, start + n)]
