"""PNG figures: training curves of a run (CSV logger and TensorBoard logs) and accuracy bar charts.

``plot_run(run_dir, out_dir)`` finds every ``metrics.csv`` and TensorBoard event file under ``run_dir``; files of the
same run (``<run>/logs/version_N``: a resumed run writes a new version) are merged by step, later versions winning;
several runs under one folder (a pipeline's stages) are drawn as separate lines. One PNG per group of metrics,
skipping groups with no data: ``loss`` (``*/loss``), ``reward`` (``reward/*mean``), ``accuracy`` (``*accuracy*``
outside ``reward/``), ``completion_length`` (``completion/len_*``) and ``kl`` (``*/kl``, and the distillation
divergence ``*/kd``). matplotlib runs headless (Agg).
"""

from __future__ import annotations

import csv
import re
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path

GROUPS: dict[str, re.Pattern[str]] = {
    "loss": re.compile(r"(^|/)loss$"),
    "reward": re.compile(r"^reward/(.+_)?mean$"),
    "accuracy": re.compile(r"^(?!reward/).*accuracy"),
    "completion_length": re.compile(r"^completion/len_(mean|max)$"),
    "kl": re.compile(r"(^|/)(kl|kd)$"),
}
Series = dict[str, dict[str, dict[int, float]]]  # run -> metric -> step -> value


def _run_name(path: Path, root: Path) -> str:
    rel = path.relative_to(root).parts
    head = rel[: rel.index("logs")] if "logs" in rel else rel[:-2]
    return "/".join(head) or root.name


def _version(path: Path) -> int:
    m = re.search(r"version_(\d+)", str(path))
    return int(m.group(1)) if m else 0


def read_csv_logs(root: Path) -> Series:
    series: Series = defaultdict(lambda: defaultdict(dict))
    for path in sorted(root.rglob("metrics.csv"), key=_version):
        run = _run_name(path, root)
        with path.open(newline="") as f:
            for row in csv.DictReader(f):
                step = row.get("step")
                if not step:
                    continue
                for key, value in row.items():
                    if key in ("step", "epoch") or value in (None, ""):
                        continue
                    try:
                        series[run][key][int(float(step))] = float(value)
                    except ValueError:
                        continue
    return series


def read_tensorboard_logs(root: Path, series: Series) -> Series:
    files = sorted(root.rglob("events.out.tfevents.*"), key=_version)
    if not files:
        return series
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    for path in files:
        acc = EventAccumulator(str(path), size_guidance={"scalars": 0})
        acc.Reload()
        run = _run_name(path, root)
        for tag in acc.Tags().get("scalars", []):
            for event in acc.Scalars(tag):
                series[run][tag][int(event.step)] = float(event.value)
    return series


def plot_run(run_dir: str | Path, out_dir: str | Path | None = None) -> list[Path]:
    """Write one PNG per metric group with data; returns the written paths."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    root = Path(run_dir)
    if not root.exists():
        raise FileNotFoundError(f"run folder {root} does not exist")
    out = Path(out_dir) if out_dir else root / "plots"
    series = read_tensorboard_logs(root, read_csv_logs(root))
    written = []
    for group, pattern in GROUPS.items():
        lines = [(run, key, points) for run, metrics in sorted(series.items())
                 for key, points in sorted(metrics.items()) if pattern.search(key) and points]
        if not lines:
            continue
        fig, ax = plt.subplots(figsize=(7, 4))
        for run, key, points in lines:
            steps = sorted(points)
            label = key if len(series) == 1 else f"{run}: {key}"
            ax.plot(steps, [points[s] for s in steps], marker="." if len(steps) < 30 else None, label=label)
        ax.set_xlabel("step")
        ax.set_title(f"{group.replace('_', ' ')} ({root.name})")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
        fig.tight_layout()
        out.mkdir(parents=True, exist_ok=True)
        path = out / f"{group}.png"
        fig.savefig(path, dpi=110)
        plt.close(fig)
        written.append(path)
    return written


def bar_chart(names: Sequence[str], values: Sequence[float], path: str | Path, *, title: str,
              ylabel: str = "accuracy (%)", notes: str = "",
              intervals: Sequence[tuple[float, float]] | None = None) -> Path:
    """A labelled bar chart of percentages (``values`` and ``intervals`` (low, high) in [0, 1])."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(max(6.0, 1.1 * len(names)), 4.2))
    yerr = None
    if intervals is not None:
        yerr = [[100 * (v - lo) for v, (lo, _) in zip(values, intervals, strict=True)],
                [100 * (hi - v) for v, (_, hi) in zip(values, intervals, strict=True)]]
    bars = ax.bar(range(len(names)), [100 * v for v in values], color="tab:blue", yerr=yerr, capsize=3,
                  ecolor="0.4")
    tops = [hi for _, hi in intervals] if intervals is not None else list(values)
    for bar, v, t in zip(bars, values, tops, strict=True):
        ax.text(bar.get_x() + bar.get_width() / 2, 100 * t + 0.5, f"{100 * v:.1f}", ha="center", fontsize=8)
    ax.set_xticks(range(len(names)), names, rotation=20, ha="right", fontsize=8)
    ax.set_ylabel(ylabel)
    top = max((hi for _, hi in intervals), default=0) if intervals is not None else max(values, default=0)
    ax.set_ylim(0, max(5.0, 100 * top * 1.15))
    ax.set_title(title, fontsize=10)
    if notes:
        fig.text(0.01, 0.01, notes, fontsize=6, va="bottom")
    fig.tight_layout(rect=(0, 0.06 if notes else 0, 1, 1))
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=120)
    plt.close(fig)
    return out
