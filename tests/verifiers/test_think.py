"""Think-aware extraction and verification, ``ThinkFormatReward``, ``OverlongPenalty`` and the reward context."""

from __future__ import annotations

import pytest

import srlm_pl.verifiers.extract as extract_module
from srlm_pl.verifiers import (
    AccuracyReward,
    CodeReward,
    FormatReward,
    OverlongPenalty,
    Reward,
    ThinkFormatReward,
    WeightedReward,
    extract_answer,
    find_answer,
    overlong_penalty,
    split_think,
    trace_problem,
    verify,
    verify_batch,
)
from srlm_pl.verifiers.extract import TAIL_CHARS
from srlm_pl.verifiers.rewards import CONTEXT_KEYS, context_keys
from srlm_pl.verifiers.think import ThinkSegments, ThinkSplit, think_segments, window_start
from verifier_corpus import build_corpus

FILLER = "We check 7 + 7 = 14 again. "  # numbers inside a long think block


@pytest.mark.parametrize(
    ("completion", "expected", "without_think"),  # without_think: extract_answer(..., think=False)
    [
        # (1) an explicit or bare answer after the block wins over every answer inside it
        ("<think>first guess \\boxed{42}</think>\nSo the answer is 18.", "18", "42"),
        ("<think>the answer is 42</think>\n#### 18", "18", "18"),
        ("<think>the answer is 42</think>\n18", "18", "42</think>"),
        ("<think>I think the answer is 20. Hmm wait, recount: 18.</think>\n18", "18", "20"),
        ("<think>first \\boxed{42}, no</think>\n18", "18", "42"),
        # (2) a boxed / #### answer inside the block beats a stray number after it (the first review's case) ...
        ("<think>so the total is \\boxed{12}</think>\nI used 2 steps.", "12", "12"),
        # ... but "the answer is N" / "Answer: N" inside reasoning does not (the second review's cases)
        ("<think>The answer is 42.</think>\n\nJanet makes 18 dollars a day.", "18", "42.</think>"),
        ("<think>Answer: 20? No. 3*6=18.</think>\nShe has 18 apples left.", "18", "20? No"),
        # (3) the weak fallbacks: after the block first, then inside
        ("<think>16 - 3 - 4 = 9, 9 * 2 = 18. Or 20?</think>\n18", "18", "18"),
        ("<think>16 - 3 - 4 = 9 and 9 * 2 = 18</think>\n", "18", "18"),
        ("<think>so \\boxed{7}</think>   \n", "7", "7"),
        # text before the block never beats the block (the reviewer's second case), and counts only after it
        ("We have 3 apples and 4 pears. <think>so \\boxed{12}</think>", "12", "12"),
        ("The answer is 5. <think>x is 9</think>", "9", "5"),
        ("The answer is 5. <think>let me think about it more</think>", "5", "5"),
        # unclosed block: runs to the end and its own answer counts (as text after the last closed block)
        ("<think>16 - 3 = 13, so 13", "13", "13"),
        ("<think>first \\boxed{3} then the answer is 4", "3", "3"),
        ("<think>a 1</think> The answer is 5. <think> maybe 7", "5", "5"),
        ("<think>the answer is 42</think><think>maybe 7", "7", "42</think><think>maybe 7"),
        ("<think>the answer is 42</think><think>so \\boxed{7}", "7", "7"),
        # two blocks: the last closed one is "the block"; the text between them is text before it
        ("<think>try \\boxed{1}</think> The answer is 5. <think>check \\boxed{9}</think>", "9", "9"),
        ("<think>try \\boxed{1}</think> The answer is 5. <think>let me check that once more</think>", "5", "1"),
        ("<think>x is 1</think><think>y is 9</think>", "9", "9"),
        ("<think>3+2</think> The answer is 5. <think>Let me check it 3 times.</think>", "5", "5"),
        # a </think> without <think> (the chat template opened the block in the prompt)
        ("Janet has 16 eggs, 16 - 3 = 13 </think> The total is 18.", "18", "18"),
        ("Janet has 16 eggs, the answer is 42 </think> The total is 18.", "18", "42 </think> The total is 18"),
        ("<think>the answer is 42</think>", "42", "42</think>"),
    ],
)
def test_think_blocks(completion: str, expected: str, without_think: str) -> None:
    assert extract_answer(completion) == expected
    assert extract_answer(completion, think=False) == without_think


