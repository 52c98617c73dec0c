"""Reasoning-trace data: ``format: r1`` (CAMEL's gsm8k_distilled fields) and ``format: messages`` rows, trace
validation with file:line errors or counted skips, and verbatim completions."""

import json
import logging
import shutil
from pathlib import Path

import pytest

from srlm_pl.data.collate import tokenize_sft
from srlm_pl.data.datamodules import PromptDataModule, SFTDataModule
from srlm_pl.data.sources import DataError, DataSource, load_rows
from srlm_pl.data.templates import PromptTemplate
from srlm_pl.models.loading import TINY_TOKENIZER_DIR, ModelSpec

SFT = ("question", "solution")
SFT_GOLD = ("question", "solution", "answer")
# CAMEL rows: the gold is a GSM8K solution (#### N), a bare number, or holds \boxed{}; traces end in \boxed{},
# "The answer is N" or "#### N" after the think block (the calculator annotation inside it must survive).
CAMEL = [
    {"id": "c0", "problem": "Tom has 3 apples and buys 2. How many?",
     "reasoning_solution": "<think>\nHe has 3, buys 2: 3+2 = <<3+2=5>>5.\n</think>\n\nTom has \\boxed{5} apples.\n",
     "groud_truth_solution": "3 + 2 = <<3+2=5>>5\n#### 5"},
    {"id": "c1", "problem": "What is 2 times 6?",
     "reasoning_solution": "<think>2*6=12</think>The answer is 12.", "groud_truth_solution": "12"},
    {"id": "c2", "problem": "Add 1000 and 234.",
     "reasoning_solution": "<think>1000+234</think>\n#### 1,234", "groud_truth_solution": "So it is \\boxed{1234}."},
]
CHAT = [
    {"messages": [{"role": "system", "content": "Be helpful."}, {"role": "user", "content": " What is 2+2? "},
                  {"role": "assistant", "content": "<think>2+2=4</think>\n\\boxed{4}"}], "gold": "#### 4"},
    {"messages": [{"role": "user", "content": "What is 3+3?"}, {"role": "assistant", "content": "first try"},
                  {"role": "user", "content": "Again, with reasoning."},
                  {"role": "assistant", "content": "<think>3+3=6, not \\boxed{7}</think> So \\boxed{6}."}],
     "gold": "6"},
]


def _jsonl(path: Path, rows: list) -> Path:
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows), encoding="utf-8")
    return path


def test_r1_rows_take_camel_fields_gold_and_verbatim_trace(tmp_path: Path) -> None:
    f = _jsonl(tmp_path / "camel.jsonl", CAMEL)
    rows, report = load_rows(DataSource(path=str(f), format="r1", id_field="id"), need=SFT_GOLD)
    assert [r["answer"] for r in rows] == ["5", "12", "1234"]  # from #### N, a bare number and \boxed{}
    assert [r["question"] for r in rows] == [c["problem"] for c in CAMEL]
    assert [r["solution"] for r in rows] == [c["reasoning_solution"] for c in CAMEL]  # verbatim, newline kept
    assert all(r["trace"] is True for r in rows) and [r["id"] for r in rows] == ["c0", "c1", "c2"]
    assert (report.read, report.kept, report.skipped) == (3, 3, 0)


def test_r1_explicit_fields_win_and_null_answer_field_reads_the_trace(tmp_path: Path) -> None:
    renamed = [{"q": c["problem"], "trace": c["reasoning_solution"], "g": "#### 99"} for c in CAMEL]
    f = _jsonl(tmp_path / "r.jsonl", renamed)
    src = DataSource(path=str(f), format="r1", question_field="q", solution_field="trace", answer_field="g")
    rows, _ = load_rows(src, need=SFT_GOLD)
    assert rows[0]["question"] == CAMEL[0]["problem"] and {r["answer"] for r in rows} == {"99"}
    src = DataSource(path=str(f), format="r1", question_field="q", solution_field="trace", answer_field=None)
    rows, _ = load_rows(src, need=SFT_GOLD)
    assert [r["answer"] for r in rows] == ["5", "12", "1,234"]  # the trace's own final answers
    assert DataSource().solution_field == "answer" and DataSource().answer_field is None  # fields: as before


