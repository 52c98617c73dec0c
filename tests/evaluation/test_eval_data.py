"""Evaluation problems: rows without a gold answer are counted and listed (never scored), bad rows counted,
ids unique, dataset presets and prompt styles."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from srlm_pl.data.sources import DataError
from srlm_pl.evaluation.datasets import eval_source, load_eval_set
from srlm_pl.evaluation.prompts import resolve_style, template_from_run_config


def _write(path: Path, lines: list) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(x if isinstance(x, str) else json.dumps(x) for x in lines) + "\n")
    return path


def test_rows_without_answer_are_counted_and_listed_not_scored(tmp_path: Path) -> None:
    f = _write(tmp_path / "gsm.jsonl", [
        {"question": "1+1?", "answer": "so #### 2"},
        {"question": "2+2?", "answer": "no final line here"},  # solution without #### N: no gold
        {"question": "3+3?"},                                   # no answer field at all
        '{"question": "broken',                                  # malformed JSON: a bad row
        {"question": "4+4?", "answer": "#### 8"},
    ])
    data = load_eval_set(eval_source("gsm8k", data_file=str(f)), "gsm8k")
    assert [r["id"] for r in data.rows] == ["0", "4"] and [r["answer"] for r in data.rows] == ["2", "8"]
    assert data.without_answer == ["1", "2"]
    assert data.bad_rows == 1 and "malformed JSON" in data.bad_row_reasons[0]
    assert data.rows_read == 5
    assert any("has no final answer" in r for r in data.without_answer_reasons)
    report = data.report()
    assert report["rows_without_answer"] == 2 and report["problems_in_data"] == 2 and report["bad_rows"] == 1


def test_svamp_layout_missing_answer_and_sentence_join(tmp_path: Path) -> None:
    _write(tmp_path / "svamp" / "test.jsonl", [
        {"ID": "a", "Body": "There are 3 cats", "Question": "How many legs?", "Answer": 12.0},
        {"ID": "b", "Body": "x.", "Question": "y?"},
    ])
    data = load_eval_set(eval_source("svamp", data_root=tmp_path), "svamp")
    assert data.rows == [{"id": "a", "question": "There are 3 cats. How many legs?", "answer": "12"}]
    assert data.without_answer == ["b"] and "'Answer' is missing" in data.without_answer_reasons[0]


def test_limit_duplicate_ids_and_no_usable_answers(tmp_path: Path) -> None:
    f = _write(tmp_path / "m.jsonl", [{"unique_id": f"u{i}", "problem": f"p{i}", "solution": "s", "answer": str(i)}
                                      for i in range(5)])
    assert [r["id"] for r in load_eval_set(eval_source("math500", data_file=str(f), limit=3), "math500").rows] == \
        ["u0", "u1", "u2"]
    dup = _write(tmp_path / "d.jsonl", [{"unique_id": "u", "problem": "p", "solution": "s", "answer": "1"}] * 2)
    with pytest.raises(DataError, match="ids must be unique"):
        load_eval_set(eval_source("math500", data_file=str(dup)), "math500")
    none = _write(tmp_path / "n.jsonl", [{"question": "q", "answer": "no gold"}])
    with pytest.raises(DataError, match="none of the 1 problems has a usable gold answer"):
        load_eval_set(eval_source("gsm8k", data_file=str(none)), "gsm8k")
    with pytest.raises(DataError, match="does not exist"):
        load_eval_set(eval_source("gsm8k", data_file=str(tmp_path / "missing.jsonl")), "gsm8k")


def test_builtin_set_is_seeded() -> None:
    a = load_eval_set(eval_source("builtin", limit=5), "builtin")
    b = load_eval_set(eval_source("builtin", limit=5), "builtin")
    assert a.rows == b.rows and len(a.rows) == 5 and a.source == "builtin(level=1, n=200, seed=3)"


def test_prompt_styles(tiny_tokenizer, tmp_path: Path) -> None:
    style = resolve_style("answer_is", "gsm8k")
    text = style.render("What is 2+3?", tiny_tokenizer)
    assert "The answer is N" in text and "Problem: What is 2+3?" in text
    assert "\\boxed{}" in resolve_style("auto", "math500").render("q", tiny_tokenizer)
    assert "#### N" in resolve_style("auto", "svamp").render("q", tiny_tokenizer)
    assert resolve_style("plain", "gsm8k").render("q", tiny_tokenizer) == "Question: q\nAnswer:"
    bare = resolve_style("question", "gsm8k").render("What is 9-4?", tiny_tokenizer)
    assert "Solve" not in bare and "What is 9-4?" in bare
    assert bare == tiny_tokenizer.apply_chat_template([{"role": "user", "content": "What is 9-4?"}], tokenize=False,
                                                      add_generation_prompt=True)
    cfg = tmp_path / "srlm_config.yaml"
    cfg.write_text("data:\n  init_args:\n    template: {style: plain, plain_template: 'Q: {question} A:'}\n")
    assert template_from_run_config(cfg).plain_template == "Q: {question} A:"
    auto = resolve_style("auto", "gsm8k", cfg)
    assert auto.render("7?", tiny_tokenizer) == "Q: 7? A:" and "training template" in auto.label
    with pytest.raises(ValueError, match="unknown prompt style"):
        resolve_style("fancy", "gsm8k")
