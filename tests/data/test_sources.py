import json
from pathlib import Path

import pytest

from srlm_pl.data.sources import BuiltinProblems, DataError, DataSource, load_rows, preset_source


def _jsonl(path: Path, rows: list) -> Path:
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows))
    return path


GSM = {"question": "Tom has 3 apples and buys 2. How many?", "answer": "3 + 2 = <<3+2=5>>5\n#### 5"}


def test_gsm8k_jsonl_maps_fields_and_extracts_gold(tmp_path: Path) -> None:
    f = _jsonl(tmp_path / "train.jsonl", [GSM, {**GSM, "answer": "big\n#### 1,234"}])
    rows, report = load_rows(DataSource(path=str(f)), need=("question", "solution", "answer"))
    assert [r["answer"] for r in rows] == ["5", "1234"]
    assert rows[0]["question"] == GSM["question"] and rows[0]["solution"] == GSM["answer"]
    assert (report.read, report.kept, report.skipped) == (2, 2, 0)


def test_folder_with_split_file_math_fields_and_ids(tmp_path: Path) -> None:
    _jsonl(tmp_path / "test.jsonl", [{"problem": "1/2+1/2?", "solution": "It is $\\boxed{1}$.", "answer": "1",
                                       "unique_id": "a/1"}])
    src = DataSource(path=str(tmp_path), split="test", question_field="problem", solution_field="solution",
                     answer_field="answer", id_field="unique_id")
    rows, _ = load_rows(src, need=("question", "answer"))
    assert rows == [{"id": "a/1", "question": "1/2+1/2?", "solution": "It is $\\boxed{1}$.", "answer": "1"}]


def test_question_from_several_fields_and_float_answers(tmp_path: Path) -> None:
    f = _jsonl(tmp_path / "s.jsonl", [{"Body": "There are 3 cats.", "Question": "How many legs?", "Answer": 12.0},
                                      {"Body": "x", "Question": "y", "Answer": 2.5}])
    src = DataSource(path=str(f), question_field=["Body", "Question"], solution_field=None, answer_field="Answer")
    rows, _ = load_rows(src, need=("question", "answer"))
    assert rows[0]["question"] == "There are 3 cats. How many legs?"
    assert [r["answer"] for r in rows] == ["12", "2.5"]


@pytest.mark.parametrize("bad, message", [
    ({"answer": "#### 1"}, "field 'question' is missing"),
    ({"question": "   ", "answer": "#### 1"}, "field 'question' is empty"),
    ({"question": ["a"], "answer": "#### 1"}, "field 'question' has type list"),
    ({"question": "q", "answer": "no final answer here"}, "has no final answer"),
    ('{"question": "q", "answer": ', "malformed JSON"),
    ("[1, 2]", "expected a JSON object"),
])
def test_bad_row_names_file_line_and_field(tmp_path: Path, bad, message: str) -> None:
    f = _jsonl(tmp_path / "d.jsonl", [GSM, GSM, bad, GSM])
    with pytest.raises(DataError) as err:
        load_rows(DataSource(path=str(f)), need=("question", "solution", "answer"))
    assert f"{f}:3" in str(err.value) and message in str(err.value)


def test_skip_mode_counts_bad_rows_and_keeps_the_rest(tmp_path: Path) -> None:
    f = _jsonl(tmp_path / "d.jsonl", [GSM, "{oops", {"question": "q"}, GSM])
    rows, report = load_rows(DataSource(path=str(f), on_bad_row="skip"), need=("question", "solution", "answer"))
    assert len(rows) == 2 and report.skipped == 2 and report.read == 4
    assert any(":2:" in r for r in report.reasons) and any(":3:" in r for r in report.reasons)


def test_empty_after_filtering_is_an_error(tmp_path: Path) -> None:
    f = _jsonl(tmp_path / "d.jsonl", ["{oops"])
    with pytest.raises(DataError, match="no usable rows"):
        load_rows(DataSource(path=str(f), on_bad_row="skip"))