def test_split_think_rules() -> None:
    assert split_think("no tags 42") is None
    assert split_think("<think>a 1</think> b 2") == ThinkSplit(" b 2", "a 1")
    assert split_think("x <think>a <think>b</think> c <think>d") == ThinkSplit("x \n c \nd", "a b")
    assert split_think("a </think> b </think> c") == ThinkSplit(" c", "a \n b ")
    assert split_think("rest of a block</think> 5", inside=True) == ThinkSplit(" 5", "rest of a block")
    assert split_think("still thinking 5", inside=True) == ThinkSplit("still thinking 5", "")


def test_think_segments_cut_at_closed_blocks() -> None:
    """gaps[i] is the answer text in front of block i, gaps[-1] the text after the last block (an unclosed block's
    content included, a dropped tag splitting it into lines)."""
    assert think_segments("no tags") is None
    assert think_segments("a <think>b</think> c <think>d</think> e <think>f") == ThinkSegments(
        ["a ", " c ", " e \nf"], ["b", "d"])
    assert think_segments("r </think> 5", inside=False) == ThinkSegments(["", " 5"], ["r "])
    assert think_segments("x", inside=True) == ThinkSegments(["x"], [])


def test_text_without_think_tags_is_extracted_as_before() -> None:
    """Every completion of the verifier corpus (no think tags): the default equals ``think=False`` (the old code
    path, untouched), style included."""
    pairs = build_corpus()
    assert len(pairs) > 400
    box = "\\boxed{1}"
    long = [box + "x" * (TAIL_CHARS - len(box)), box + "x" * (TAIL_CHARS - len(box) + 1), "9" * 1_000_000,
            "y" * 100_000 + " so \\boxed{42}", "think " * 5000 + "so 3", b"\\boxed{6}\xff", "\x00\\boxed{5\ud800}"]
    for completion in [pair.completion for pair in pairs] + long:
        assert "think>" not in str(completion)
        assert find_answer(completion) == find_answer(completion, think=False), completion[:100]
    assert [find_answer(c).style for c in long[:2]] == ["boxed", "last_number"]  # the box fits the tail or not


