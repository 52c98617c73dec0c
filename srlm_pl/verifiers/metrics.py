"""torchmetrics metrics for verified answers: accuracy, pass@k and maj@k, synchronised across DDP ranks.

Design choices: every state is a scalar tensor reduced with ``dist_reduce_fx="sum"`` (a sum of per-problem
scores and a problem count), so DDP synchronisation is exact and cheap and ``compute`` is a ratio.
pass@k uses the unbiased estimator of Chen et al. (2021), ``1 - C(n-c, k) / C(n, k)``, evaluated as the
product ``prod_{i=n-c+1}^{n} (1 - k / i)`` in float64, which never forms huge binomials. maj@k takes the
first ``k`` samples of a problem, ignores samples with no answer, picks the most frequent normalised answer
(ties go to the answer that appeared first) and scores that answer's correctness.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torchmetrics import Metric

from .verdict import Verdict


def pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased pass@k for one problem with ``n`` samples of which ``c`` are correct."""
    if not 0 <= c <= n:
        raise ValueError(f"need 0 <= c <= n, got n={n}, c={c}")
    if k < 1 or k > n:
        raise ValueError(f"need 1 <= k <= n, got k={k}, n={n}")
    if n - c < k:
        return 1.0
    miss = 1.0
    for i in range(n - c + 1, n + 1):
        miss *= 1.0 - k / i
    return 1.0 - miss


def _as_bools(values: torch.Tensor | Sequence[Verdict | bool | int | float]) -> torch.Tensor:
    if isinstance(values, torch.Tensor):
        return values.detach().reshape(-1).to(torch.bool)
    return torch.tensor([bool(v) for v in values], dtype=torch.bool)


def _as_ints(values: torch.Tensor | Sequence[int]) -> list[int]:
    if isinstance(values, torch.Tensor):
        return [int(v) for v in values.detach().reshape(-1).tolist()]
    return [int(v) for v in values]


class VerifiedAccuracy(Metric):
    """Fraction of correct verdicts. ``update`` takes a bool tensor or a sequence of verdicts/bools."""

    is_differentiable = False
    higher_is_better = True
    full_state_update = False

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.add_state("correct", default=torch.tensor(0.0, dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("total", default=torch.tensor(0.0, dtype=torch.float64), dist_reduce_fx="sum")

    def update(self, verdicts: torch.Tensor | Sequence[Verdict | bool]) -> None:
        flags = _as_bools(verdicts)
        self.correct += flags.sum().to(self.correct)
        self.total += torch.tensor(float(flags.numel()), dtype=torch.float64, device=self.total.device)

    def compute(self) -> torch.Tensor:
        return self.correct / self.total.clamp(min=1.0)


class PassAtK(Metric):
    """Mean unbiased pass@k over problems; ``update(n, c)`` with per-problem sample and correct counts.

    Args:
        k: the k of pass@k; every problem must have at least ``k`` samples.
    """

    is_differentiable = False
    higher_is_better = True
    full_state_update = False

    def __init__(self, k: int = 1, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        if k < 1:
            raise ValueError("k must be >= 1")
        self.k = k
        self.add_state("score", default=torch.tensor(0.0, dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("problems", default=torch.tensor(0.0, dtype=torch.float64), dist_reduce_fx="sum")

    def update(self, n: torch.Tensor | Sequence[int], c: torch.Tensor | Sequence[int]) -> None:
        ns, cs = _as_ints(n), _as_ints(c)
        if len(ns) != len(cs):
            raise ValueError(f"{len(ns)} sample counts but {len(cs)} correct counts")
        total = sum(pass_at_k(ni, ci, self.k) for ni, ci in zip(ns, cs, strict=True))
        self.score += torch.tensor(total, dtype=torch.float64, device=self.score.device)
        self.problems += torch.tensor(float(len(ns)), dtype=torch.float64, device=self.problems.device)

    def compute(self) -> torch.Tensor:
        return self.score / self.problems.clamp(min=1.0)


def majority_correct(answers: Sequence[str | None], correct: Sequence[bool], k: int) -> bool:
    """Whether the most frequent answer among the first ``k`` samples is a correct one."""
    counts: dict[str, int] = {}
    first_flag: dict[str, bool] = {}
    for answer, flag in zip(answers[:k], correct[:k], strict=True):
        if answer is None:
            continue
        counts[answer] = counts.get(answer, 0) + 1
        first_flag.setdefault(answer, bool(flag))
    if not counts:
        return False
    best = max(counts.values())
    winner = next(a for a in counts if counts[a] == best)  # dicts keep first-seen order: ties -> first
    return first_flag[winner]


class MajorityAtK(Metric):
    """maj@k: accuracy of the majority vote over the first ``k`` samples of each problem.

    ``update(answers, correct)`` takes, per problem, the normalised answers (None for no answer) and
    their correctness flags.

    Args:
        k: number of samples voting per problem.
    """

    is_differentiable = False
    higher_is_better = True
    full_state_update = False

    def __init__(self, k: int = 1, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        if k < 1:
            raise ValueError("k must be >= 1")
        self.k = k
        self.add_state("correct", default=torch.tensor(0.0, dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("problems", default=torch.tensor(0.0, dtype=torch.float64), dist_reduce_fx="sum")

    def update(self, answers: Sequence[Sequence[str | None]], correct: Sequence[Sequence[bool]]) -> None:
        if len(answers) != len(correct):
            raise ValueError(f"{len(answers)} answer lists but {len(correct)} correctness lists")
        hits = sum(majority_correct(a, c, self.k) for a, c in zip(answers, correct, strict=True))
        self.correct += torch.tensor(float(hits), dtype=torch.float64, device=self.correct.device)
        self.problems += torch.tensor(float(len(answers)), dtype=torch.float64, device=self.problems.device)

    def compute(self) -> torch.Tensor:
        return self.correct / self.problems.clamp(min=1.0)
