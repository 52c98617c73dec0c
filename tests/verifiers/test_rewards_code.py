"""CodeReward and code-aware verification: rewards equal the sandbox's verdicts, completions become programs in
each mode, bad golds raise errors naming the field (and GRPO's scorer falls back on them and counts), mixed math
and code golds are each checked by their own verifier."""

from __future__ import annotations

import pytest

from srlm_pl.data.code_generator import CodeTaskGenerator
from srlm_pl.rl.scoring import score
from srlm_pl.verifiers import CodeReward, build_program, verify_code, verify_completions
from srlm_pl.verifiers.code_task import CodeGoldError, CodeTask, code_gold, parse_code_gold

TASK = CodeTaskGenerator(1, seed=0).task(0)  # add_6: "Return x plus 6."
GOLD = TASK.gold()


def test_reward_is_one_exactly_when_all_tests_pass() -> None:
    completions = [TASK.body, "    return x + 7\n", "    pass\n", "    return x + 6\n\ndef extra():\n    return 1\n",
                   "    return x + 6\nprint('ok')\nimport sys\nsys.exit(0)\n", "", "    while True:\n        pass\n"]
    rewards = CodeReward(program="prompt_completion", timeout=2.0)(completions, [GOLD] * len(completions))
    assert rewards == [1.0, 0.0, 0.0, 1.0, 1.0, 0.0, 0.0]
    # the same verdicts as running each program through verify_code directly
    task = parse_code_gold(GOLD)
    direct = [float(bool(verify_code(p, task.tests, entry_point=task.entry_point, timeout=2.0))) if p else 0.0
              for p in (build_program(c, task, "prompt_completion") for c in completions)]
    assert rewards == direct


def test_chat_completions_are_extracted_and_auto_picks_the_mode() -> None:
    block = f"Here it is:\n```python\n{TASK.prompt}{TASK.body}```\nDone."
    wrong_block = "```python\ndef add_6(x):\n    return x\n```"
    chat = CodeReward(program="extract")
    assert chat([block, wrong_block, TASK.body, "no code at all."], [GOLD] * 4) == [1.0, 0.0, 0.0, 0.0]
    auto = CodeReward()  # extract when the code defines add_6, else prompt + completion
    assert auto([block, wrong_block, TASK.body, "    return 6 + x\n"], [GOLD] * 4) == [1.0, 0.0, 1.0, 1.0]
    typed = CodeTask("assert f([1, 2]) == 3\n", "f", "from typing import List\n\n\ndef f(xs: List[int]) -> int:\n")
    program = build_program("```python\ndef f(xs: List[int]) -> int:\n    return sum(xs)\n```", typed, "extract")
    assert program == "from typing import List\ndef f(xs: List[int]) -> int:\n    return sum(xs)\n"


def test_bad_gold_raises_naming_the_field_and_scoring_falls_back() -> None:
    bad = code_gold(TASK.tests, "add_6").replace('"entry_point"', '"entrypoint"')
    reward = CodeReward()
    with pytest.raises(CodeGoldError, match=r"golds\[1\].*'entry_point'"):
        reward([TASK.body, TASK.body], [GOLD, bad])
    with pytest.raises(CodeGoldError, match="not valid JSON"):
        reward([TASK.body], ["#### 18"])
    scores = score([TASK.body, TASK.body], [GOLD, bad], [reward], [1.0], fallback=-1.0)
    assert scores.per_function["code"].tolist() == [-1.0, -1.0] and scores.fallbacks["code"] == 2
    assert score([TASK.body] * 2, [GOLD] * 2, [reward], [1.0]).total.tolist() == [1.0, 1.0]


def test_bad_settings_name_the_config_key() -> None:
    with pytest.raises(ValueError, match=r"model\.init_args\.rewards.*program"):
        CodeReward(program="run")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"model\.init_args\.rewards.*timeout"):
        CodeReward(timeout=0)
    for bad in (601, float("nan"), float("inf"), "5"):  # verify_code accepts (0, 600] seconds only
        with pytest.raises(ValueError, match=r"model\.init_args\.rewards.*timeout.*\(0, 600\]"):
            CodeReward(timeout=bad)  # type: ignore[arg-type]
    assert CodeReward(timeout=600).timeout == 600


def test_mixed_math_and_code_golds_use_their_own_verifier() -> None:
    verdicts = verify_completions(["#### 18", GOLD, "\\frac{1}{2}", GOLD],
                                  ["The answer is 18.", TASK.body, "The answer is 0.5.", "    return 0\n"])
    assert [v.status for v in verdicts] == ["correct", "correct", "correct", "incorrect"]