def test_r1_defaults_through_the_cli_parser() -> None:
    """jsonargparse (LightningCLI's parser) builds the dataclass, so ``auto`` resolves there too."""
    from jsonargparse import ArgumentParser

    p = ArgumentParser()
    p.add_argument("--src", type=DataSource)
    src = p.instantiate(p.parse_args(["--src", "{path: t.jsonl, format: r1}"])).src
    assert (src.question_field, src.solution_field, src.answer_field) == \
        ("problem", "reasoning_solution", "groud_truth_solution")
    src = p.instantiate(p.parse_args(["--src", "{path: t.jsonl, format: r1, answer_field: null}"])).src
    assert src.answer_field is None and src.solution_field == "reasoning_solution"


def test_messages_rows(tmp_path: Path) -> None:
    f = _jsonl(tmp_path / "chat.jsonl", CHAT)
    rows, _ = load_rows(DataSource(path=str(f), format="messages"), need=SFT_GOLD)
    assert [r["question"] for r in rows] == ["What is 2+2?", "What is 3+3?"]  # first user turn, stripped
    assert [r["solution"] for r in rows] == [CHAT[0]["messages"][2]["content"], CHAT[1]["messages"][3]["content"]]
    assert [r["answer"] for r in rows] == ["4", "6"]  # the last \boxed{} after </think>, not the one inside
    rows, _ = load_rows(DataSource(path=str(f), format="messages", answer_field="gold"), need=SFT_GOLD)
    assert [r["answer"] for r in rows] == ["4", "6"] and all(r["trace"] for r in rows)
    with pytest.raises(DataError, match="question_field='q' does not apply to format: messages"):
        DataSource(path=str(f), format="messages", question_field="q")


def test_messages_and_r1_from_parquet(tmp_path: Path) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.Table.from_pylist(CHAT), tmp_path / "c.parquet")
    pq.write_table(pa.Table.from_pylist(CAMEL), tmp_path / "r.parquet")
    rows, _ = load_rows(DataSource(path=str(tmp_path / "c.parquet"), format="messages"), need=SFT_GOLD)
    assert [r["answer"] for r in rows] == ["4", "6"]
    rows, _ = load_rows(DataSource(path=str(tmp_path / "r.parquet"), format="r1"), need=SFT_GOLD)
    assert [r["solution"] for r in rows] == [c["reasoning_solution"] for c in CAMEL]


BAD_TRACES = [
    ("<think>3+2=5, so \\boxed{5}", "no closing </think>"),
    ("<think>a</think><think>b</think> \\boxed{5}", "two <think> blocks"),
    ("<think>3+2=5</think> So Tom has five apples.", "no final answer after </think>"),
    ("<think>\\boxed{5}</think> Done.", "no final answer after </think>"),  # an answer inside the block is not one
    ("3+2=5, \\boxed{5}", "no <think> block"),
]


@pytest.mark.parametrize("trace, problem", BAD_TRACES)
def test_bad_r1_trace_names_file_line_field_and_problem(tmp_path: Path, trace: str, problem: str) -> None:
    f = _jsonl(tmp_path / "d.jsonl", [CAMEL[0], CAMEL[1], {**CAMEL[0], "reasoning_solution": trace}, CAMEL[2]])
    with pytest.raises(DataError) as err:
        load_rows(DataSource(path=str(f), format="r1"), need=SFT)
    assert str(err.value) == f"{f}:3: field 'reasoning_solution': {problem}"


# rejected since the loader shares make_traces' and ThinkFormatReward's rules (srlm_pl.verifiers.trace_problem)
STRICTER_TRACES = [
    ("Sure! <think>3+2=5</think> \\boxed{5}", "text before <think>"),
    ("<think> \n </think> \\boxed{5}", "empty <think> block"),
    ("3+2=5 </think> \\boxed{5}", "no opening <think> before </think>"),
    ("</think> 3+2=5 <think> \\boxed{5}", "no opening <think> before </think>"),
    ("<think>3+2=5</think> Answer: 5", "no final answer after </think>"),
]


