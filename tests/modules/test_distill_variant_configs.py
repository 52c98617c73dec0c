"""The issue-19 distillation configs: the GSM8K ones parse through the CLI (not run: hub models and a GPU);
``distill_skew_tiny.yaml`` runs two steps through the CLI; ``distill_topk_tiny.yaml`` runs two steps after its
store is built by ``tools/make_teacher_logits.py``'s command line (the command its header documents)."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest
import yaml

from srlm_pl.cli import main

ROOT = Path(__file__).resolve().parents[2]
_spec = importlib.util.spec_from_file_location("make_teacher_logits_cli", ROOT / "tools" / "make_teacher_logits.py")
mtl = importlib.util.module_from_spec(_spec)
sys.modules["make_teacher_logits_cli"] = mtl
_spec.loader.exec_module(mtl)

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(autouse=True)
def _plain_argv(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sys, "argv", ["srlm_pl"])


def _print_config(name: str, capsys) -> dict:
    with pytest.raises(SystemExit) as exit_info:
        main(["fit", "--config", str(ROOT / "configs" / name), "--print_config"])
    assert exit_info.value.code in (0, None)
    return yaml.safe_load(capsys.readouterr().out)


def test_distill_topk_gsm8k_parses(capsys):
    cfg = _print_config("distill_topk_gsm8k.yaml", capsys)
    args = cfg["model"]["init_args"]
    assert args["teacher_logits"] == "runs/distill_topk_gsm8k/teacher_top64"
    assert args["teacher"]["name_or_path"] == "Qwen/Qwen2.5-1.5B-Instruct"
    assert args["policy"]["name_or_path"] == "Qwen/Qwen2.5-0.5B-Instruct"
    assert (args["lmbda"], args["seq_kd"], args["divergence"], args["beta"]) == (0.0, False, "jsd", 0.0)
    assert cfg["data"]["init_args"]["packing"] is False


def test_distill_skew_gsm8k_parses(capsys):
    args = _print_config("distill_skew_gsm8k.yaml", capsys)["model"]["init_args"]
    assert (args["divergence"], args["skew_alpha"], args["teacher_logits"]) == ("skew_rkl", 0.1, None)
    assert args["teacher"]["name_or_path"] == "Qwen/Qwen2.5-1.5B-Instruct"


def _tiny_overrides(folder: Path, root: Path) -> list[str]:
    return ["--model.init_args.teacher.name_or_path", str(folder), "--model.init_args.policy.name_or_path", str(folder),
            "--data.init_args.train.builtin.num_problems", "16", "--data.init_args.val.builtin.num_problems", "8",
            "--data.init_args.batch_size", "4", "--trainer.default_root_dir", str(root)]


def _fit_two_steps(config: str, extra: list[str], root: Path) -> list[str]:
    main(["fit", "--config", str(ROOT / "configs" / config), *extra, "--model.init_args.val_generation.num_prompts",
          "4", "--trainer.max_steps", "2", "--trainer.val_check_interval", "2", "--trainer.limit_val_batches", "1",
          "--trainer.log_every_n_steps", "1", "--trainer.enable_progress_bar", "false"])
    return (next((root / "logs").glob("version_*")) / "metrics.csv").read_text().splitlines()[0].split(",")


def test_distill_skew_tiny_runs_through_the_cli(teacher_dir, tmp_path):
    cfg = yaml.safe_load((ROOT / "configs" / "distill_skew_tiny.yaml").read_text())["model"]["init_args"]
    assert (cfg["divergence"], cfg["skew_alpha"]) == ("skew_kl", 0.1)
    header = _fit_two_steps("distill_skew_tiny.yaml", [*_tiny_overrides(teacher_dir, tmp_path),
                                                       "--model.init_args.max_new_tokens", "8"], tmp_path)
    assert {"train/loss", "train/kd", "val/loss"} <= set(header)


def test_distill_topk_tiny_runs_from_a_store_built_by_the_tool(teacher_dir, tmp_path, capsys):
    store = tmp_path / "store"
    config = str(ROOT / "configs" / "distill_topk_tiny.yaml")
    extra = _tiny_overrides(teacher_dir, tmp_path)
    mtl.main(["--config", config, "-k", "16", "--out", str(store), "--", *extra])
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary["k"] == 16 and set(summary["splits"]) == {"train", "val"} and summary["splits"]["train"] > 0
    tokens = sum(summary["splits"].values())
    # float16 log-probs: per token 16 x (4 + 2) bytes + tail and target (4 + 4), plus headers and the manifest
    assert 104 * tokens < summary["bytes"] < 104 * tokens + 40_000
    header = _fit_two_steps("distill_topk_tiny.yaml", [*extra, "--model.init_args.teacher_logits", str(store)],
                            tmp_path)
    assert {"train/loss", "train/kd", "val/loss", "val/kd"} <= set(header)