def test_sft_needs_solutions(tmp_path: Path) -> None:
    f = _jsonl(tmp_path / "d.jsonl", [{"q": "x", "a": "3"}])
    src = DataSource(path=str(f), question_field="q", solution_field=None, answer_field="a")
    with pytest.raises(DataError, match="needs worked solutions"):
        load_rows(src, need=("question", "solution"))


def test_json_and_parquet(tmp_path: Path) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    (tmp_path / "a.json").write_text(json.dumps([GSM, GSM]))
    pq.write_table(pa.Table.from_pylist([GSM] * 3), tmp_path / "b.parquet")
    assert len(load_rows(DataSource(path=str(tmp_path / "a.json")))[0]) == 2
    assert len(load_rows(DataSource(path=str(tmp_path / "b.parquet")))[0]) == 3


def test_offset_and_limit(tmp_path: Path) -> None:
    rows = [{"question": f"q{i}", "answer": f"#### {i}"} for i in range(10)]
    f = _jsonl(tmp_path / "d.jsonl", rows)
    got, _ = load_rows(DataSource(path=str(f), offset=3, limit=4))
    assert [r["answer"] for r in got] == ["3", "4", "5", "6"]


def test_builtin_source_and_missing_paths(tmp_path: Path) -> None:
    rows, _ = load_rows(DataSource(builtin=BuiltinProblems(level=2, num_problems=5, seed=9)),
                        need=("question", "solution", "answer"))
    assert len(rows) == 5 and all(r["solution"].endswith(f"#### {r['answer']}") for r in rows)
    with pytest.raises(DataError, match="does not exist"):
        load_rows(DataSource(path=str(tmp_path / "nope.jsonl")))
    with pytest.raises(DataError, match="no train.jsonl"):
        load_rows(DataSource(path=str(tmp_path)))


def test_hub_id_offline_error_says_how_to_use_local_files(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(DataError) as err:
        load_rows(DataSource(path="definitely-not/a-dataset-xyz", split="train"))
    assert "definitely-not/a-dataset-xyz" in str(err.value) and "local" in str(err.value)


def test_shared_presets_load_real_data(shared_data: Path) -> None:
    """Each preset maps the real file's fields: row counts, and the first row's id, question and gold answer as
    read by hand from the JSONL (GSM8K's gold comes from ``#### N``; SVAMP joins Body and Question; float answers
    lose their ``.0``)."""
    first = {
        "gsm8k": ("0", "18", "Janet\u2019s ducks lay 16 eggs per day.", "at the farmers' market?"),
        "math500": ("test/precalculus/807.json", "\\left( 3, \\frac{\\pi}{2} \\right)", "Convert the point $(0,3)$",
                    "0 \\le \\theta < 2 \\pi.$"),
        "svamp": ("chal-777", "145", "There are 87 oranges and 290 bananas",
                  "organized into 93 groups. How big is each group of bananas?"),
        "amc23": ("0", "27", "Cities $A$ and $B$ are $45$ miles apart.", "when they meet?"),
        "aime24": ("60", "204", "Every morning Aya goes for a $9$-kilometer-long walk", "spent in the coffee shop."),
    }
    for name, split, n in [("gsm8k", "test", 1319), ("math500", "test", 500), ("svamp", "test", 1000),
                           ("amc23", "test", 40), ("aime24", "test", 30)]:
        rows, report = load_rows(preset_source(name, shared_data, split), need=("question", "answer"))
        assert report.kept == n and report.skipped == 0, name
        assert all(r["answer"] for r in rows)
        assert len({r["id"] for r in rows}) == n, name  # ids are unique
        pid, answer, start, end = first[name]
        assert (rows[0]["id"], rows[0]["answer"]) == (pid, answer), name
        assert rows[0]["question"].startswith(start) and rows[0]["question"].endswith(end), name
    gsm, _ = load_rows(preset_source("gsm8k", shared_data, "test"), need=("question", "solution", "answer"))
    assert {r["answer"] for r in gsm if r["id"] in ("146", "201")} == {"2125", "114200"}  # "#### 2,125" etc.
