"""Prompt styles for evaluation: how a problem becomes the model's prompt.

Every style reuses ``srlm_pl.data.templates.PromptTemplate`` (the same code that builds training prompts),
so a model is evaluated on exactly the text it was trained on when the styles match.

Styles:

- ``gsm8k``: chat template, instruction asking for ``#### N`` (default for GSM8K, SVAMP, built-in problems);
- ``boxed``: chat template, instruction asking for ``\\boxed{}`` (default for MATH-500, AMC23, AIME24);
- ``answer_is``: chat template, instruction asking for "The answer is N" and the question prefixed with
  ``Problem:`` (``user_template``): the exact prompt of the TRL anchor evaluation (``shared/bench/trl_anchor``);
- ``question``: chat template with the question alone (the quick start's and built-in configs' training prompt);
- ``plain``: no chat template, ``Question: ...\\nAnswer:`` (base models without a chat template);
- ``code_completion``: no chat template, the function header alone without its trailing newline (HumanEval's
  completion style, as bigcode-evaluation-harness renders it; the program run is the header followed by the
  completion; default for ``humaneval`` and ``builtin_code``);
- ``code_chat``: chat template, an instruction to write the whole function in a fenced block, then the header
  (the program run is the completion's last ``python`` block);
- ``auto`` (the default): the training template saved with the model (``srlm_config.yaml`` of a stage export, or
  the run's ``config.yaml`` next to a checkpoint) when there is one, otherwise the dataset's default style.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import yaml

from srlm_pl.data.templates import (
    ANSWER_IS_INSTRUCTION,
    BOXED_INSTRUCTION,
    GSM8K_INSTRUCTION,
    PromptTemplate,
)

CODE_INSTRUCTION = ("Complete the following Python function. Reply with the whole function, its signature "
                    "included, in one ```python code block.")

STYLES: dict[str, PromptTemplate] = {
    "gsm8k": PromptTemplate(style="chat", instruction=GSM8K_INSTRUCTION),
    "boxed": PromptTemplate(style="chat", instruction=BOXED_INSTRUCTION),
    "answer_is": PromptTemplate(style="chat", instruction=ANSWER_IS_INSTRUCTION,
                                user_template="{instruction}\n\nProblem: {question}"),
    "question": PromptTemplate(style="chat", instruction=None),
    "plain": PromptTemplate(style="plain", instruction=None),
    "code_completion": PromptTemplate(style="plain", instruction=None, plain_template="{question}",
                                      rstrip_prompt=True),
    "code_chat": PromptTemplate(style="chat", instruction=CODE_INSTRUCTION, user_template="{instruction}\n\n"
                                "```python\n{question}```"),
}
DATASET_STYLE = {"gsm8k": "gsm8k", "svamp": "gsm8k", "builtin": "gsm8k", "file": "gsm8k",
                 "math500": "boxed", "amc23": "boxed", "aime24": "boxed",
                 "humaneval": "code_completion", "builtin_code": "code_completion"}
STYLE_CHOICES = ("auto", *STYLES)


@dataclass
class PromptStyle:
    """A resolved prompt style: the template and a label for reports."""

    template: PromptTemplate
    label: str = ""

    def render(self, question: str, tokenizer: Any) -> str:
        return self.template.prompt(question, tokenizer)

    @property
    def program_mode(self) -> str:
        """How a code task's completion becomes its program under this style: ``prompt_completion`` for a plain
        (completion-style) prompt, ``extract`` (the last fenced block) for a chat prompt."""
        return "prompt_completion" if self.template.style == "plain" else "extract"


def template_from_run_config(path: Path) -> PromptTemplate | None:
    """The ``data.init_args.template`` of a saved run config (``srlm_config.yaml`` / ``config.yaml``), if any."""
    if not path.is_file():
        return None
    cfg = yaml.safe_load(path.read_text()) or {}
    init = (cfg.get("data") or {}).get("init_args") or {}
    tpl = init.get("template")
    if not isinstance(tpl, dict):
        return PromptTemplate() if init else None
    known = {k: v for k, v in tpl.items() if k in PromptTemplate.__dataclass_fields__}
    return PromptTemplate(**known)


def resolve_style(style: str, dataset: str, run_config: Path | None = None, *, system_prompt: str | None = None,
                  instruction: str | None = None, user_template: str | None = None) -> PromptStyle:
    """The prompt style to use; ``system_prompt``/``instruction``/``user_template`` override the style's own."""
    if style not in STYLE_CHOICES:
        raise ValueError(f"unknown prompt style {style!r}; choose one of {list(STYLE_CHOICES)}")
    if style == "auto":
        saved = template_from_run_config(run_config) if run_config is not None else None
        if saved is not None:
            resolved = PromptStyle(saved, f"auto: training template of {run_config}")
        else:
            name = DATASET_STYLE.get(dataset, "gsm8k")
            resolved = PromptStyle(STYLES[name], f"auto: {name} (default for {dataset})")
    else:
        resolved = PromptStyle(STYLES[style], style)
    template = resolved.template
    if system_prompt is not None:
        template = replace(template, system_prompt=system_prompt or None)
    if instruction is not None:
        template = replace(template, instruction=instruction or None)
    if user_template is not None:
        template = replace(template, user_template=user_template)
    return PromptStyle(template, resolved.label)