@pytest.mark.parametrize("trace, problem", STRICTER_TRACES)
def test_r1_trace_rules_shared_with_make_traces_and_the_reward(tmp_path: Path, trace: str, problem: str) -> None:
    f = _jsonl(tmp_path / "d.jsonl", [CAMEL[0], {**CAMEL[1], "reasoning_solution": trace}])
    with pytest.raises(DataError) as err:
        load_rows(DataSource(path=str(f), format="r1"), need=SFT)
    assert str(err.value) == f"{f}:2: field 'reasoning_solution': {problem}"
    leading = {**CAMEL[1], "reasoning_solution": "\n  " + CAMEL[1]["reasoning_solution"]}  # leading whitespace: ok
    rows, _ = load_rows(DataSource(path=str(_jsonl(tmp_path / "ok.jsonl", [leading])), format="r1"), need=SFT)
    assert rows[0]["solution"] == leading["reasoning_solution"]


@pytest.mark.parametrize("messages, message", [
    (None, "field 'messages' is missing"),
    ("hi", "field 'messages' is a str, expected a list"),
    ([{"role": "assistant", "content": "<think>x</think> \\boxed{1}"}], "field 'messages' has no user turn"),
    ([{"role": "user", "content": "q"}, {"role": "assistant", "content": ["parts"]}],
     "field 'messages' turn 1 (assistant) has content of type list, expected text"),
    ([{"role": "user", "content": "q"}, {"role": "bot", "content": "a"}], "turn 1 has role 'bot'"),
    ([{"role": "user", "content": "q"}, {"role": "assistant", "content": "<think>x</think><think>"}],
     "field 'messages': two <think> blocks"),
    ([{"role": "user", "content": "q"}], "has no assistant turn"),
])
def test_bad_messages_row_names_file_line_and_problem(tmp_path: Path, messages, message: str) -> None:
    bad = {"messages": messages} if messages is not None else {"other": 1}
    f = _jsonl(tmp_path / "d.jsonl", [CHAT[0], bad])
    with pytest.raises(DataError) as err:
        load_rows(DataSource(path=str(f), format="messages"), need=SFT)
    assert str(err.value).startswith(f"{f}:2: ") and message in str(err.value)


