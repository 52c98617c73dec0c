"""The result type of every check: a small immutable :class:`Verdict`.

Design: a verdict is a plain frozen dataclass (cheap to create, hashable, picklable across DataLoader
workers) rather than a bool, so that callers can tell *why* a completion scored zero: it had no answer,
the gold itself was unusable, or the check ran out of time. ``bool(verdict)`` is True only for
``"correct"`` so it drops into ``if verify(...)`` and ``sum(...)`` naturally. ``path`` records which
stage decided (``exact``, ``string``, ``symbolic``, ``numeric``, ``limit``, ``cache``) for profiling and
debugging; it is not part of the public contract.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

Status = Literal["correct", "incorrect", "no_answer", "invalid_gold", "timeout", "invalid"]
STATUSES: tuple[str, ...] = ("correct", "incorrect", "no_answer", "invalid_gold", "timeout")
# what srlm_pl.verifiers.verify_code returns; ``invalid``: the tests fail against the known-good reference
CODE_STATUSES: tuple[str, ...] = ("correct", "incorrect", "no_answer", "timeout", "invalid")


@dataclass(frozen=True, slots=True)
class Verdict:
    """Outcome of comparing one completion with one gold answer.

    Attributes:
        status: one of ``correct``, ``incorrect``, ``no_answer`` (nothing extractable in the completion),
            ``invalid_gold`` (nothing usable in the gold) or ``timeout`` (the deadline or a resource cap hit
            before a decision); code verdicts (:data:`CODE_STATUSES`) use ``invalid`` instead of
            ``invalid_gold`` (the tests fail against the reference program).
        extracted: the answer text taken from the completion, or None.
        path: the stage that decided (diagnostic only).
    """

    status: Status
    extracted: str | None = None
    path: str = ""

    def __bool__(self) -> bool:
        return self.status == "correct"

    @property
    def correct(self) -> bool:
        return self.status == "correct"
