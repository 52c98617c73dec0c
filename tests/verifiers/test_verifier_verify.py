"""The public verify / verify_batch API: statuses, fast path, symbolic path, caching, threads."""

from __future__ import annotations

import subprocess
import sys
import threading

import pytest

from srlm_pl.verifiers import STATUSES, Verdict, verify, verify_batch
from srlm_pl.verifiers import api as api_module

GSM8K_GOLD = (
    "Janet sells 16 - 3 - 4 = <<16-3-4=9>>9 duck eggs a day.\nShe makes 9 * 2 = $<<9*2=18>>18.\n#### 18"
)
MATH_GOLD = "so the polar coordinates are $\\boxed{\\left( 3, \\frac{\\pi}{2} \\right)}.$"


def test_verdict_truthiness_and_statuses() -> None:
    assert bool(Verdict("correct", "1"))
    for status in STATUSES[1:]:
        assert not bool(Verdict(status))  # type: ignore[arg-type]
    assert set(STATUSES) == {"correct", "incorrect", "no_answer", "invalid_gold", "timeout"}


@pytest.mark.parametrize(
    ("gold", "completion", "status", "extracted"),
    [
        ("18", "The answer is 18.00.", "correct", "18.00"),
        (GSM8K_GOLD, "She earns $18 every day.\n#### 18", "correct", "18"),
        (GSM8K_GOLD, "So she makes 18 dollars.", "correct", "18"),
        (GSM8K_GOLD, "The answer is 17.", "incorrect", "17"),
        ("1450000", "The answer is 1,450,000.", "correct", "1,450,000"),
        ("\\frac{14}{3}", "Thus $\\boxed{\\dfrac{14}{3}}$.", "correct", "\\dfrac{14}{3}"),
        ("\\frac{14}{3}", "Thus $\\boxed{4\\frac{2}{3}}$.", "correct", "4\\frac{2}{3}"),
        ("\\text{Evelyn}", "The answer is Evelyn.", "correct", "Evelyn"),
        ("\\text{(C)}", "\\boxed{C}", "correct", "C"),
        ("\\text{(C)}", "\\boxed{(B)}", "incorrect", "(B)"),
        ("C", "\\boxed{\\text{(C)}}", "correct", "\\text{(C)}"),
        ("x+1", "The answer is Tuesday.", "incorrect", "Tuesday"),
        ("18", "I could not solve it, sorry about that.", "no_answer", None),
        ("", "The answer is 5.", "invalid_gold", "5"),
        ("0.5", "the answer is 1/2", "correct", "1/2"),
        ("20\\%", "\\boxed{20}", "correct", "20"),
        ("10^{-20}", "\\boxed{10^{-30}}", "incorrect", "10^{-30}"),
    ],
)
def test_fast_path_cases(gold: str, completion: str, status: str, extracted: str | None) -> None:
    verdict = verify(gold, completion)
    assert verdict.status == status
    assert verdict.extracted == extracted


def test_gsm8k_style_pairs_never_reach_the_pool(monkeypatch: pytest.MonkeyPatch) -> None:
    def no_pool():
        raise AssertionError("GSM8K-style pair reached the symbolic path")

    monkeypatch.setattr(api_module, "get_pool", no_pool)
    golds = [f"step one\nstep two\n#### {n}" for n in (18, 1450000, 7, -5, 0)]
    completions = ["The answer is $18.", "#### 1,450,000", "so 7 hours", "It is -5.0", "Answer: 3"]
    assert [v.status for v in verify_batch(golds, completions)] == ["correct"] * 4 + ["incorrect"]


