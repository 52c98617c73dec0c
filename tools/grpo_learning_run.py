"""GRPO learning run (an experiment, not a benchmark): SmolLM2-135M-Instruct on built-in one-step word problems
(add/subtract up to 20) with the instruction "Solve the problem in one line. Put your final answer within
\\boxed{}."; held-out accuracy before and after, wall time, reward curve (docs/results.md).

Held-out set: 200 built-in level-1 problems with seed 99 (training prompts use seed 11: a different stream).
Evaluation: ``tools/evaluate.py`` (greedy, 128 new tokens, bf16 autocast). Training: ``python -m srlm_pl fit`` with
``GRPOModule`` (G = 8, 8 prompts per step, 128 new tokens, temperature 1.0, beta 0, DAPO, clip-higher, dynamic
sampling with one refill round, lr ``--lr`` constant after 3 warm-up steps) for ``--minutes`` of wall time
(``trainer.max_time``). Output under ``runs/grpo_learn`` (replaced on every run), the result as a final JSON line.

    python tools/grpo_learning_run.py --minutes 20 --lr 2e-5
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import yaml
from benchlib import common

INSTRUCTION = "Solve the problem in one line. Put your final answer within \\boxed{}."
HELD_OUT = ["--dataset", "builtin", "--builtin_level", "1", "--builtin_num", "200", "--builtin_seed", "99"]


def evaluate(model: str, out: Path) -> dict[str, Any]:
    cmd = [sys.executable, str(common.ROOT / "tools" / "evaluate.py"), "--model", model, *HELD_OUT,
           "--prompt_style", "boxed", "--instruction", INSTRUCTION, "--max_new_tokens", "128",
           "--precision", "bf16", "--batch_size", "50", "--out", str(out), "--no_progress"]
    subprocess.run(cmd, check=True, env={**os.environ, "HF_HUB_OFFLINE": "1"})
    return json.loads((out / "summary.json").read_text())


def grpo_config(root: Path, minutes: float, lr: float) -> Path:
    hours, rest = divmod(int(minutes * 60), 3600)
    cfg = {
        "seed_everything": 0,
        "trainer": {"accelerator": "cpu", "devices": 1, "precision": "bf16-mixed", "max_steps": 100000,
                    "max_time": f"00:{hours:02d}:{rest // 60:02d}:{rest % 60:02d}", "log_every_n_steps": 1,
                    "limit_val_batches": 0, "num_sanity_val_steps": 0, "default_root_dir": str(root),
                    "enable_progress_bar": False,
                    "callbacks": [{"class_path": "srlm_pl.callbacks.Checkpoint",
                                   "init_args": {"every_n_train_steps": 50}},
                                  {"class_path": "srlm_pl.HFExport", "init_args": {}},
                                  {"class_path": "srlm_pl.callbacks.SampleLogger",
                                   "init_args": {"every_n_steps": 5}}]},
        "model": {"class_path": "srlm_pl.GRPOModule", "init_args": {
            "policy": {"name_or_path": str(common.SMOLLM2)},
            "rewards": [{"class_path": "srlm_pl.verifiers.AccuracyReward"}],
            "num_generations": 8, "max_new_tokens": 128, "temperature": 1.0, "beta": 0.0,
            "eps_low": 0.2, "eps_high": 0.28, "loss_aggregation": "dapo", "dynamic_sampling": True,
            "max_refill_rounds": 1,
            "optimizer": {"class_path": "srlm_pl.optim.AdamW", "init_args": {"lr": lr}},
            "scheduler": {"class_path": "srlm_pl.optim.WarmupConstant", "init_args": {"warmup": 3}}}},
        "data": {"class_path": "srlm_pl.PromptDataModule", "init_args": {
            "train": {"path": "builtin", "builtin": {"level": 1, "num_problems": 4000, "seed": 11}},
            "template": {"style": "chat", "instruction": INSTRUCTION},
            "batch_size": 8, "max_length": 256}},
    }
    root.mkdir(parents=True, exist_ok=True)
    path = root / "grpo_learn.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def curve(root: Path, key: str) -> list[float]:
    values: dict[int, float] = {}
    for path in sorted(root.glob("logs/version_*/metrics.csv")):
        with path.open() as f:
            for row in csv.DictReader(f):
                if row.get(key):
                    values[int(row["step"])] = float(row[key])
    return [values[k] for k in sorted(values)]


def fifths(values: list[float]) -> list[float]:
    """Means of five consecutive, equal-as-possible slices of a curve."""
    if not values:
        return []
    n = len(values)
    bounds = [round(i * n / 5) for i in range(6)]
    return [round(sum(values[a:b]) / max(b - a, 1), 4) for a, b in zip(bounds, bounds[1:], strict=False) if b > a]


def learn(minutes: float, lr: float) -> dict[str, Any]:
    root = common.ROOT / "runs" / "grpo_learn"
    if root.exists():  # the evaluations resume from existing predictions: never mix in an earlier run's
        shutil.rmtree(root)
    t0 = time.perf_counter()
    before = evaluate(str(common.SMOLLM2), root / "eval_before")
    t_eval = time.perf_counter() - t0
    t1 = time.perf_counter()
    subprocess.run([sys.executable, "-m", "srlm_pl", "fit", "--config", str(grpo_config(root, minutes, lr))],
                   check=True, cwd=common.ROOT, env={**os.environ, "HF_HUB_OFFLINE": "1"})
    t_train = time.perf_counter() - t1
    after = evaluate(str(root / "export" / "final"), root / "eval_after")
    rewards = curve(root, "reward/mean")
    k = max(1, len(rewards) // 5)
    zero_var = curve(root, "train/zero_variance_frac")
    lengths = curve(root, "completion/len_mean")
    return {
        "experiment": "grpo_learning_run", "model": "SmolLM2-135M-Instruct",
        "task": "built-in level 1 (200 held-out, seed 99)",
        "accuracy_before": before["accuracy"], "accuracy_after": after["accuracy"],
        "no_answer_before": before["no_answer_rate"], "no_answer_after": after["no_answer_rate"],
        "lr": lr, "minutes": minutes, "train_wall_s": round(t_train, 1), "eval_wall_s": round(t_eval, 1),
        "steps_logged": len(rewards),
        "reward_first_fifth": sum(rewards[:k]) / k if rewards else None,
        "reward_last_fifth": sum(rewards[-k:]) / k if rewards else None,
        "zero_variance_frac_mean": sum(zero_var) / len(zero_var) if zero_var else None,
        "completion_len_first_last": [lengths[0], lengths[-1]] if lengths else None,
        "train_accuracy_per_fifth": fifths(curve(root, "train/accuracy")),
        "reward_per_fifth": fifths(rewards),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--minutes", type=float, default=20.0, help="training time budget")
    ap.add_argument("--lr", type=float, default=2e-5, help="learning rate")
    ap.add_argument("--json", help="also write the result here")
    a = ap.parse_args()
    if not common.ensure_assets():
        sys.exit("needs SmolLM2-135M-Instruct: python ../shared/bench/assets.py /tmp/probe")
    result = learn(a.minutes, a.lr)
    print(common.table([result], ["accuracy_before", "accuracy_after", "train_wall_s", "steps_logged",
                                  "reward_first_fifth", "reward_last_fifth", "zero_variance_frac_mean"]))
    (common.ROOT / "runs" / "grpo_learn" / "learn_result.json").write_text(json.dumps(result, indent=2))
    common.emit(result, a.json)


if __name__ == "__main__":
    main()
