"""Trace rows whose final answer does not verify against the gold: counted, logged with file:line, kept by default
and dropped with ``drop_wrong_traces``."""

import json
import logging
from pathlib import Path

import pytest

from srlm_pl.data.sources import DataSource, load_rows

SFT_GOLD = ("question", "solution", "answer")
ROWS = [  # (id, trace, gold field); ids w* do not verify
    ("ok0", "<think>3+2 = 5</think>\nTom has \\boxed{5} apples.", "3 + 2 = <<3+2=5>>5\n#### 5"),
    ("w1", "<think>3+4 = 8?</think>\nSo \\boxed{5}.", "7"),  # the reviewer's case: \boxed{5}, gold 7
    ("ok2", "<think>maybe \\boxed{7}, no: 2*6 = 12</think>The answer is 12.00.", "12"),  # a wrong box in the block
    ("ok3", "<think>1000+234</think>\n#### 1,234", "So it is \\boxed{1234}."),
    ("w4", "<think>1000+235</think>\n#### 1,235", "#### 1234"),
    ("ok5", "<think>half of 1</think> The answer is \\boxed{0.5}", "\\frac{1}{2}"),
]


def _write(path: Path, rows=ROWS) -> Path:
    lines = [json.dumps({"id": i, "problem": f"question {i}", "reasoning_solution": t, "groud_truth_solution": g})
             for i, t, g in rows]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def test_wrong_traces_are_counted_logged_and_kept_by_default(tmp_path: Path, caplog) -> None:
    f = _write(tmp_path / "t.jsonl")
    with caplog.at_level(logging.WARNING, logger="srlm_pl.data.sources"):
        rows, report = load_rows(DataSource(path=str(f), format="r1", id_field="id"), need=SFT_GOLD)
    assert [r["id"] for r in rows] == [i for i, _, _ in ROWS]  # all kept
    assert (report.read, report.kept, report.skipped, report.wrong_traces) == (6, 6, 0, 2)
    assert report.wrong_trace_counts == {"incorrect": 2} and report.reason_counts == {}
    assert report.wrong_trace_examples == [f"{f}:2: trace answer '5', gold '7' (incorrect)",
                                           f"{f}:5: trace answer '1,235', gold '1234' (incorrect)"]
    assert "2 of 6 traces have a final answer that does not verify against the gold (2 incorrect); kept" in caplog.text
    assert f"{f}:2: trace answer '5'" in caplog.text


def test_drop_wrong_traces_drops_and_counts_them_as_skipped(tmp_path: Path) -> None:
    f = _write(tmp_path / "t.jsonl", [*ROWS, ("bad", "<think>unclosed \\boxed{3}", "3")])
    src = DataSource(path=str(f), format="r1", id_field="id", drop_wrong_traces=True, on_bad_row="skip")
    rows, report = load_rows(src, need=SFT_GOLD)
    assert [r["id"] for r in rows] == ["ok0", "ok2", "ok3", "ok5"]
    assert (report.read, report.kept, report.skipped, report.wrong_traces) == (7, 4, 3, 2)
    assert report.reason_counts == {"no closing </think>": 1, "trace answer incorrect": 2}
    assert f"{f}:5: trace answer '1,235', gold '1234' (incorrect)" in report.reasons


def test_traces_that_verify_are_never_counted(tmp_path: Path, caplog) -> None:
    f = _write(tmp_path / "t.jsonl", [r for r in ROWS if r[0].startswith("ok")])
    with caplog.at_level(logging.WARNING, logger="srlm_pl.data.sources"):
        rows, report = load_rows(DataSource(path=str(f), format="r1", drop_wrong_traces=True), need=SFT_GOLD)
    assert len(rows) == 4 and report.wrong_traces == 0 and report.wrong_trace_examples == [] and not caplog.text


def test_messages_rows_verify_against_answer_field_only(tmp_path: Path) -> None:
    """With ``answer_field`` the gold is checked; without one the gold is the trace's own answer (nothing to check)."""
    rows = [{"messages": [{"role": "user", "content": "2+2?"}, {"role": "assistant", "content": t}], "gold": g}
            for t, g in [("<think>2+2=4</think> \\boxed{4}", "4"), ("<think>2+2=5</think> \\boxed{5}", "#### 4")]]
    f = tmp_path / "m.jsonl"
    f.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    _, report = load_rows(DataSource(path=str(f), format="messages", answer_field="gold"), need=SFT_GOLD)
    assert (report.wrong_traces, report.wrong_trace_examples) == (1, [f"{f}:2: trace answer '5', gold '4' (incorrect)"])
    kept, report = load_rows(DataSource(path=str(f), format="messages", drop_wrong_traces=True), need=SFT_GOLD)
    assert len(kept) == 2 and report.wrong_traces == 0


def test_drop_wrong_traces_is_documented() -> None:
    assert "drop_wrong_traces:" in (DataSource.__doc__ or "")
    with pytest.raises(TypeError):
        DataSource(drop_wrong_trace=True)  # type: ignore[call-arg]


def test_the_datamodule_logs_the_wrong_trace_count(tmp_path: Path) -> None:
    from srlm_pl.data.datamodules import SFTDataModule

    dm = SFTDataModule(train=DataSource(path=str(_write(tmp_path / "t.jsonl")), format="r1", id_field="id"),
                       batch_size=2, max_length=256)
    dm.setup("fit")
    assert dm.stats()["data/train_wrong_traces"] == 2 and dm.stats()["data/train_rows"] == 6


def test_a_timeout_is_not_a_wrong_trace(monkeypatch: pytest.MonkeyPatch) -> None:
    """A deadline depends on the load: counting (or dropping) it would give distributed ranks different rows."""
    from srlm_pl.data import traces
    from srlm_pl.verifiers import Verdict

    calls = {}

    def fake_verify_batch(golds, completions, **kw):
        calls.update(kw)
        return [Verdict("correct", "1", "x"), Verdict("timeout", None, "pool"), Verdict("incorrect", "2", "x")]

    monkeypatch.setattr(traces, "verify_batch", fake_verify_batch)
    wrong = traces.wrong_traces(["1", "x", "3"], ["a", "b", "c"])
    assert [(i, v.status) for i, v in wrong] == [(2, "incorrect")]
    assert calls["batch_timeout"] == pytest.approx(traces.TRACE_VERIFY_BATCH_TIMEOUT + 3 * traces.TRACE_VERIFY_PER_ROW)
