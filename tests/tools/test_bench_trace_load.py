"""The trace-load benchmark (``bench.py verify --trace-load``): its synthetic split has exactly one wrong trace in
``WRONG_EVERY``, the check counts them, and the no-op baseline is undone afterwards."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "tools"))
from benchlib import verify_trace_load  # noqa: E402

import srlm_pl.data.sources as sources  # noqa: E402
from srlm_pl.data.traces import wrong_traces  # noqa: E402


def test_trace_load_counts_the_planted_wrong_traces(tmp_path: Path) -> None:
    rows, _ = sources.load_rows(sources.DataSource(
        path=str(verify_trace_load.write_split(tmp_path / "t.jsonl", 41)), format="r1"), need=("answer",))
    assert len(rows) == 41 and rows[1]["answer"] == "101" and rows[1]["solution"].endswith("\\boxed{101}.")
    (row,) = verify_trace_load.trace_load_rows(41, repeats=1)
    assert (row["rows"], row["wrong_counted"]) == (41, 3)  # rows 0, 20 and 40
    assert row["load_s"] > 0 and row["load_without_check_s"] > 0
    assert sources.wrong_traces is wrong_traces
