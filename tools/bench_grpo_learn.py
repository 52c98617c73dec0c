"""GRPO learning run: SmolLM2-135M-Instruct on built-in one-step word problems (add/subtract up to 20), where it
starts at 38% greedy accuracy (100-problem probe) when asked to "Solve the problem in one line. Put your final answer
within \\boxed{}."; held-out accuracy before and after, wall time, reward curve. Called by
``tools/bench_grpo.py --learn``.

Held-out set: 200 built-in level-1 problems with seed 99 (training prompts use seed 11: a different stream).
Evaluation: ``tools/evaluate.py`` (greedy, 128 new tokens, bf16 autocast). Training: ``python -m srlm_pl fit`` with
``GRPOModule`` (G = 8, 8 prompts per step, 128 new tokens, temperature 1.0, beta 0, DAPO, clip-higher, dynamic
sampling with one refill round, lr ``--lr`` (2e-5) constant after 3 warm-up steps) for ``--minutes`` of wall time
(``trainer.max_time``). Probes of other prompts on the same model (100 problems, greedy, 128 tokens): the
step-by-step ``\\boxed{}`` instruction 12.5% (200 problems; long answers that keep computing after the right
number), "The answer is N" 4%, SVAMP with the ``\\boxed{}`` instruction 6% (50 problems).
"""

from __future__ import annotations

import argparse
import csv
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench_common as bc  # noqa: E402

INSTRUCTION = "Solve the problem in one line. Put your final answer within \\boxed{}."
HELD_OUT = ["--dataset", "builtin", "--builtin_level", "1", "--builtin_num", "200", "--builtin_seed", "99"]


def evaluate(model: str, out: Path) -> dict[str, Any]:
    cmd = [sys.executable, str(bc.ROOT / "tools" / "evaluate.py"), "--model", model, *HELD_OUT,
           "--prompt_style", "boxed", "--instruction", INSTRUCTION, "--max_new_tokens", "128",
           "--precision", "bf16", "--batch_size", "50", "--out", str(out), "--no_progress"]
    subprocess.run(cmd, check=True, env={**__import__("os").environ, "HF_HUB_OFFLINE": "1"})
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
            "policy": {"name_or_path": str(bc.SMOLLM2)},
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


def _curve(root: Path, key: str) -> list[float]:
    values: dict[int, float] = {}
    for path in sorted(root.glob("logs/version_*/metrics.csv")):
        with path.open() as f:
            for row in csv.DictReader(f):
                if row.get(key):
                    values[int(row["step"])] = float(row[key])
    return [values[k] for k in sorted(values)]


def _fifths(values: list[float]) -> list[float]:
    """Means of five consecutive, equal-as-possible slices of a curve."""
    if not values:
        return []
    n = len(values)
    bounds = [round(i * n / 5) for i in range(6)]
    return [round(sum(values[a:b]) / max(b - a, 1), 4) for a, b in zip(bounds, bounds[1:], strict=False) if b > a]


def learn(a: argparse.Namespace) -> None:
    if not bc.ensure_assets():
        sys.exit("needs SmolLM2-135M-Instruct (see tools/bench_common.py)")
    root = bc.ROOT / "runs" / "grpo_learn"
    if root.exists():  # the evaluations resume from existing predictions: never mix in an earlier run's
        shutil.rmtree(root)
    t0 = time.perf_counter()
    before = evaluate(str(bc.SMOLLM2), root / "eval_before")
    t_eval = time.perf_counter() - t0
    t1 = time.perf_counter()
    subprocess.run([sys.executable, "-m", "srlm_pl", "fit", "--config", str(grpo_config(root, a.minutes, a.lr))],
                   check=True, cwd=bc.ROOT, env={**__import__("os").environ, "HF_HUB_OFFLINE": "1"})
    t_train = time.perf_counter() - t1
    after = evaluate(str(root / "export" / "final"), root / "eval_after")
    rewards = _curve(root, "reward/mean")
    k = max(1, len(rewards) // 5)
    result = {
        "bench": "grpo_learn", "model": "SmolLM2-135M-Instruct", "task": "built-in level 1 (200 held-out, seed 99)",
        "accuracy_before": before["accuracy"], "accuracy_after": after["accuracy"],
        "no_answer_before": before["no_answer_rate"], "no_answer_after": after["no_answer_rate"],
        "lr": a.lr, "minutes": a.minutes,
        "train_wall_s": round(t_train, 1), "eval_wall_s": round(t_eval, 1), "steps_logged": len(rewards),
        "reward_first_fifth": sum(rewards[:k]) / k if rewards else None,
        "reward_last_fifth": sum(rewards[-k:]) / k if rewards else None,
        "zero_variance_frac_mean": (sum(z := _curve(root, "train/zero_variance_frac")) / len(z)) if rewards else None,
        "completion_len_first_last": [_curve(root, "completion/len_mean")[i] for i in (0, -1)] if rewards else None,
        "train_accuracy_per_fifth": _fifths(_curve(root, "train/accuracy")),
        "reward_per_fifth": _fifths(rewards),
    }
    print(bc.table([result], ["accuracy_before", "accuracy_after", "train_wall_s", "steps_logged",
                              "reward_first_fifth", "reward_last_fifth", "zero_variance_frac_mean"]))
    (root / "learn_result.json").write_text(json.dumps(result, indent=2))
    if a.json:
        Path(a.json).write_text(json.dumps(result, indent=2))
    print(json.dumps(result))
