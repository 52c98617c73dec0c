"""Tests for tools/make_traces.py: judging samples, the exact-match fallback, and end-to-end runs on small trained
teachers (kept/dropped counts, output rows the SFT data module reads, resume, settings check), for the gsm8k and the
r1 (think block) formats."""

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


def test_judge_prompt_keeps_r1_traces_verbatim():
    texts = ["<think>7 - 2 = 5</think>\nSo 5.", "<think>7 - 2 = 5</think>\nSo 5.", "<think>x</think>\n4"]
    res = mt.judge_prompt(texts, [False] * 3, ["correct", "correct", "incorrect"], "5", None, verbatim=True)
    assert res.kept == [(0, "<think>7 - 2 = 5</think>\nSo 5.")]  # no "#### 5" appended to a trace
    assert res.dropped == Counter({"duplicate": 1, "incorrect": 1})
    assert mt.judge_prompt(texts[:1], [False], ["correct"], "5", None).kept == [(0, texts[0] + "\n#### 5")]


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
    # a file started before --format existed (no "format" in its meta) resumes as gsm8k
    meta = out.with_name(out.name + ".meta.json")
    settings = json.loads(meta.read_text())
    assert settings.pop("format") == "gsm8k"
    meta.write_text(json.dumps(settings))
    assert mt.run(args())["resumed_prompts"] == 12
    # other settings do not mix into the same file
    with pytest.raises(SystemExit, match="other settings"):
        mt.run(args(max_new_tokens=20))


def test_help_documents_every_option(capsys):
    with pytest.raises(SystemExit):
        mt.parse_args(["--help"])
    text = capsys.readouterr().out
    for opt in ("--teacher", "--gguf-file", "--data", "--split", "-k", "--temperature", "--max-new-tokens",
                "--batch-size", "--out", "--max-keep", "--overwrite", "--format", "r1"):
        assert opt in text


# ------------------------------------------------------------------------------------------------ --format r1
R1_TARGETS = ("<think>\nadd them\n</think>\n\\boxed{7}", "<think>\nadd them\n</think>\n\\boxed{8}",
              "add them\n\\boxed{7}", "<think>\nadd them\n\\boxed{7}")  # kept, incorrect, no_think, unclosed_think


@pytest.fixture(scope="module")
def r1_teacher(tmp_path_factory) -> Path:
    """The tiny preset trained (100 steps) to answer every built-in problem with one of
    ``R1_TARGETS`` (a quarter each): a real model whose samples at temperature 1 are a mix of well-formed, wrong,
    untagged and unclosed traces."""
    import torch

    from distill_teacher import one_thread
    from srlm_pl.data.collate import PadCollator
    from srlm_pl.data.sources import BuiltinProblems, DataSource, load_rows
    from srlm_pl.data.templates import PromptTemplate
    from srlm_pl.models.loading import ModelSpec, export_hf, load_model, load_tokenizer

    out = tmp_path_factory.mktemp("r1_teacher")
    with one_thread():
        spec = ModelSpec()
        tok = load_tokenizer(spec)
        model = load_model(spec, tok)
        rows, _ = load_rows(DataSource(builtin=BuiltinProblems(level=1, num_problems=256, seed=1)))
        examples = []
        for i, row in enumerate(rows):
            prompt = tok(PromptTemplate(style="chat").prompt(row["question"], tok), add_special_tokens=False)
            target = tok(R1_TARGETS[i % 4], add_special_tokens=False)["input_ids"] + [tok.eos_token_id]
            ids = prompt["input_ids"] + target
            examples.append({"input_ids": ids, "prompt_len": len(prompt["input_ids"]), "length": len(ids)})
        collate, gen = PadCollator(tok.pad_token_id, 128), torch.Generator().manual_seed(0)
        optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
        model.train()
        for _ in range(100):
            batch = collate([examples[i] for i in torch.randint(len(examples), (8,), generator=gen).tolist()])
            model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                  labels=batch["labels"]).loss.backward()
            optimizer.step()
            optimizer.zero_grad()
        model.eval()
        export_hf(model, tok, out)
    return out


def _r1_run(teacher: Path, data: Path, out: Path, fmt: str = "r1") -> dict:
    return mt.run(mt.parse_args(["--teacher", str(teacher), "--data", str(data), "--format", fmt, "-k", "4",
                                 "--instruction", "",
                                 "--temperature", "1.0", "--max-new-tokens", "48", "--batch-size", "6",
                                 "--out", str(out), "--no-progress"]))


def _r1_data(tmp_path: Path) -> Path:
    from srlm_pl.data.sources import BuiltinProblems, DataSource, load_rows

    rows, _ = load_rows(DataSource(builtin=BuiltinProblems(level=1, num_problems=12, seed=5)))
    data = tmp_path / "problems.jsonl"
    data.write_text("".join(json.dumps({"question": r["question"], "answer": "work\n#### 7"}) + "\n" for r in rows))
    return data


