"""Math answer verifiers: safe, time-bounded, fast answer checking with rewards and metrics.

Public API::

    from srlm_pl.verifiers import extract_answer, verify, verify_batch
    verify("#### 18", "... so the answer is $18.00$.")  # Verdict(status="correct", extracted="18.00")
    verify("18", "<think>maybe 42</think> The answer is 18.")  # correct: a think block's numbers are ignored

Extraction is think-aware (:mod:`.think`, :func:`.extract.find_answer`): an explicit final answer after the
last ``<think> ... </think>`` block first, then one inside the block, then the weak fallbacks (a bare answer, the
last number) after and inside it; the text in front of the block never beats it. Whether a text is a well-formed
R1 trace (one block, then a final answer) is :func:`trace_problem` / :func:`check_trace` (:mod:`.trace`), the one
rule set of the data loader, make_traces and ``ThinkFormatReward``.

Code: ``verify_code``/``verify_code_batch`` run programs against tests in the sandbox of :mod:`.code`
(``extract_code`` takes the program out of a completion); see docs/code_sandbox.md.

Importing this package is cheap: it never imports sympy (only the worker processes do) nor torch
(:mod:`.metrics` is loaded lazily on first attribute access).
"""

from __future__ import annotations

from typing import Any

from .api import clear_caches, verify, verify_batch, warmup
from .extract import extract_answer, extract_gold, find_answer
from .normalize import normalize
from .think import ThinkSplit, split_think
from .trace import TRACE_PROBLEMS, TraceCheck, check_trace, trace_problem
from .verdict import STATUSES, Verdict

_LAZY = {
    "AccuracyReward": "rewards",
    "FormatReward": "rewards",
    "WeightedReward": "rewards",
    "Reward": "rewards",
    "accuracy_reward": "rewards",
    "format_reward": "rewards",
    "call_reward": "rewards",
    "ThinkFormatReward": "shaping",
    "OverlongPenalty": "shaping",
    "think_format_reward": "shaping",
    "overlong_penalty": "shaping",
    "VerifiedAccuracy": "metrics",
    "PassAtK": "metrics",
    "MajorityAtK": "metrics",
    "pass_at_k": "metrics",
    "verify_code": "code.api",
    "verify_code_batch": "code.api",
    "warmup_code": "code.api",
    "extract_code": "code.extract",
    "SandboxUnavailable": "code.host",
    "CodeReward": "code_reward",
    "code_reward": "code_reward",
    "verify_code_completions": "code_reward",
    "verify_completions": "code_reward",
    "CodeGoldError": "code_task",
    "CodeTask": "code_task",
    "build_program": "code_task",
    "code_gold": "code_task",
    "is_code_gold": "code_task",
    "parse_code_gold": "code_task",
}

__all__ = [
    "STATUSES",
    "TRACE_PROBLEMS",
    "TraceCheck",
    "Verdict",
    "check_trace",
    "clear_caches",
    "extract_answer",
    "extract_gold",
    "find_answer",
    "normalize",
    "split_think",
    "ThinkSplit",
    "trace_problem",
    "verify",
    "verify_batch",
    "warmup",
    *_LAZY,
]


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module(f"{__name__}.{module}"), name)
