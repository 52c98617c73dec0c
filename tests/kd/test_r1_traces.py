"""Tests for srlm_pl.kd.traces: which samples are well-formed R1 traces, that only the answer after the think block
is verified, the block opened by the chat template, and decoding that keeps special think tags."""

from __future__ import annotations

import copy

import pytest

from srlm_pl.kd.traces import (
    DROP_REASONS,
    R1_DROP_REASONS,
    decode_keeping_think,
    r1_statuses,
    skipped_special_ids,
    split_trace,
    with_prompt_opening,
)
from srlm_pl.verifiers import TRACE_PROBLEMS, ThinkFormatReward, trace_problem, verify_batch


def check(golds: list[str], texts: list[str]) -> list[str]:
    return [v.status for v in verify_batch(golds, texts, timeout=2.0)]


# (sample, what r1_statuses says for gold "5")
SAMPLES = [
    ("<think>\n3 + 4 = 7, minus 2 is 5.\n</think>\nSo the answer is \\boxed{5}.", "correct"),
    ("<think>3 + 4 = 7</think><think>7 - 2 = 5</think> \\boxed{5}", "two_think_blocks"),
    ("<think>3 + 4 = 7</think> maybe </think> \\boxed{5}", "two_think_blocks"),
    ("<think>\n3 + 4 = 7, minus 2 is 5. \\boxed{5}", "unclosed_think"),
    ("3 + 4 = 7, minus 2 is 5.\n\\boxed{5}", "no_think"),
    ("<think>first guess \\boxed{6}, no: 7 - 2 = 5</think>\n\\boxed{5}", "correct"),  # wrong inside, right after
    ("<think>7 - 2 = 5, so \\boxed{5}</think>\nThe answer is \\boxed{6}.", "incorrect"),  # right inside only
    ("<think>7 - 2 = 5 \\boxed{5}</think>\n  \n", "no_final_answer"),
    ("<think>7 - 2 = 5 \\boxed{5}</think> and that is all.", "no_final_answer"),
    ("3 + 4 = 7, minus 2 is 5.\n</think>\n\\boxed{5}", "unopened_think"),
    ("</think> 3 + 4 = 7 <think> \\boxed{5}", "unopened_think"),
    ("Sure! <think>7 - 2 = 5</think> \\boxed{5}", "text_before_think"),
    ("<think> \n </think> \\boxed{5}", "empty_think"),
    ("  \n<think>7 - 2 = 5</think>\nThe answer is 5.", "correct"),
    ("<think>7 - 2 = 5</think>\n#### 5", "correct"),
    ("<think>7 - 2 = 5</think>\n5", "no_final_answer"),  # a bare number states no final answer
]


@pytest.mark.parametrize(("text", "expected"), SAMPLES)
def test_r1_statuses_on_hand_written_samples(text: str, expected: str) -> None:
    assert r1_statuses(["5"], [text], check) == [expected]


def test_r1_statuses_batch_checks_only_the_final_parts() -> None:
    seen: list[tuple[list[str], list[str]]] = []

    def spy(golds: list[str], texts: list[str]) -> list[str]:
        seen.append((golds, texts))
        return check(golds, texts)

    texts = [text for text, _ in SAMPLES]
    assert r1_statuses(["5"] * len(texts), texts, spy) == [expected for _, expected in SAMPLES]
    # one checker call, on the text after </think> of the well-formed samples only
    assert len(seen) == 1
    assert seen[0][1] == ["\nSo the answer is \\boxed{5}.", "\n\\boxed{5}", "\nThe answer is \\boxed{6}.",
                          "\nThe answer is 5.", "\n#### 5"]


def test_split_trace_parts_and_every_reason_is_listed() -> None:
    parts = split_trace("<think>\nwork\n</think>\n\\boxed{5}")
    assert (parts.reason, parts.think, parts.final) == (None, "\nwork\n", "\n\\boxed{5}")
    reasons = {split_trace(text).reason for text, _ in SAMPLES} - {None}
    assert reasons == set(R1_DROP_REASONS)


