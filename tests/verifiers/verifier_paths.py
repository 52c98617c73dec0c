"""Paths shared by the verifier tests (a uniquely named helper module, so it
cannot clash with other test folders' helpers or conftest files)."""

from __future__ import annotations

import os
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
FIXTURES = Path(__file__).resolve().parent / "fixtures"


def shared_data_dir() -> Path:
    """``$SRLM_SHARED_DATA`` or ``<repo>/../shared/data``."""
    env = os.environ.get("SRLM_SHARED_DATA")
    return Path(env) if env else (REPO_ROOT / ".." / "shared" / "data").resolve()
