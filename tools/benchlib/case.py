"""One row of the step benchmark: what identifies it, how srlm_pl measures it and, where the TRL anchor has the
same workload, how TRL does."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

Row = dict[str, Any]


@dataclass
class Case:
    label: Row
    run: Callable[[], Row]
    trl: Callable[[], Row] | None = None
    extra: Row = field(default_factory=dict)  # settings shown on the srlm_pl row only
