"""Fixtures for the verifier tests: a warm worker pool shared by the session, and the real data folder."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
if str(REPO_ROOT) not in sys.path:  # the package may not be installed (plain `pytest` from a checkout)
    sys.path.insert(0, str(REPO_ROOT))
HERE = Path(__file__).resolve().parent
if str(HERE) not in sys.path:
    sys.path.insert(0, str(HERE))

FIXTURES = HERE / "fixtures"


def shared_data_dir() -> Path:
    """``$SRLM_SHARED_DATA`` or ``<repo>/../shared/data``."""
    env = os.environ.get("SRLM_SHARED_DATA")
    return Path(env) if env else (REPO_ROOT / ".." / "shared" / "data").resolve()


@pytest.fixture(scope="session")
def warm_pool():
    """The process-wide worker pool, started once and ready before the first symbolic check."""
    from srlm_pl.verifiers import warmup
    from srlm_pl.verifiers.pool import get_pool

    assert warmup(wait=True, timeout=60.0), "worker pool did not become ready"
    return get_pool()


@pytest.fixture(scope="session")
def real_data() -> Path:
    root = shared_data_dir()
    if not (root / "gsm8k" / "test.jsonl").is_file() or not (root / "math500" / "test.jsonl").is_file():
        pytest.skip(f"real data not found at {root} (set SRLM_SHARED_DATA to the shared/data folder)")
    return root
