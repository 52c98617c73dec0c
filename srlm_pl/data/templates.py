"""Prompt and completion text: the tokenizer's chat template or a plain template, and answer formats."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from srlm_pl.data.answers import AnswerFormat, format_solution, strip_calculator
from srlm_pl.verifiers.code_task import is_code_gold

GSM8K_INSTRUCTION = "Solve the following math problem step by step. End your response with '#### N' where N is " \
                    "the final answer."
BOXED_INSTRUCTION = "Solve the following math problem step by step. Put your final answer within \\boxed{}."
ANSWER_IS_INSTRUCTION = "Solve the following math problem. Reason step by step, and end your response with " \
                        "'The answer is N' where N is the final number."


@dataclass
class PromptTemplate:
    """How a question becomes a prompt and a worked solution becomes the target completion.

    Args:
        style: ``chat`` applies the tokenizer's chat template (a user turn, then the assistant turn is
            the completion); ``plain`` formats ``plain_template`` and the completion follows after a space.
        system_prompt: system message for ``chat`` style; ``null`` sends none (the template may add its own).
        instruction: text put before the question in the user turn (``null`` for none), e.g. asking for
            ``\\boxed{}`` or ``#### N``.
        user_template: how instruction and question form the user turn when ``instruction`` is set.
        plain_template: the ``plain`` prompt; ``{question}`` is replaced by the question.
        answer_format: how the completion states its final answer: ``gsm8k`` (``#### N``), ``boxed``
            (``\\boxed{N}``), ``answer_is`` (``The answer is N.``) or ``keep`` (the solution unchanged).
        strip_calculator: remove GSM8K's ``<<48/2=24>>`` calculator annotations from solutions.
        rstrip_prompt: remove trailing whitespace from a ``plain`` prompt. HumanEval's completion-style
            evaluation does (as bigcode-evaluation-harness): a prompt ending in a lone newline token leads
            tokenizers that merge a newline with the next line's indentation to start a new top-level block
            instead of the function body.

    Code tasks (rows whose answer is a code-task gold, e.g. ``path: builtin_code``): the completion is the
    solution verbatim (``answer_format`` and ``strip_calculator`` do not apply); for completion style use
    ``style: plain`` with ``plain_template: "{question}"`` (the prompt is then the function header itself).

    Reasoning traces (rows of ``format: r1`` / ``messages``, marked ``trace: True``): the completion is the trace
    verbatim, ``<think>`` block included (``answer_format`` and ``strip_calculator`` do not apply; ``plain`` style
    still puts its space before it). The completion is tokenized as text, never passed through the chat template,
    so a template that drops ``<think>`` blocks from assistant turns (DeepSeek-R1-Distill's, Qwen3's for past
    turns) cannot remove it; Qwen2.5's template only renders the prompt here.
    """

    style: Literal["chat", "plain"] = "chat"
    system_prompt: str | None = None
    instruction: str | None = None
    user_template: str = "{instruction}\n\n{question}"
    plain_template: str = "Question: {question}\nAnswer:"
    answer_format: AnswerFormat = "gsm8k"
    strip_calculator: bool = True
    rstrip_prompt: bool = False

    def prompt(self, question: str, tokenizer: Any) -> str:
        if self.instruction:
            user = self.user_template.replace("{instruction}", self.instruction).replace("{question}", question)
        else:
            user = question
        if self.style == "plain":
            text = self.plain_template.replace("{question}", user)
            return text.rstrip() if self.rstrip_prompt else text
        if not getattr(tokenizer, "chat_template", None):
            name = getattr(tokenizer, "name_or_path", "") or "the tokenizer"
            raise ValueError(f"data.init_args.template.style is 'chat' but {name} has no chat template (a base "
                             "model?); set data.init_args.template.style: plain")
        messages = [{"role": "system", "content": self.system_prompt}] if self.system_prompt else []
        messages.append({"role": "user", "content": user})
        return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)

    def completion(self, solution: str, answer: str | None, *, trace: bool = False) -> str:
        """The target completion; a code task's (its ``answer`` a code-task gold) is its solution verbatim, and a
        reasoning trace's (``trace``) the trace verbatim (after the ``plain`` style's space)."""
        if answer is not None and is_code_gold(answer):
            return solution  # no answer format, no calculator stripping, no space: indentation is syntax
        if trace:
            return f" {solution}" if self.style == "plain" else solution
        text = strip_calculator(solution) if self.strip_calculator else solution
        text = format_solution(text.strip(), answer, self.answer_format)
        return f" {text}" if self.style == "plain" else text
