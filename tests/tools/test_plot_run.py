"""tools/plot_run.py: PNG curves from CSV logs (versions merged) and TensorBoard event files; absent groups skipped."""

from __future__ import annotations

import csv
import importlib
from pathlib import Path

import pytest

from srlm_pl.evaluation.plots import bar_chart, plot_run, read_csv_logs, read_tensorboard_logs

ROOT = Path(__file__).resolve().parents[2]


def _csv(path: Path, rows: list[dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    keys = sorted({k for r in rows for k in r})
    with path.open("w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=keys)
        w.writeheader()
        w.writerows(rows)


def _is_png(path: Path) -> bool:
    return path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_csv_versions_are_merged_and_groups_without_data_skipped(tmp_path: Path) -> None:
    run = tmp_path / "run"
    _csv(run / "logs" / "version_0" / "metrics.csv", [
        {"step": 0, "train/loss": 2.0, "reward/mean": 0.1, "completion/len_mean": 30},
        {"step": 1, "train/loss": 1.5, "reward/mean": 0.2, "completion/len_mean": 28},
        {"step": 2, "train/loss": 9.9, "val/accuracy": 0.3},  # redone by version_1 after a resume
    ])
    _csv(run / "logs" / "version_1" / "metrics.csv", [{"step": 2, "train/loss": 1.0, "val/accuracy": 0.5}])
    series = read_csv_logs(run)
    assert series["run"]["train/loss"] == {0: 2.0, 1: 1.5, 2: 1.0}
    assert series["run"]["val/accuracy"] == {2: 0.5}
    written = plot_run(run, tmp_path / "plots")
    assert sorted(p.name for p in written) == ["accuracy.png", "completion_length.png", "loss.png", "reward.png"]
    assert all(_is_png(p) and p.stat().st_size > 5000 for p in written)  # no KL logged: no kl.png


def test_tensorboard_events_and_pipeline_folders(tmp_path: Path) -> None:
    from torch.utils.tensorboard import SummaryWriter

    writer = SummaryWriter(str(tmp_path / "pipe" / "1_grpo" / "logs" / "version_0"))
    for step in range(4):
        writer.add_scalar("train/kl", 0.01 * step, step)
        writer.add_scalar("train/loss", 1.0 / (step + 1), step)
    writer.close()
    _csv(tmp_path / "pipe" / "0_sft" / "logs" / "version_0" / "metrics.csv", [{"step": 0, "train/loss": 3.0}])
    series = read_tensorboard_logs(tmp_path / "pipe", read_csv_logs(tmp_path / "pipe"))
    assert series["1_grpo"]["train/kl"][3] == pytest.approx(0.03)
    assert series["0_sft"]["train/loss"] == {0: 3.0}
    written = plot_run(tmp_path / "pipe")
    assert sorted(p.name for p in written) == ["kl.png", "loss.png"]
    assert all(p.parent == tmp_path / "pipe" / "plots" for p in written)


def test_command_line_and_bar_chart(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.syspath_prepend(str(ROOT / "tools"))
    tool = importlib.import_module("plot_run")
    assert tool.main([str(tmp_path / "missing")]) == 2
    (tmp_path / "empty").mkdir()
    assert tool.main([str(tmp_path / "empty")]) == 1
    _csv(tmp_path / "r" / "logs" / "version_0" / "metrics.csv", [{"step": 0, "train/loss": 1.0}])
    assert tool.main([str(tmp_path / "r"), "--out", str(tmp_path / "o")]) == 0
    assert (tmp_path / "o" / "loss.png").is_file()
    png = bar_chart(["base", "SFT"], [0.0, 0.42], tmp_path / "bars.png", title="t", notes="n")
    assert _is_png(png)
