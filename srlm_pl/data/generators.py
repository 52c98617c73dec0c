"""Built-in, offline, seeded GSM8K-style word problems with step-by-step solutions.

Each problem starts from a quantity an agent owns and applies ``steps`` operations (add, subtract,
multiply, divide), one sentence each; the solution walks through the same operations one line at a
time and ends with ``#### N`` exactly like GSM8K, so every template, verifier and answer format of
the real data applies unchanged. Difficulty is controlled by the number of reasoning steps (1-4)
and the range of numbers. Every intermediate result is a non-negative integer (divisions are exact).

Problem ``i`` of a generator depends only on ``(seed, i)``: any slice can be regenerated without the
rest, and two processes agree on the data without sharing files.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

NAMES = ("Ava", "Ben", "Carla", "Dan", "Ella", "Finn", "Gia", "Hugo", "Ivy", "Jack", "Kai", "Lena",
         "Mia", "Noah", "Omar", "Pia", "Quinn", "Rosa", "Sam", "Tara")
ITEMS = ("apples", "marbles", "stickers", "books", "pencils", "cookies", "cards", "coins", "shells",
         "stamps", "balloons", "crayons")
OPERATIONS = ("add", "sub", "mul", "div")
SYMBOLS = {"add": "+", "sub": "-", "mul": "×", "div": "÷"}
ASCII = {"add": "+", "sub": "-", "mul": "*", "div": "/"}


@dataclass(frozen=True)
class Problem:
    """One generated problem: the question, a worked solution ending in ``#### N``, the answer."""

    question: str
    solution: str
    answer: str
    steps: int

    def as_row(self, index: int) -> dict[str, str | int]:
        return {"id": f"gen-{index}", "question": self.question, "answer": self.solution,
                "gold": self.answer, "steps": self.steps}


class WordProblemGenerator:
    """Seeded generator of arithmetic word problems with GSM8K-style step-by-step solutions."""

    def __init__(
        self,
        min_steps: int = 1,
        max_steps: int = 1,
        max_value: int = 20,
        operations: tuple[str, ...] = ("add", "sub"),
        calculator_annotations: bool = False,
        seed: int = 0,
        style: str = "story",
    ) -> None:
        """
        Args:
            min_steps: fewest reasoning steps (operations) in a problem, 1-4.
            max_steps: most reasoning steps in a problem, 1-4; each problem draws uniformly in range.
            max_value: largest starting quantity and operand for add/subtract; products are capped at
                ``10 * max_value`` so answers stay in a predictable range.
            operations: which of ``add``, ``sub``, ``mul``, ``div`` may appear.
            calculator_annotations: write GSM8K's ``<<a+b=c>>`` calculator annotations in solutions.
            seed: problem ``i`` is a pure function of ``(seed, i)``.
            style: ``story`` (a word problem about a person and items) or ``bare`` (``What is (12 + 7) × 3?``:
                the same computation without the story, an easier task for small pretrained models).
        """
        if not 1 <= min_steps <= max_steps <= 4:
            raise ValueError(f"need 1 <= min_steps <= max_steps <= 4, got {min_steps}, {max_steps}")
        if max_value < 2:
            raise ValueError(f"max_value must be >= 2, got {max_value}")
        if style not in ("story", "bare"):
            raise ValueError(f"style must be 'story' or 'bare', got {style!r}")
        unknown = set(operations) - set(OPERATIONS)
        if unknown or not operations:
            raise ValueError(f"operations must be a non-empty subset of {OPERATIONS}, got {operations}")
        self.min_steps, self.max_steps, self.max_value = min_steps, max_steps, max_value
        self.operations = tuple(operations)
        self.calculator_annotations = calculator_annotations
        self.seed, self.style = seed, style

    def problem(self, index: int) -> Problem:
        rng = random.Random(f"{self.seed}:{index}")
        name, friend = rng.sample(NAMES, 2)
        item = rng.choice(ITEMS)
        steps = rng.randint(self.min_steps, self.max_steps)
        value = rng.randint(2, self.max_value)
        sentences = [f"{name} has {value} {item}."]
        lines: list[str] = []
        expression = str(value)
        for _ in range(steps):
            op, b = self._pick(rng, value)
            new, sentence, line = self._apply(op, value, b, name, friend, item)
            if self.style == "bare":
                sym = SYMBOLS[op]
                grouped = f"({expression})" if op in ("mul", "div") and lines else expression
                expression = f"{grouped} {sym} {b}"
                line = f"{value} {sym} {b} = {self._calc(value, ASCII[op], b, new)}"
            sentences.append(sentence)
            lines.append(line)
            value = new
        sentences.append(f"How many {item} does {name} have now?")
        solution = "\n".join(lines + [f"#### {value}"])
        question = f"What is {expression}?" if self.style == "bare" else " ".join(sentences)
        return Problem(question, solution, str(value), steps)

    def rows(self, n: int, start: int = 0) -> list[dict[str, str | int]]:
        return [self.problem(i).as_row(i) for i in range(start, start + n)]

    def _pick(self, rng: random.Random, value: int) -> tuple[str, int]:
        choices = list(self.operations)
        rng.shuffle(choices)
        for op in choices:
            if op == "add":
                return op, rng.randint(1, self.max_value)
            if op == "sub" and value >= 2:
                return op, rng.randint(1, value - 1)
            if op == "mul" and value * 2 <= 10 * self.max_value:
                return op, rng.randint(2, max(2, min(5, 10 * self.max_value // value)))
            if op == "div":
                divisors = [d for d in range(2, min(value, 10) + 1) if value % d == 0]
                if divisors:
                    return op, rng.choice(divisors)
        return "add", rng.randint(1, self.max_value)  # every allowed op was impossible for this value

    def _calc(self, a: int, sym: str, b: int, c: int) -> str:
        return f"<<{a}{sym}{b}={c}>>{c}" if self.calculator_annotations else str(c)

    def _apply(self, op: str, a: int, b: int, name: str, friend: str, item: str) -> tuple[int, str, str]:
        if op == "add":
            c = a + b
            return c, f"{name} buys {b} more {item}.", \
                f"{name} buys {b} more, so {name} has {a} + {b} = {self._calc(a, '+', b, c)} {item}."
        if op == "sub":
            c = a - b
            return c, f"{name} gives {b} {item} to {friend}.", \
                f"{name} gives away {b}, so {name} has {a} - {b} = {self._calc(a, '-', b, c)} {item}."
        if op == "mul":
            c = a * b
            return c, f"Then {name} gets {b} times as many {item} as before.", \
                f"{name} now has {a} * {b} = {self._calc(a, '*', b, c)} {item}."
        c = a // b
        return c, f"{name} splits the {item} into {b} equal groups and keeps one group.", \
            f"One group holds {a} / {b} = {self._calc(a, '/', b, c)} {item}."


def difficulty_preset(level: int, seed: int = 0) -> WordProblemGenerator:
    """Level 1: one add/subtract step on numbers up to 20 ... level 4: four steps, all ops, up to 100."""
    presets = {
        1: dict(min_steps=1, max_steps=1, max_value=20, operations=("add", "sub")),
        2: dict(min_steps=2, max_steps=2, max_value=30, operations=("add", "sub", "mul")),
        3: dict(min_steps=3, max_steps=3, max_value=50, operations=OPERATIONS),
        4: dict(min_steps=4, max_steps=4, max_value=100, operations=OPERATIONS),
    }
    if level not in presets:
        raise ValueError(f"difficulty level must be 1-4, got {level}")
    return WordProblemGenerator(seed=seed, **presets[level])
