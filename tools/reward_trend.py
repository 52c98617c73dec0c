"""Reward trend of a GRPO run from its CSV log: mean ``reward/mean`` and ``train/accuracy`` per window of
steps, and every ``val/accuracy``, so "does the reward rise?" is one command.

    python tools/reward_trend.py runs/grpo_tiny                # newest logs/version_*/metrics.csv
    python tools/reward_trend.py runs/grpo_tiny --windows 4 --json

Exit status 0 whether or not the reward rose; the last line (or ``--json``) carries ``first``, ``last`` and
``rise`` (mean reward of the last window minus the first).
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
from pathlib import Path
from typing import Any


def metrics_file(run: Path) -> Path:
    if run.is_file():
        return run
    files = sorted((run / "logs").glob("version_*/metrics.csv"), key=lambda p: int(p.parent.name.split("_")[-1]))
    if not files:
        sys.exit(f"no logs/version_*/metrics.csv under {run}")
    return files[-1]


def column(rows: list[dict[str, str]], name: str) -> list[tuple[int, float]]:
    return [(int(r["step"]), float(r[name])) for r in rows if r.get(name) not in (None, "")]


def trend(rows: list[dict[str, str]], windows: int) -> dict[str, Any]:
    reward, acc = column(rows, "reward/mean"), column(rows, "train/accuracy")
    if not reward:
        raise ValueError("no reward/mean values yet (a GRPO run? the CSV logger writes every 100 steps by default)")
    size = max(1, len(reward) // windows)
    out: dict[str, Any] = {"steps": len(reward), "windows": []}
    for i in range(0, len(reward) - size + 1, size):
        part = reward[i: i + size]
        acc_part = [a for s, a in acc if part[0][0] <= s <= part[-1][0]]
        out["windows"].append({"steps": f"{part[0][0]}-{part[-1][0]}",
                               "reward": sum(v for _, v in part) / len(part),
                               "train_accuracy": sum(acc_part) / len(acc_part) if acc_part else None})
    out["val_accuracy"] = column(rows, "val/accuracy")
    out["first"], out["last"] = out["windows"][0]["reward"], out["windows"][-1]["reward"]
    out["rise"] = out["last"] - out["first"]
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("run", type=Path, help="a run folder (trainer.default_root_dir) or a metrics.csv")
    ap.add_argument("--windows", type=int, default=6, help="number of equal windows of logged steps")
    ap.add_argument("--json", action="store_true")
    a = ap.parse_args()
    path = metrics_file(a.run)
    with path.open() as f:
        try:
            result = trend(list(csv.DictReader(f)), a.windows)
        except ValueError as err:
            sys.exit(f"{path}: {err}")
    if a.json:
        print(json.dumps(result))
        return
    print(f"{path}: {result['steps']} logged steps")
    print("| steps | reward/mean | train/accuracy |\n|---|---|---|")
    for w in result["windows"]:
        acc = "-" if w["train_accuracy"] is None else f"{w['train_accuracy']:.3f}"
        print(f"| {w['steps']} | {w['reward']:.3f} | {acc} |")
    print("val/accuracy:", ", ".join(f"step {s}: {v:.3f}" for s, v in result["val_accuracy"]) or "-")
    print(f"first window {result['first']:.3f} -> last window {result['last']:.3f} (rise {result['rise']:+.3f})")


if __name__ == "__main__":
    main()
