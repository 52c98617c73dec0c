"""The verifier benchmark's pairs: the hand-built corpus and the hostile inputs (``data/``), and pairs built from
the GSM8K test set and MATH-500 when the shared data folder holds them."""

from __future__ import annotations

import json
from pathlib import Path
from typing import NamedTuple

DATA_DIR = Path(__file__).resolve().parent / "data"


class Pair(NamedTuple):
    style: str  # "gsm8k" or "math"
    gold: str
    completion: str
    expected: bool


def corpus() -> list[Pair]:
    """The hand-built pairs, in a fixed order."""
    with (DATA_DIR / "verifier_corpus.jsonl").open() as f:
        return [Pair(**json.loads(line)) for line in f if line.strip()]


def hostile() -> list[tuple[str, str]]:
    """(gold, completion) inputs built to exhaust a verifier."""
    def join(parts: list[list]) -> str:
        return "".join(text * repeat for text, repeat in parts)

    cases = json.loads((DATA_DIR / "verifier_hostile.json").read_text())
    return [(join(c["gold"]), join(c["completion"])) for c in cases]


def real_pairs(root: Path) -> dict[str, list[Pair]]:
    """GSM8K test: the reference solution against "The answer is N." and a wrong N; MATH-500: the answer field
    against the reference solution and against another problem's answer."""
    out: dict[str, list[Pair]] = {"gsm8k": [], "math": []}
    gsm_path, math_path = root / "gsm8k" / "test.jsonl", root / "math500" / "test.jsonl"
    if gsm_path.is_file():
        for r in map(json.loads, gsm_path.open()):
            n = r["answer"].split("####")[-1].strip()
            digits = n.replace(",", "")
            wrong = str(int(digits) + 1) if digits.lstrip("-").isdigit() else n + "1"
            out["gsm8k"].append(Pair("gsm8k", r["answer"], f"Adding it all up. The answer is {n}.", True))
            out["gsm8k"].append(Pair("gsm8k", r["answer"], f"Adding it all up. The answer is {wrong}.", False))
    if math_path.is_file():
        rows = [json.loads(line) for line in math_path.open()]
        for i, r in enumerate(rows):
            other = rows[(i + 7) % len(rows)]["answer"]
            out["math"].append(Pair("math", r["answer"], r["solution"], True))
            out["math"].append(Pair("math", r["answer"], f"Therefore the answer is $\\boxed{{{other}}}$.",
                                    other == r["answer"]))
    return out