def test_skip_counts_bad_traces_per_problem_and_logs_them(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    bad = [{**CAMEL[0], "reasoning_solution": t} for t, _ in BAD_TRACES]  # 2 no-final-answer, 1 of each other
    f = _jsonl(tmp_path / "d.jsonl", [CAMEL[0], *bad, CAMEL[1], {**CAMEL[1], "reasoning_solution": "<think>x"}])
    with caplog.at_level(logging.WARNING, logger="srlm_pl.data.sources"):
        rows, report = load_rows(DataSource(path=str(f), format="r1", on_bad_row="skip"), need=SFT)
    assert [r["question"] for r in rows] == [CAMEL[0]["problem"], CAMEL[1]["problem"]]
    assert (report.read, report.kept, report.skipped) == (8, 2, 6)
    assert report.reason_counts == {"no closing </think>": 2, "two <think> blocks": 1,
                                    "no final answer after </think>": 2, "no <think> block": 1}
    assert f"{f}:2: field 'reasoning_solution': no closing </think>" in report.reasons
    assert "skipped 6 bad rows of 8 (2 no closing </think>, 2 no final answer after </think>, " \
           "1 two <think> blocks, 1 no <think> block;" in caplog.text


def test_trace_completion_is_verbatim_in_every_template(tiny_tokenizer) -> None:
    trace = "<think>\n2+2 = <<2+2=4>>4\n</think>\nSo $2+2=4$.\n\\boxed{4}\n"
    for template in (PromptTemplate(answer_format="gsm8k"), PromptTemplate(answer_format="answer_is")):
        assert template.completion(trace, "4", trace=True) == trace
        assert template.completion(trace, "4") != trace  # a plain solution is rewritten (what trace=True skips)
    assert PromptTemplate(style="plain").completion(trace, "4", trace=True) == " " + trace
    ex = tokenize_sft({"question": "What is 2+2?", "solution": trace, "answer": "4", "trace": True},
                      tiny_tokenizer, PromptTemplate(answer_format="boxed"))
    assert tiny_tokenizer.decode(ex["input_ids"][ex["prompt_len"]:]) == trace + "<|im_end|>"


def test_sft_module_trains_on_the_trace_verbatim(tmp_path: Path, tiny_tokenizer,
                                                caplog: pytest.LogCaptureFixture) -> None:
    f = _jsonl(tmp_path / "camel.jsonl", [*CAMEL, {**CAMEL[0], "reasoning_solution": "<think>unclosed \\boxed{5}"}])
    dm = SFTDataModule(train=DataSource(path=str(f), format="r1", on_bad_row="skip"), batch_size=3, max_length=256)
    with caplog.at_level(logging.INFO, logger="srlm_pl.data.datamodules"):
        dm.setup("fit")
    assert "4 rows read, 1 bad rows skipped (1 no closing </think>), tokens p50 " in caplog.text
    assert dm.stats()["data/train_bad_rows_skipped"] == 1 and dm.stats()["data/train_rows"] == 3
    batch = dm.collate("train")([dm.datasets["train"][i] for i in range(3)])  # in file order
    for row, labels in zip(CAMEL, batch["labels"].tolist(), strict=True):
        target = [t for t in labels if t != -100]
        assert tiny_tokenizer.decode(target) == row["reasoning_solution"] + "<|im_end|>"


def test_chat_template_that_opens_a_think_block_is_an_error(tmp_path: Path) -> None:
    """DeepSeek-R1-Distill-style templates end the generation prompt with ``<think>\\n``: a trace's own block would
    then be nested in it."""
    tok_dir = tmp_path / "tok"
    shutil.copytree(TINY_TOKENIZER_DIR, tok_dir)
    template = (tok_dir / "chat_template.jinja").read_text()
    (tok_dir / "chat_template.jinja").write_text(template.replace("assistant\\n'", "assistant\\n<think>\\n'"))
    f = _jsonl(tmp_path / "camel.jsonl", CAMEL)
    dm = SFTDataModule(train=DataSource(path=str(f), format="r1"), tokenizer=ModelSpec(tokenizer=str(tok_dir)))
    with pytest.raises(DataError, match="already writes a think block into the generation prompt"):
        dm.setup("fit")
    plain = SFTDataModule(train=DataSource(path=str(f), format="r1"), tokenizer=ModelSpec(tokenizer=str(tok_dir)),
                          template=PromptTemplate(style="plain"))
    plain.setup("fit")
    assert len(plain.datasets["train"]) == 3


def test_prompt_only_messages_rows_for_grpo(tmp_path: Path) -> None:
    """Rows without an assistant turn serve prompt data (the gold from answer_field); every row has ``trace``."""
    prompt_only = {"messages": [{"role": "user", "content": "What is 5+5?"}], "gold": "\\boxed{10}"}
    f = _jsonl(tmp_path / "chat.jsonl", [prompt_only, CHAT[0]])
    src = DataSource(path=str(f), format="messages", answer_field="gold")
    rows, _ = load_rows(src, need=("question", "answer"))
    assert [(r["solution"], r["answer"], r["trace"]) for r in rows] == \
        [(None, "10", False), (CHAT[0]["messages"][2]["content"], "4", True)]
    dm = PromptDataModule(train=src, batch_size=2)
    dm.setup("fit")
    assert dm.datasets["train"]["trace"] == [False, True] and dm.datasets["train"]["answer"] == ["10", "4"]
    with pytest.raises(DataError, match=f"{f}:1: this data needs a reasoning trace but messages_field 'messages' "
                                        "has no assistant turn"):
        load_rows(src, need=SFT)
