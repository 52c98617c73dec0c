"""Tests for tools/make_traces.py: judging samples, the exact-match fallback, and an end-to-end run on a small
trained teacher (kept/dropped counts, output rows the SFT data module reads, resume, settings check)."""

from __future__ import annotations

import importlib.util
import json
import re
import sys
from collections import Counter
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

_spec = importlib.util.spec_from_file_location("make_traces", ROOT / "tools" / "make_traces.py")
mt = importlib.util.module_from_spec(_spec)
sys.modules["make_traces"] = mt  # dataclasses look their module up there
_spec.loader.exec_module(mt)


pytestmark = pytest.mark.usefixtures("one_torch_thread")  # conftest.py: small ops, no thread pool


def test_judge_prompt_keeps_correct_finished_distinct_samples():
    texts = ["a so 3\n#### 3", "b is 4\n#### 4", "a so 3\n#### 3", "c. The answer is 3.", "d \\boxed{3}", "e #### 3"]
    truncated = [False, False, False, False, False, True]
    statuses = ["correct", "incorrect", "correct", "correct", "correct", "correct"]
    res = mt.judge_prompt(texts, truncated, statuses, "3", max_keep=None)
    assert res.kept == [(0, "a so 3\n#### 3"), (3, "c. The answer is 3.\n#### 3"), (4, "d \\boxed{3}")]
    assert res.dropped == Counter({"incorrect": 1, "duplicate": 1, "truncated": 1})
    capped = mt.judge_prompt(texts, truncated, statuses, "3", max_keep=1)
    assert [i for i, _ in capped.kept] == [0] and capped.dropped["over_max_keep"] == 2


def test_exact_match_fallback():
    golds = ["1234", "5", "7", "0.5", "8"]
    texts = ["so #### 1,234", "thus \\boxed{5}", "#### 8", "#### 0.50", "no final answer here"]
    assert mt.exact_match_statuses(golds, texts) == ["correct", "correct", "incorrect", "correct", "no_answer"]


def _greedy_answers(teacher_dir: Path, questions: list[str], max_new_tokens: int) -> list[str | None]:
    """The teacher's greedy final number per question, as the verifier extracts it from the text make_traces
    decodes (None: unfinished, or no plain number)."""
    from srlm_pl.data.templates import PromptTemplate
    from srlm_pl.generation.engine import SamplingConfig, generate
    from srlm_pl.models.loading import ModelSpec, load_model, load_tokenizer
    from srlm_pl.verifiers import extract_answer

    spec = ModelSpec(name_or_path=str(teacher_dir))
    tok = load_tokenizer(spec)
    model = load_model(spec, tok, trainable=False)
    template = PromptTemplate(style="chat")
    prompts = [tok(template.prompt(q, tok), add_special_tokens=False)["input_ids"] for q in questions]
    out = generate(model, prompts, SamplingConfig(max_new_tokens=max_new_tokens, temperature=0.0),
                   eos_token_ids=[tok.eos_token_id], pad_token_id=tok.pad_token_id)
    answers = []
    for ids, n, cut in zip(out.completion_ids.tolist(), out.lengths.tolist(), out.truncated.tolist(), strict=True):
        found = None if cut else extract_answer(tok.decode(ids[:n], skip_special_tokens=True).strip())
        answers.append(found if found is not None and re.fullmatch(r"-?\d+", found) else None)
    return answers


def test_end_to_end_rejection_sampling_resume_and_sft_readable(teacher_dir, tmp_path):
    from srlm_pl.data.sources import BuiltinProblems, DataSource, load_rows

    rows, _ = load_rows(DataSource(builtin=BuiltinProblems(level=1, num_problems=12, seed=5)))
    answers = _greedy_answers(teacher_dir, [r["question"] for r in rows], 40)
    # gold = the teacher's own greedy answer where it gives one (kept), an impossible number elsewhere (dropped);
    # the verifier (srlm_pl.verifiers) judges, so the answer need not be on a "#### N" line
    data = tmp_path / "problems.jsonl"
    with data.open("w") as f:
        for r, a in zip(rows, answers, strict=True):
            f.write(json.dumps({"question": r["question"], "answer": f"work\n#### {a or -12345}"}) + "\n")
    n_good = sum(a is not None for a in answers)
    assert n_good >= 1, answers
    out = tmp_path / "traces.jsonl"

    def args(max_new_tokens: int = 40):
        return mt.parse_args(["--teacher", str(teacher_dir), "--data", str(data), "--instruction", "", "-k", "2",
                              "--temperature", "0", "--max-new-tokens", str(max_new_tokens), "--batch-size", "5",
                              "--out", str(out), "--no-progress"])

    summary = mt.run(args())

    assert summary["prompts"] == 12 and summary["samples"] == 24
    assert summary["kept"] == n_good  # greedy: both samples identical -> one kept, one duplicate
    assert summary["dropped"]["duplicate"] == n_good
    assert summary["kept"] + sum(summary["dropped"].values()) == 24
    assert summary["prompts_with_a_trace"] == n_good
    traces = [json.loads(line) for line in out.read_text().splitlines()]
    by_id = {r["id"]: r for r in traces}
    for i, a in enumerate(answers):
        if a is None:
            assert str(i) not in by_id
            continue
        row = by_id[str(i)]
        assert row["gold"] == a and row["sample_idx"] == 0 and row["question"] == rows[i]["question"]
        assert row["answer"].rstrip().endswith(f"#### {a}")  # appended when the text had no #### line

    # the SFT / distillation data modules read the file with their default fields
    sft_rows, report = load_rows(DataSource(path=str(out)), need=("question", "solution"))
    assert report.kept == n_good and [r["answer"] for r in sft_rows] == [t["gold"] for t in traces]

    # resume: nothing left to do, same counts
    again = mt.run(args())
    assert again["resumed_prompts"] == 12 and again["kept"] == n_good
    assert out.read_text().count("\n") == n_good
    # an interrupted batch: the last prompt's progress line is lost -> its rows are removed and redone once
    progress = out.with_name(out.name + ".progress.jsonl")
    lines = progress.read_text().splitlines()
    progress.write_text("\n".join(lines[:-1]) + "\n")
    redo = mt.run(args())
    assert redo["resumed_prompts"] == 11 and redo["kept"] == n_good
    assert sorted(json.loads(line)["id"] for line in out.read_text().splitlines()) == sorted(by_id)
    # other settings do not mix into the same file
    with pytest.raises(SystemExit, match="other settings"):
        mt.run(args(max_new_tokens=20))


def test_help_documents_every_option(capsys):
    with pytest.raises(SystemExit):
        mt.parse_args(["--help"])
    text = capsys.readouterr().out
    for opt in ("--teacher", "--gguf-file", "--data", "--split", "-k", "--temperature", "--max-new-tokens",
                "--batch-size", "--out", "--max-keep", "--overwrite"):
        assert opt in text
