"""The offline-topk benchmark's memory window (``tools/benchlib/step_kd_offline.train_peak_callback``): resetting
the high-water mark at train start leaves ``peak()`` the training window's peak while ``process_peak()`` still
counts what the process touched before (loading), which ``getrusage`` alone no longer does after the reset."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "tools"))
from benchlib import common, step_kd_offline  # noqa: E402

MIB = 2**20


def _clear_refs_writable() -> bool:
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        return False
    return True


@pytest.mark.skipif(not sys.platform.startswith("linux") or not _clear_refs_writable(),
                    reason="needs Linux's writable /proc/self/clear_refs")
def test_process_peak_includes_memory_touched_before_the_reset():
    window = step_kd_offline.train_peak_callback()
    base = common.rss_gib()
    block = bytearray(400 * MIB)  # "loading": 400 MiB touched (zero-filled) and freed before training starts
    touched = common.rss_gib()
    del block
    window.on_train_start(None, None)
    assert touched - base > 0.3  # the block was resident
    assert window.peak() < touched - 0.3  # the window's peak no longer sees it
    assert window.process_peak() >= touched - 1e-3  # the whole process's peak does
