import copy

import pytest

from srlm_pl.data.answers import format_solution, gold_from_solution, strip_calculator
from srlm_pl.data.templates import PromptTemplate
from srlm_pl.verifiers.extract import last_boxed

SOL = "She sold 48/2 = <<48/2=24>>24 clips.\nIn total 48+24 = <<48+24=72>>72.\n#### 72"


def test_gold_answers_from_solutions() -> None:
    assert gold_from_solution(SOL) == "72"
    assert gold_from_solution("x\n#### 7,425,000") == "7425000"
    assert gold_from_solution(r"so $\boxed{\frac{1}{2}}$ then \boxed{\left( 3, \frac{\pi}{2} \right)}") == \
        r"\left( 3, \frac{\pi}{2} \right)"
    assert gold_from_solution("no answer") is None
    assert last_boxed(r"\boxed{a{b}c}") == "a{b}c" and last_boxed(r"\boxed{unclosed") is None


def test_answer_formats_and_calculator_stripping() -> None:
    clean = strip_calculator(SOL)
    assert "<<" not in clean and "48/2 = 24 clips" in clean
    assert format_solution(clean, "72", "gsm8k").endswith("= 72.\n#### 72")
    assert format_solution(clean, "72", "boxed").endswith("= 72.\nThe final answer is \\boxed{72}.")
    assert format_solution(clean, "72", "answer_is").endswith("= 72.\nThe answer is 72.")
    assert format_solution(clean, "72", "keep") == clean
    math_sol = r"Add them: $\boxed{3}$."
    assert format_solution(math_sol, "3", "boxed") == math_sol


def test_chat_and_plain_prompts(tiny_tokenizer) -> None:
    chat = PromptTemplate(system_prompt="Be brief.", instruction="Solve it.")
    text = chat.prompt("What is 2+2?", tiny_tokenizer)
    assert text == ("<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nSolve it.\n\nWhat is 2+2?"
                    "<|im_end|>\n<|im_start|>assistant\n")
    plain = PromptTemplate(style="plain")
    assert plain.prompt("What is 2+2?", tiny_tokenizer) == "Question: What is 2+2?\nAnswer:"
    assert plain.completion("2+2 = <<2+2=4>>4\n#### 4", "4") == " 2+2 = 4\n#### 4"
    assert chat.completion("2+2 = <<2+2=4>>4\n#### 4", "4") == "2+2 = 4\n#### 4"


def test_chat_style_without_a_chat_template_names_the_key(tiny_tokenizer) -> None:
    base = copy.deepcopy(tiny_tokenizer)
    base.chat_template = None  # a base model's tokenizer
    with pytest.raises(ValueError, match=r"data.init_args.template.style is 'chat' but .* has no chat template"):
        PromptTemplate(style="chat").prompt("What is 2+2?", base)
    assert PromptTemplate(style="plain").prompt("What is 2+2?", base) == "Question: What is 2+2?\nAnswer:"