def test_block_opened_by_the_chat_template() -> None:
    prompt = "<|im_start|>assistant\n<think>\n"
    trace = with_prompt_opening(prompt, "7 - 2 = 5\n</think>\n\\boxed{5}")
    assert trace == "<think>\n7 - 2 = 5\n</think>\n\\boxed{5}"
    assert r1_statuses(["5"], [trace], check) == ["correct"]
    # a prompt that does not open the block: the completion is left as the teacher wrote it (no invented tag)
    assert with_prompt_opening("<|im_start|>assistant\n", "7 - 2 = 5\n\\boxed{5}") == "7 - 2 = 5\n\\boxed{5}"
    # a prompt whose block is already closed (a non-thinking chat mode) opens nothing
    assert with_prompt_opening("<think>\n\n</think>\n\n", "\\boxed{5}") == "\\boxed{5}"


def test_decode_keeps_think_tags_registered_as_special_tokens(tiny_tokenizer) -> None:
    from tokenizers import AddedToken

    tok = copy.deepcopy(tiny_tokenizer)
    tok.add_tokens([AddedToken("<think>", special=True), AddedToken("</think>", special=True)])
    ids = tok("<think>7 - 2 = 5</think> \\boxed{5}<|im_end|>", add_special_tokens=False)["input_ids"]
    assert tok.convert_tokens_to_ids("<think>") in ids  # one token now
    assert "<think>" not in tok.decode(ids, skip_special_tokens=True)  # what a plain decode would lose
    assert decode_keeping_think(tok, ids, skipped_special_ids(tok)) == "<think>7 - 2 = 5</think> \\boxed{5}"
    # an ordinary tokenizer: the same text as skip_special_tokens=True
    plain = tiny_tokenizer("<think>x</think> 5<|im_end|><|endoftext|>", add_special_tokens=False)["input_ids"]
    assert decode_keeping_think(tiny_tokenizer, plain, skipped_special_ids(tiny_tokenizer)) == \
        tiny_tokenizer.decode(plain, skip_special_tokens=True).strip() == "<think>x</think> 5"


def test_every_trace_judged_well_formed_loads_as_format_r1(tmp_path) -> None:
    """The fixed interface: what make_traces keeps, ``DataSource(format="r1")`` reads (we may be stricter)."""
    import json

    from srlm_pl.data.sources import DataSource, load_rows

    statuses = r1_statuses(["5"] * len(SAMPLES), [text for text, _ in SAMPLES], check)
    path = tmp_path / "traces.jsonl"
    path.write_text("".join(json.dumps({"problem": "What is 7 - 2?", "reasoning_solution": text,
                                        "groud_truth_solution": "5"}) + "\n" for text, _ in SAMPLES))
    rows, _ = load_rows(DataSource(path=str(path), format="r1", on_bad_row="skip"), need=("question", "solution"))
    loaded = {r["solution"] for r in rows}
    well_formed = [text for (text, _), status in zip(SAMPLES, statuses, strict=True)
                   if status not in R1_DROP_REASONS]
    assert set(well_formed) == loaded, set(well_formed) ^ loaded  # the same rules there: no more, no fewer
    assert len(well_formed) == 5


def test_drop_reasons_name_every_trace_problem_in_order() -> None:
    assert list(DROP_REASONS) == list(TRACE_PROBLEMS) and len(set(R1_DROP_REASONS)) == len(TRACE_PROBLEMS)
    assert R1_DROP_REASONS == ("no_think", "two_think_blocks", "unclosed_think", "unopened_think",
                               "text_before_think", "empty_think", "no_final_answer")


def test_make_traces_data_loader_and_reward_agree_on_every_sample(tmp_path) -> None:
    """One rule set: for each sample, make_traces' drop reason, the data loader's problem and the format reward
    all follow ``trace_problem``."""
    import json

    from srlm_pl.data.sources import DataSource, load_rows

    texts = [text for text, _ in SAMPLES]
    path = tmp_path / "traces.jsonl"
    path.write_text("".join(json.dumps({"problem": "q", "reasoning_solution": t, "groud_truth_solution": "5"}) + "\n"
                            for t in texts))
    _, report = load_rows(DataSource(path=str(path), format="r1", on_bad_row="skip"), need=("question", "solution"))
    problems = [trace_problem(t) for t in texts]
    assert [split_trace(t).reason for t in texts] == [DROP_REASONS.get(p) for p in problems]
    assert ThinkFormatReward()(texts, ["5"] * len(texts)) == [1.0 if p is None else 0.0 for p in problems]
    bad = {p: problems.count(p) for p in problems if p is not None}
    assert report.reason_counts == bad and report.kept == problems.count(None) == 5