def test_long_block_then_short_answer() -> None:
    """The block is longer than the scanned tail, so its <think> is outside the window; the window's start is
    inside the block, and an "answer is" in the block's last part must not beat the explicit answer after it."""
    text = "<think>" + FILLER * (2 * TAIL_CHARS // len(FILLER)) + "So the answer is 42. Let me write <think> again."
    assert extract_answer(text + "</think>\n#### 18") == "18"
    assert extract_answer(text + "</think>\n\\boxed{18}") == "18"
    assert extract_answer(text + "</think>\n18") == "18"  # a bare answer after the block is its final answer
    assert extract_answer(text + "</think>\n") == "42"  # nothing after the block: the block's own answer
    assert extract_answer(text) == "42"  # unclosed: its own answer counts
    assert window_start(text + "</think>\n18", len(text) - 30) == (len(text) - 30, True)


def test_window_start_moves_past_a_cut_tag() -> None:
    text = "<think>" + "a" * 50 + "</think>" + "b" * 20
    cut_inside_closer = 7 + 50 + 3
    assert window_start(text, cut_inside_closer) == (7 + 50 + 8, False)
    assert window_start(text, 3) == (7, True)
    assert window_start(text, 0) == (0, False)
    assert window_start("no tags", 3) == (3, False)


def test_huge_block_work_is_bounded(monkeypatch) -> None:
    """A 2-million-character block (with 40,000 nested tags at its end): the tag parsing and every extraction strategy
    see at most TAIL_CHARS characters, and the answer after the block is found."""
    seen: list[int] = []
    split, run_style = extract_module.think_segments, extract_module._run_style

    def split_spy(text, **kw):
        seen.append(len(text))
        return split(text, **kw)

    def run_spy(style, text):
        seen.append(len(text))
        return run_style(style, text)

    monkeypatch.setattr(extract_module, "think_segments", split_spy)
    monkeypatch.setattr(extract_module, "_run_style", run_spy)
    block = FILLER * 40_000 + "the answer is 7 <think> " * 40_000
    assert extract_answer("<think>" + block + "</think>\nThe answer is 18.") == "18"
    assert extract_answer("<think>" + block) == "7"
    assert extract_answer(("</think>" * 250_000) + " so 5") == "5"
    assert seen and max(seen) <= TAIL_CHARS


def test_verify_ignores_the_think_block() -> None:
    completion = "<think>Maybe \\boxed{42}? No: 16 - 3 - 4 = 9 and 9 * 2 = 18.</think>\nThe answer is $18$."
    assert verify("#### 18", completion).status == "correct"
    assert verify("42", completion).status == "incorrect"
    assert verify("18", "<think>so 9 * 2 = 18</think>").status == "correct"  # nothing after: the block counts
    verdicts = verify_batch(["18", "42", "18"], [completion, completion, "<think>18</think> I give up"])
    assert [v.status for v in verdicts] == ["correct", "incorrect", "incorrect"]
    assert [v.extracted for v in verdicts] == ["18", "18", "I give up"]
    assert AccuracyReward(warm_start=False)([completion, completion], ["18", "42"]) == [1.0, 0.0]


THINK_FORMAT = [
    ("<think>16 - 3 - 4 = 9; 9 * 2 = 18</think>\nThe answer is 18.", 1.0),
    ("  \n<think>r</think> \\boxed{18}", 1.0),  # leading whitespace
    ("<think>r</think>\n#### 18", 1.0),
    ("<think>r</think>\nAnswer: 18", 0.0),  # "Answer: N" is not a trace's final-answer style (trace_problem)
    ("<think>r</think>\n18", 0.0),  # a bare number is no marked final answer
    ("<think>the answer is \\boxed{18}</think> ok", 0.0),  # the answer only inside the block
    ("Sure. <think>r</think> \\boxed{18}", 0.0),  # text before the block
    ("<think>r</think><think>s</think> \\boxed{18}", 0.0),  # a second block
    ("<think>r</think> \\boxed{18} </think>", 0.0),  # a stray closer
    ("<think>r <think> s</think> \\boxed{18}", 0.0),  # a stray opener
    ("<think>r \\boxed{18}", 0.0),  # unclosed
    ("<think> \n </think> \\boxed{18}", 0.0),  # empty block
    ("r </think> \\boxed{18}", 0.0),  # no opener
    ("\\boxed{18}", 0.0),  # no block
    ("", 0.0),
]


def test_think_format_reward() -> None:
    reward = ThinkFormatReward()
    assert reward.name == "think_format"
    completions, expected = zip(*THINK_FORMAT, strict=True)
    assert reward(list(completions), [""] * len(completions)) == list(expected)
    # 1.0 exactly where the shared trace check finds no problem (bytes are decoded first)
    assert list(expected) == [1.0 if trace_problem(c) is None else 0.0 for c in completions]
    assert reward([b"<think>r</think> \\boxed{18}\x00"], [""]) == [1.0]


def test_overlong_penalty_values() -> None:
    """max_new_tokens 10, buffer 4: 0 up to 6 tokens, then -1/4 per token, -1 from 10 on."""
    reward = OverlongPenalty(buffer=4)
    assert reward.name == "overlong"
    lengths = [0, 5, 6, 7, 8, 9, 10, 12]
    out = reward(["x"] * 8, [""] * 8, lengths=lengths, truncated=[False] * 8, max_new_tokens=10)
    assert out == [0.0, 0.0, 0.0, -0.25, -0.5, -0.75, -1.0, -1.0]
    assert OverlongPenalty(buffer=10)(["x"] * 3, [""] * 3, lengths=[0, 5, 10], max_new_tokens=10) == [0.0, -0.5, -1.0]
    assert overlong_penalty(2048, 4096, 1024) == 0.0 and overlong_penalty(3584, 4096, 1024) == -0.5


def test_overlong_penalty_errors() -> None:
    reward = OverlongPenalty(buffer=4)
    with pytest.raises(ValueError, match="OverlongPenalty needs the completion lengths and max_new_tokens"):
        reward(["x"], [""])
    with pytest.raises(ValueError, match="OverlongPenalty needs the completion lengths and max_new_tokens"):
        reward(["x"], [""], lengths=[3])
    with pytest.raises(ValueError, match="got 2 lengths for 1 completions"):
        reward(["x"], [""], lengths=[3, 4], max_new_tokens=10)
    with pytest.raises(ValueError, match=r"buffer \(4\) must be at most model.init_args.max_new_tokens \(3\)"):
        reward(["x"], [""], lengths=[3], max_new_tokens=3)
    for bad in (0, -2, 2.5, True, "4"):
        with pytest.raises(ValueError, match="OverlongPenalty buffer must be an integer >= 1"):
            OverlongPenalty(buffer=bad)


def test_builtin_rewards_accept_the_context() -> None:
    context = {"lengths": [3, 9], "truncated": [False, True], "max_new_tokens": 10}
    for reward in (AccuracyReward(warm_start=False), FormatReward(), ThinkFormatReward(), OverlongPenalty(2),
                   CodeReward()):
        assert context_keys(reward) == frozenset(CONTEXT_KEYS), type(reward).__name__
    completions, golds = ["<think>r</think> #### 18", "#### 4"], ["18", "5"]
    assert AccuracyReward(warm_start=False)(completions, golds, **context) == [1.0, 0.0]
    assert FormatReward("gsm8k")(completions, golds, **context) == [1.0, 1.0]
    assert ThinkFormatReward()(completions, golds, **context) == [1.0, 0.0]


class PlainDigit:
    """A user's reward with the old two-argument signature."""

    name = "digit"

    def __call__(self, completions, golds):
        return [1.0 if "7" in c else 0.0 for c in completions]


def test_weighted_reward_forwards_the_context() -> None:
    """1.0 * accuracy + 0.5 * overlong(buffer 4, budget 10) + 2.0 * plain digit reward, hand-computed."""
    reward = WeightedReward([AccuracyReward(warm_start=False), OverlongPenalty(4), PlainDigit()],
                            [1.0, 0.5, 2.0])
    completions, golds = ["#### 18", "#### 7", "<think>7</think> #### 3"], ["18", "18", "3"]
    out = reward(completions, golds, lengths=[4, 8, 10], truncated=[False, False, True], max_new_tokens=10)
    assert out == [1.0 + 0.0 + 0.0, 0.0 + 0.5 * -0.5 + 2.0, 1.0 + 0.5 * -1.0 + 2.0]
    with pytest.raises(ValueError, match="OverlongPenalty needs"):
        reward(completions, golds)


def test_shaping_rewards_are_selectable_by_class_path() -> None:
    jsonargparse = pytest.importorskip("jsonargparse")
    parser = jsonargparse.ArgumentParser()
    parser.add_argument("--rewards", type=list[Reward])
    config = {"rewards": [{"class_path": "srlm_pl.verifiers.ThinkFormatReward"},
                          {"class_path": "srlm_pl.verifiers.OverlongPenalty", "init_args": {"buffer": 3}}]}
    think, overlong = parser.instantiate_classes(parser.parse_object(config)).rewards
    assert isinstance(think, ThinkFormatReward)
    assert think(["<think>r</think> #### 1", "#### 1"], ["1", "1"]) == [1.0, 0.0]
    assert isinstance(overlong, OverlongPenalty) and overlong.buffer == 3
    assert overlong(["a", "b"], ["", ""], lengths=[4, 6], max_new_tokens=6) == [pytest.approx(-1 / 3), -1.0]


def test_init_docstrings_document_arguments() -> None:
    for cls, args in {OverlongPenalty: ["buffer"]}.items():
        doc = cls.__init__.__doc__ or ""
        for arg in args:
            assert f"{arg}:" in doc, (cls.__name__, arg)
