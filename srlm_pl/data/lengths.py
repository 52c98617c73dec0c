"""Length statistics of a tokenized split, and the check that a length policy keeps at least half of it."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from srlm_pl.data.collate import LengthReport
from srlm_pl.data.sources import DataError


@dataclass(frozen=True)
class LengthStats:
    """Token counts of a split's examples (prompt + completion + EOS; prompt data: the prompt) before the length
    policy: ``p50``/``p90`` are nearest-rank percentiles (the smallest length that at least 50% / 90% of the
    examples do not exceed), ``max`` the longest."""

    count: int
    p50: int
    p90: int
    max: int

    def text(self) -> str:
        return f"tokens p50 {self.p50} / p90 {self.p90} / max {self.max}"


def length_stats(lengths: Sequence[int]) -> LengthStats:
    """Nearest-rank p50 / p90 and the maximum of ``lengths`` (numpy's ``inverted_cdf`` percentile)."""
    if not len(lengths):
        raise ValueError("length statistics of an empty split")
    p50, p90 = np.percentile(np.asarray(lengths), [50, 90], method="inverted_cdf")
    return LengthStats(count=len(lengths), p50=int(p50), p90=int(p90), max=int(max(lengths)))


def check_dropped_at_most_half(report: LengthReport, stats: LengthStats, where: str, max_length: int,
                               policy: str) -> None:
    """``DataError`` when the length policy dropped more than half of a split's examples (a ``max_length`` that
    does not fit the data, e.g. 1024 for reasoning traces with a p90 near 2,000 tokens)."""
    if 2 * report.dropped <= stats.count:
        return
    raise DataError(
        f"{where}: the length policy drops {report.dropped} of {stats.count} examples (more than half) at "
        f"data.init_args.max_length={max_length} with data.init_args.length_policy={policy} ({stats.text()}); "
        f"raise data.init_args.max_length (to at least {stats.p90} to keep 90%)"
        + (" or use length_policy: truncate" if policy == "drop" else ""))
