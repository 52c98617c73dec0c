"""The distillation configs: ``distill_gsm8k.yaml`` parses through the CLI (not run: it needs the hub models and
a GPU); ``distill_tiny.yaml`` runs two steps end to end through the CLI on a small trained teacher."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import yaml

from srlm_pl.cli import main

ROOT = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.usefixtures("one_torch_thread")  # conftest.py: small ops, no thread pool


@pytest.fixture(autouse=True)
def _plain_argv(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sys, "argv", ["srlm_pl"])  # LightningCLI(args=...) warns about pytest's own argv


def test_distill_gsm8k_parses(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["fit", "--config", str(ROOT / "configs" / "distill_gsm8k.yaml"), "--print_config"])
    assert exit_info.value.code in (0, None)
    cfg = yaml.safe_load(capsys.readouterr().out)
    model = cfg["model"]
    assert model["class_path"] == "srlm_pl.DistillModule"
    args = model["init_args"]
    assert args["teacher"]["name_or_path"] == "Qwen/Qwen2.5-1.5B-Instruct" and args["teacher"]["dtype"] == "bfloat16"
    assert args["policy"]["name_or_path"] == "Qwen/Qwen2.5-0.5B-Instruct"
    assert (args["beta"], args["lmbda"], args["alpha"]) == (0.5, 0.5, 0.1)
    assert cfg["trainer"]["precision"] == "bf16-mixed"
    data = cfg["data"]["init_args"]
    assert data["train"]["path"] == "openai/gsm8k" and data["train"]["config"] == "main"
    assert data["packing"] is False


def test_distill_tiny_runs_through_the_cli(teacher_dir, tmp_path):
    folder = str(teacher_dir)
    main(["fit", "--config", str(ROOT / "configs" / "distill_tiny.yaml"),
          "--model.init_args.teacher.name_or_path", folder, "--model.init_args.policy.name_or_path", folder,
          "--model.init_args.val_generation.num_prompts", "4", "--model.init_args.lmbda", "0.5",
          "--model.init_args.max_new_tokens", "8",
          "--data.init_args.train.builtin.num_problems", "32", "--data.init_args.val.builtin.num_problems", "8",
          "--data.init_args.batch_size", "4", "--trainer.max_steps", "2", "--trainer.val_check_interval", "2",
          "--trainer.limit_val_batches", "1", "--trainer.log_every_n_steps", "1",
          "--trainer.default_root_dir", str(tmp_path),
          "--trainer.enable_progress_bar", "false"])
    export = tmp_path / "export" / "final"
    assert json.loads((export / "config.json").read_text())["num_hidden_layers"] == 2  # the student, not the teacher
    metrics = (next((tmp_path / "logs").glob("version_*")) / "metrics.csv").read_text().splitlines()
    header = metrics[0].split(",")
    for name in ("train/loss", "train/kd", "train/ce", "train/on_policy", "lr", "val/loss", "val/accuracy"):
        assert name in header, header
    assert (tmp_path / "checkpoints" / "last.ckpt").is_file()