@pytest.mark.parametrize(
    ("gold", "completion", "expected"),
    [
        (MATH_GOLD, "$\\boxed{(3, \\pi/2)}$", True),
        (MATH_GOLD, "$\\boxed{(\\pi/2, 3)}$", False),
        ("\\frac{\\sqrt{3}}{3}", "\\boxed{\\frac{1}{\\sqrt{3}}}", True),
        ("3\\sqrt{13}", "\\boxed{\\sqrt{117}}", True),
        ("3\\sqrt{13}", "\\boxed{\\sqrt{39}}", False),
        ("6 - 5i", "\\boxed{-5i+6}", True),
        ("x^5 - x^4 + x^3 - x^2 + x - 1", "\\boxed{(x-1)(x^4+x^2+1)}", True),
        ("1 \\pm \\sqrt{19}", "\\boxed{1-\\sqrt{19}, 1+\\sqrt{19}}", True),
        ("1 \\pm \\sqrt{19}", "\\boxed{1+\\sqrt{19}}", False),
        ("(-\\infty, 2) \\cup (3, \\infty)", "\\boxed{(3,\\infty)\\cup(-\\infty,2)}", True),
        ("(2,\\infty)", "\\boxed{x > 2}", True),
        ("5x - 7y + 11z + 4 = 0", "\\boxed{-10x+14y-22z-8=0}", True),
        ("5x - 7y + 11z + 4 = 0", "\\boxed{5x-7y+11z-4=0}", False),
        (
            "\\begin{pmatrix} -1/3 \\\\ 2/3 \\end{pmatrix}",
            "\\boxed{\\begin{pmatrix}-\\frac13\\\\\\frac23\\end{pmatrix}}",
            True,
        ),
        ("\\cot x", "\\boxed{\\frac{\\cos x}{\\sin x}}", True),
        ("1-\\frac{1}{e}", "\\boxed{1+\\frac{1}{e}}", False),
        ("4\\sqrt{2}", "\\boxed{4\\sqrt(2)}", True),
        ("4", "\\boxed{4\\sqrt(2)}", False),
        ("\\frac{1}{10^{20}}", "\\boxed{10^{-30}}", False),
        ("1", "\\boxed{1+10^{-40}}", False),
        ("\\sqrt{x^2}", "\\boxed{x}", False),
        ("\\sqrt[3]{-8}", "\\boxed{-2}", True),
        ("\\log_2 8", "\\boxed{3}", True),
    ],
)
def test_symbolic_path(warm_pool, gold: str, completion: str, expected: bool) -> None:
    verdict = verify(gold, completion, timeout=10.0)
    assert verdict.status == ("correct" if expected else "incorrect"), verdict


def test_unparseable_gold_is_reported(warm_pool) -> None:
    verdict = verify("\\frac{1}{", "\\boxed{2}", timeout=10.0)
    assert verdict.status == "invalid_gold"
    assert verify("\\frac{1}{", "\\frac{1}{", timeout=10.0).status == "correct"  # identical text


def test_batch_deduplicates_and_caches(warm_pool, monkeypatch: pytest.MonkeyPatch) -> None:
    api_module.clear_caches()
    calls: list[int] = []
    real_run = warm_pool.run

    def counting_run(jobs, timeout, deadline=None):
        calls.append(len(jobs))
        return real_run(jobs, timeout, deadline)

    monkeypatch.setattr(warm_pool, "run", counting_run)
    golds = ["\\frac{\\sqrt{2}}{2}"] * 8
    completions = ["\\boxed{\\frac{1}{\\sqrt2}}", "\\boxed{\\sqrt{2}}"] * 4
    first = verify_batch(golds, completions, timeout=10.0)
    assert [v.status for v in first] == ["correct", "incorrect"] * 4
    assert calls == [2]  # 8 pairs, 2 distinct
    second = verify_batch(golds, completions, timeout=10.0)
    assert [v.status for v in second] == ["correct", "incorrect"] * 4
    assert {v.path for v in second} == {"cache"}
    assert calls == [2]


def test_batch_rejects_mismatched_lengths() -> None:
    with pytest.raises(ValueError, match="2 golds but 1 completions"):
        verify_batch(["1", "2"], ["1"])


def test_verify_from_many_threads(warm_pool) -> None:
    api_module.clear_caches()
    results: dict[int, str] = {}

    def work(i: int) -> None:
        gold = f"\\frac{{\\sqrt{{{i + 2}}}}}{{{i + 2}}}"
        answer = f"\\boxed{{\\frac{{1}}{{\\sqrt{{{i + 2}}}}}}}" if i % 2 == 0 else "\\boxed{\\pi}"
        results[i] = verify(gold, answer, timeout=20.0).status

    threads = [threading.Thread(target=work, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert results == {i: ("correct" if i % 2 == 0 else "incorrect") for i in range(8)}


def test_import_is_cheap() -> None:
    code = (
        "import sys; import srlm_pl.verifiers as v; "
        "v.verify('18', 'The answer is 18'); "
        "print('sympy' in sys.modules, 'torch' in sys.modules)"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, cwd=_repo()
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["False", "False"]


def _repo() -> str:
    from verifier_paths import REPO_ROOT

    return str(REPO_ROOT)
