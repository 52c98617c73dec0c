"""Fixtures for the verifier tests: a warm worker pool shared by the session, and the real data folder."""

from __future__ import annotations

from pathlib import Path

import pytest

from verifier_paths import shared_data_dir


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


@pytest.fixture(scope="module")
def code_sandbox() -> dict:
    """The code sandbox pool, warm (its setup details), or a skip naming why sandboxes cannot start here."""
    from srlm_pl.verifiers import SandboxUnavailable, warmup_code

    try:
        return warmup_code()
    except SandboxUnavailable as exc:
        pytest.skip(f"code sandbox unavailable on this machine: {exc}")
