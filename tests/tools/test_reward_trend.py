"""tools/reward_trend.py: window means of reward/mean and train/accuracy from a GRPO CSV log, hand-computed."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def _write(run: Path, version: int, rows: list[dict]) -> None:
    path = run / "logs" / f"version_{version}" / "metrics.csv"
    path.parent.mkdir(parents=True, exist_ok=True)
    keys = ["step", "reward/mean", "train/accuracy", "val/accuracy"]
    with path.open("w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=keys)
        w.writeheader()
        w.writerows(rows)


def _run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(ROOT / "tools" / "reward_trend.py"), *args], capture_output=True,
                          text=True)


def test_windows_first_last_and_rise_from_the_newest_version(tmp_path: Path) -> None:
    _write(tmp_path, 0, [{"step": 0, "reward/mean": 9.0}])  # older version: ignored
    rewards = [0.1, 0.3, 0.2, 0.4, 0.5, 0.9]
    rows = [{"step": s, "reward/mean": r, "train/accuracy": r / 2} for s, r in enumerate(rewards)]
    rows.append({"step": 5, "val/accuracy": 0.75})
    _write(tmp_path, 10, rows)  # version_10 sorts after version_9 numerically
    _write(tmp_path, 9, [{"step": 0, "reward/mean": 8.0}])
    out = _run(str(tmp_path), "--windows", "3", "--json")
    assert out.returncode == 0, out.stderr
    got = json.loads(out.stdout)
    assert got["steps"] == 6
    assert [w["steps"] for w in got["windows"]] == ["0-1", "2-3", "4-5"]
    assert [round(w["reward"], 6) for w in got["windows"]] == [0.2, 0.3, 0.7]
    assert [round(w["train_accuracy"], 6) for w in got["windows"]] == [0.1, 0.15, 0.35]
    assert got["val_accuracy"] == [[5, 0.75]]
    assert round(got["rise"], 6) == 0.5


def test_a_log_without_rewards_is_a_clear_error(tmp_path: Path) -> None:
    _write(tmp_path, 0, [{"step": 0, "val/accuracy": 0.5}])
    out = _run(str(tmp_path))
    assert out.returncode != 0 and "no reward/mean values" in out.stderr and "metrics.csv" in out.stderr
    out = _run(str(tmp_path / "nothing"))
    assert out.returncode != 0 and "no logs/version_*/metrics.csv" in out.stderr
