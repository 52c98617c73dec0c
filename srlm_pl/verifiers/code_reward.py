"""The code reward for GRPO (``srlm_pl.verifiers.CodeReward``) and code-aware verification of completions.

``CodeReward`` gives 1.0 to a completion whose program passes every test of its task and 0.0 otherwise. The
task comes in the gold answer (a code-task JSON gold, :mod:`.code_task`), so the GRPO module, the data pipeline
and ``srlm_pl.rl.scoring.score`` (which falls back on a failing reward and counts it, as for the math rewards)
need nothing code-specific. Programs run in the sandbox (:func:`srlm_pl.verifiers.verify_code_batch`); identical
(program, task) pairs in a call, common in a GRPO group, run once.

``verify_completions`` scores a mixed list of golds: code-task golds through the sandbox, the others through
the math verifier (``verify_batch``); generation-based validation uses it, so a code data module's
``val/accuracy`` is its pass rate.
"""

from __future__ import annotations

from collections.abc import Sequence

from .code_task import PROGRAM_MODES, CodeTask, ProgramMode, build_program, is_code_gold, parse_code_gold
from .rewards import Reward
from .verdict import Verdict


def verify_code_completions(completions: Sequence[str], golds: Sequence[str], *, mode: ProgramMode = "auto",
                            timeout: float = 5.0) -> list[Verdict]:
    """One sandbox verdict per completion against its code-task gold (``mode``: see :mod:`.code_task`).

    A completion with no code to run gets ``no_answer``; a gold that is not a code-task JSON object raises
    :class:`~srlm_pl.verifiers.code_task.CodeGoldError` naming the gold's index and the field."""
    from srlm_pl.verifiers import verify_code_batch

    if len(completions) != len(golds):
        raise ValueError(f"{len(completions)} completions but {len(golds)} golds")
    tasks: dict[str, CodeTask] = {}
    for i, gold in enumerate(golds):
        if gold not in tasks:
            tasks[gold] = parse_code_gold(gold, where=f"golds[{i}]")
    programs = [build_program(c, tasks[g], mode) for c, g in zip(completions, golds, strict=True)]
    unique: dict[tuple[str, str], int] = {}
    for program, gold in zip(programs, golds, strict=True):
        if program is not None:
            unique.setdefault((program, gold), len(unique))
    keys = list(unique)
    verdicts = verify_code_batch([p for p, _ in keys], [tasks[g].tests for _, g in keys],
                                 entry_points=[tasks[g].entry_point for _, g in keys], timeout=timeout) if keys else []
    return [Verdict("no_answer") if p is None else verdicts[unique[(p, g)]]
            for p, g in zip(programs, golds, strict=True)]


def verify_completions(golds: Sequence[str], completions: Sequence[str], *, timeout: float = 1.0,
                       code_timeout: float = 5.0) -> list[Verdict]:
    """Verdicts for a mix of math and code golds (argument order of ``verify_batch``): code-task golds run in
    the sandbox (program mode ``auto``, deadline ``code_timeout``), the others go to the math verifier."""
    from .api import verify_batch

    is_code = [is_code_gold(g) for g in golds]
    if not any(is_code):
        return verify_batch(golds, completions, timeout=timeout)
    out: dict[int, Verdict] = {}
    for want, run in ((False, lambda c, g: verify_batch(g, c, timeout=timeout)),
                      (True, lambda c, g: verify_code_completions(c, g, timeout=code_timeout))):
        index = [i for i, flag in enumerate(is_code) if flag is want]
        if index:
            out.update(zip(index, run([completions[i] for i in index], [golds[i] for i in index]), strict=True))
    return [out[i] for i in range(len(golds))]


def code_reward(completions: Sequence[str], golds: Sequence[str], *, mode: ProgramMode = "auto",
                timeout: float = 5.0) -> list[float]:
    """1.0 for each completion whose program passes all of its task's tests, else 0.0."""
    return [1.0 if v else 0.0 for v in verify_code_completions(completions, golds, mode=mode, timeout=timeout)]


class CodeReward(Reward):
    """Binary code-execution reward: 1.0 when every hidden test passes in the sandbox, else 0.0."""

    name = "code"

    def __init__(self, program: ProgramMode = "auto", timeout: float = 5.0) -> None:
        """Score completions by running their code against the task's tests.

        The gold answer of each prompt is a code-task JSON object (``srlm_pl.verifiers.code_gold``:
        ``tests``, ``entry_point``, optional ``prompt``); a gold that is not raises an error naming the field,
        and the GRPO scorer then gives the batch its ``reward_fallback`` and counts it
        (``reward/code_fallbacks``).

        Args:
            program: how a completion becomes the program: ``extract`` (the last fenced Python block, or the
                whole completion when it parses; chat style), ``prompt_completion`` (the gold's prompt followed
                by the completion cut at a top-level stop sequence; completion style, as HumanEval), or
                ``auto`` (``extract`` when that code defines the entry point, else ``prompt_completion``).
            timeout: wall-clock seconds one program (with its tests) may run, in (0, 600]; a program that runs out
                scores 0.
        """
        if program not in PROGRAM_MODES:
            raise ValueError(f"model.init_args.rewards: CodeReward program must be one of {list(PROGRAM_MODES)}, "
                             f"got {program!r}")
        if not (type(timeout) in (int, float) and 0 < timeout <= 600):  # verify_code's range; NaN fails too
            raise ValueError(f"model.init_args.rewards: CodeReward timeout must be seconds in (0, 600], "
                             f"got {timeout!r}")
        self.program, self.timeout = program, timeout

    def __call__(self, completions: Sequence[str], golds: Sequence[str], *, lengths: Sequence[int] | None = None,
                 truncated: Sequence[bool] | None = None, max_new_tokens: int | None = None) -> list[float]:
        return code_reward(completions, golds, mode=self.program, timeout=self.timeout)
