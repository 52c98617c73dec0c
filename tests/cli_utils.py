"""Helpers to run the CLI in-process on small configs."""

from __future__ import annotations

import csv
from pathlib import Path

import yaml

from srlm_pl.cli import main

SMALL_TINY = {"hidden_size": 64, "num_layers": 2, "num_heads": 4, "num_kv_heads": 2, "intermediate_size": 128}


def sft_config(root: Path, *, max_steps: int = 6, every: int | None = 2, lora: dict | None = None,
               val_generation: dict | None = None, packing: bool = False, extra_callbacks: list | None = None) -> Path:
    callbacks = [{"class_path": "srlm_pl.callbacks.Checkpoint", "init_args": {"every_n_train_steps": every}},
                 {"class_path": "srlm_pl.HFExport", "init_args": {}}] + (extra_callbacks or [])
    cfg = {
        "seed_everything": 0,
        "trainer": {"accelerator": "cpu", "devices": 1, "max_steps": max_steps, "log_every_n_steps": 1,
                    "enable_progress_bar": False, "enable_model_summary": False, "num_sanity_val_steps": 0,
                    "limit_val_batches": 1, "val_check_interval": max_steps, "check_val_every_n_epoch": None,
                    "default_root_dir": str(root), "callbacks": callbacks},
        "model": {"class_path": "srlm_pl.SFTModule", "init_args": {
            "policy": {"name_or_path": "tiny", "tiny": SMALL_TINY, "lora": lora},
            "optimizer": {"class_path": "srlm_pl.optim.AdamW", "init_args": {"lr": 3e-3}},
            "val_generation": val_generation}},
        "data": {"class_path": "srlm_pl.SFTDataModule", "init_args": {
            "train": {"path": "builtin", "builtin": {"num_problems": 40, "seed": 1}},
            "val": {"path": "builtin", "builtin": {"num_problems": 8, "seed": 2}},
            "batch_size": 4, "max_length": 96, "packing": packing}},
    }
    path = root / "config.in.yaml"
    root.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(cfg))
    return path


def grpo_config(root: Path, *, max_steps: int = 3, rewards: list | None = None, every: int | None = None,
                extra_callbacks: list | None = None, policy: dict | None = None, **model_args) -> Path:
    callbacks = [{"class_path": "srlm_pl.callbacks.Checkpoint", "init_args": {"every_n_train_steps": every}},
                 {"class_path": "srlm_pl.callbacks.SampleLogger", "init_args": {"every_n_steps": 1}},
                 {"class_path": "srlm_pl.HFExport", "init_args": {}}]
    init = {"policy": policy or {"name_or_path": "tiny", "tiny": SMALL_TINY},
            "rewards": rewards or [{"class_path": "reward_fns.ContainsDigit"}],
            "num_generations": 4, "max_new_tokens": 8, "seed": 0,
            "optimizer": {"class_path": "srlm_pl.optim.AdamW", "init_args": {"lr": 1e-2}}, **model_args}
    cfg = {
        "seed_everything": 0,
        "trainer": {"accelerator": "cpu", "devices": 1, "max_steps": max_steps, "log_every_n_steps": 1,
                    "enable_progress_bar": False, "enable_model_summary": False, "num_sanity_val_steps": 0,
                    "limit_val_batches": 0, "default_root_dir": str(root),
                    "callbacks": callbacks + (extra_callbacks or [])},
        "model": {"class_path": "srlm_pl.GRPOModule", "init_args": init},
        "data": {"class_path": "srlm_pl.PromptDataModule", "init_args": {
            "train": {"path": "builtin", "builtin": {"num_problems": 64, "seed": 1}},
            "batch_size": 4, "max_length": 96}},
    }
    root.mkdir(parents=True, exist_ok=True)
    path = root / "config.in.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def distill_config(root: Path, teacher: Path, *, max_steps: int = 4, batch_size: int = 8, **model_args) -> Path:
    """Off-policy KD from ``teacher`` (an exported tiny model) into a student made of its layers 0 and 2."""
    cfg = {
        "seed_everything": 0,
        "trainer": {"accelerator": "cpu", "devices": 1, "max_steps": max_steps, "log_every_n_steps": 1,
                    "enable_progress_bar": False, "enable_model_summary": False, "num_sanity_val_steps": 0,
                    "limit_val_batches": 0, "default_root_dir": str(root),
                    "callbacks": [{"class_path": "srlm_pl.HFExport", "init_args": {}}]},
        "model": {"class_path": "srlm_pl.DistillModule", "init_args": {
            "policy": {"name_or_path": str(teacher), "layer_stride": 2},
            "teacher": {"name_or_path": str(teacher)}, "beta": 0.5, "lmbda": 0.0, "loss_chunk_size": 64,
            "optimizer": {"class_path": "srlm_pl.optim.AdamW", "init_args": {"lr": 1e-3}}, **model_args}},
        "data": {"class_path": "srlm_pl.SFTDataModule", "init_args": {
            "train": {"path": "builtin", "builtin": {"num_problems": 64, "seed": 1}},
            "batch_size": batch_size, "max_length": 96}},
    }
    root.mkdir(parents=True, exist_ok=True)
    path = root / "config.in.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def fit(config: Path, *extra: str):
    return main(["fit", "--config", str(config), *extra])


def logged(root: Path, key: str) -> dict[int, float]:
    """step -> value of a metric over every CSV log version under root/logs (later versions win)."""
    out: dict[int, float] = {}
    for metrics in sorted((root / "logs").glob("version_*/metrics.csv"), key=lambda p: int(p.parent.name[8:])):
        with metrics.open() as f:
            for row in csv.DictReader(f):
                if row.get(key):
                    out[int(row["step"])] = float(row[key])
    return out


def edit_config(config: Path, fn) -> Path:  # noqa: ANN001 (a function of the config dict)
    """Apply ``fn`` to the YAML config dict in place and write it back."""
    cfg = yaml.safe_load(config.read_text())
    fn(cfg)
    config.write_text(yaml.safe_dump(cfg))
    return config


def add_callbacks(config: Path, *callbacks: dict) -> Path:
    return edit_config(config, lambda c: c["trainer"].setdefault("callbacks", []).extend(callbacks))


def set_batch_size(config: Path, batch_size: int) -> Path:
    return edit_config(config, lambda c: c["data"]["init_args"].update(batch_size=batch_size))