def _check_files_agree(out: Path, summary: dict) -> list[dict]:
    """Rows, progress file and summary tell the same story; returns the rows."""
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    progress = [json.loads(line) for line in out.with_name(out.name + ".progress.jsonl").read_text().splitlines()]
    assert len(progress) == summary["prompts"] == 12
    assert all(p["kept"] + sum(p["dropped"].values()) == 4 for p in progress)  # every sample counted once
    assert Counter(r["id"] for r in rows) == Counter({p["id"]: p["kept"] for p in progress if p["kept"]})
    totals = Counter()
    for p in progress:
        totals.update(p["dropped"])
    assert summary["dropped"] == dict(totals) and summary["kept"] == len(rows) == sum(p["kept"] for p in progress)
    assert summary["kept"] + sum(summary["dropped"].values()) == summary["samples"] == 48
    return rows


def test_r1_end_to_end_keeps_well_formed_correct_traces(r1_teacher, tmp_path):
    from srlm_pl.data.sources import DataSource, load_rows
    from srlm_pl.kd.traces import split_trace

    out = tmp_path / "traces.jsonl"
    summary = _r1_run(r1_teacher, _r1_data(tmp_path), out)
    rows = _check_files_agree(out, summary)
    assert summary["format"] == "r1"
    # the teacher's four answers all occur; each is counted under its own reason
    assert summary["kept"] >= 1
    for reason in ("incorrect", "no_think", "unclosed_think"):
        assert summary["dropped"].get(reason, 0) >= 1, summary
    assert set(summary["dropped"]) <= {"incorrect", "no_think", "unclosed_think", "duplicate", "truncated",
                                       "two_think_blocks", "unopened_think", "text_before_think", "empty_think",
                                       "no_final_answer"}
    for row in rows:  # CAMEL layout; the trace verbatim (no "#### 7" appended), the gold final answer
        assert set(row) == {"id", "problem", "reasoning_solution", "groud_truth_solution", "sample_idx"}
        parts = split_trace(row["reasoning_solution"])
        assert parts.reason is None and parts.final == "\n\\boxed{7}" and row["groud_truth_solution"] == "7"
    assert R1_TARGETS[0] in {r["reasoning_solution"] for r in rows}
    assert len({(r["id"], r["reasoning_solution"]) for r in rows}) == len(rows)  # a repeat is a duplicate
    assert json.loads(out.with_name(out.name + ".meta.json").read_text())["format"] == "r1"
    # the data side reads them as R1 traces (each trace validated there), verbatim
    got, report = load_rows(DataSource(path=str(out), format="r1"), need=("question", "solution"))
    assert report.kept == len(rows) and all(r["trace"] for r in got)
    assert [(r["question"], r["solution"], r["answer"]) for r in got] == [
        (r["problem"], r["reasoning_solution"], "7") for r in rows]
    # resume: nothing redone; another --format does not mix into the file
    assert _r1_run(r1_teacher, out.parent / "problems.jsonl", out)["resumed_prompts"] == 12
    with pytest.raises(SystemExit, match="other settings"):
        _r1_run(r1_teacher, out.parent / "problems.jsonl", out, fmt="gsm8k")


def test_r1_block_opened_by_the_chat_template(r1_teacher, tmp_path):
    """A template that ends the prompt with ``<think>\\n`` (DeepSeek-R1's): the teacher's completion starts
    inside the block, and the kept trace carries the template's tag."""
    import shutil

    teacher = tmp_path / "opened"
    shutil.copytree(r1_teacher, teacher)
    jinja = teacher / "chat_template.jinja"
    jinja.write_text(jinja.read_text().replace("'<|im_start|>assistant\\n'", "'<|im_start|>assistant\\n<think>\\n'"))
    out = tmp_path / "traces.jsonl"
    summary = _r1_run(teacher, _r1_data(tmp_path), out)
    rows = _check_files_agree(out, summary)
    assert summary["kept"] >= 1 and not {"no_think", "unopened_think"} & set(summary["dropped"]), summary
    # the completion itself starts inside the block (it was never trained to follow "<think>\n": it may misspell)
    assert all(r["reasoning_solution"].startswith("<think>\na") and r["reasoning_solution"].endswith(
        "</think>\n\\boxed{7}") for r in rows)


def test_instruction_default_follows_the_format():
    from srlm_pl.data.templates import GSM8K_INSTRUCTION
    from srlm_pl.kd.traces import R1_INSTRUCTION

    def instruction(*extra: str) -> str:
        return mt.parse_args(["--teacher", "t", "--out", "o", *extra]).instruction

    assert instruction() == GSM8K_INSTRUCTION and instruction("--format", "r1") == R1_INSTRUCTION
    assert "<think>" in R1_INSTRUCTION and "\\boxed{}" in R1_INSTRUCTION
    assert instruction("--format", "r1", "--instruction", "") == ""  # none: a reasoning model's own habits
    assert instruction("--format", "r1", "--instruction", "Think.") == "Think."
