"""The study's pipeline validates (every recipe's config + overrides), and its report (table, JSON, PNG) is right."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from srlm_pl.pipelines import validate
from srlm_pl.pipelines.study import StudyConfig, study_pipeline, wilson, write_report

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("teacher", ["sft", "large"])
def test_study_stages_validate_and_chain(teacher: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(ROOT)
    cfg = StudyConfig(teacher=teacher, sft_steps=7, grpo_steps=3, grpo_batches=5)
    pipe = study_pipeline(cfg, tmp_path / "base")
    names = [s.name for s in pipe.stages]
    assert names == (["teacher"] if teacher == "large" else []) + ["sft", "lora_sft", "kd", "grpo", "sft_grpo",
                                                                  "kd_grpo"]
    args = dict(zip(names, validate(pipe, tmp_path / "out"), strict=True))
    out = tmp_path / "out"
    for name in ("sft", "lora_sft", "kd", "grpo"):
        assert f"--model.init_args.policy.name_or_path={tmp_path / 'base'}" in args[name]
    assert "--trainer.max_steps=7" in args["sft"] and "--trainer.limit_train_batches=5" in args["grpo"]
    assert args["sft_grpo"][-1] == str(out / f"{names.index('sft')}_sft" / "export" / "final")
    assert args["kd_grpo"][-1] == str(out / f"{names.index('kd')}_kd" / "export" / "final")
    teacher_stage = "teacher" if teacher == "large" else "sft"
    expected = f"--model.init_args.teacher.name_or_path={out / f'{names.index(teacher_stage)}_{teacher_stage}'}"
    assert f"{expected}/export/final" in args["kd"]
    assert pipe.evaluation["prompt_style"] == "question" and pipe.evaluation["builtin"].seed == 3


def _summary(acc: float, n: int = 200) -> dict:
    return {"accuracy": acc, "problems": n, "no_answer_rate": 0.1, "mean_completion_tokens": 20.0}


def test_report_files(tmp_path: Path) -> None:
    rows = [{"recipe": "base", "name": "base", "eval": _summary(0.0), "train_seconds": 0.0},
            {"recipe": "sft", "name": "SFT", "eval": _summary(0.5), "train_seconds": 61.2},
            {"recipe": "grpo", "name": "GRPO", "eval": _summary(0.0), "train_seconds": 30.0,
             "grpo": {"reward_mean": 0.0, "batches": 5, "skipped_batches": 5.0}}]
    report = {"config": {"model": "tiny", "eval_problems": 200}, "wall_seconds": 99.0, "rows": rows, "notes": ["n1"]}
    write_report(report, tmp_path)
    table = (tmp_path / "study.md").read_text()
    assert "| SFT | 50.0% | 43.1–56.9 | 10.0% | 20.0 | 61 | - |" in table
    assert "| GRPO | 0.0% | 0.0–1.9 | 10.0% | 20.0 | 30 | 0.000 (5/5 batches skipped) |" in table
    assert "Wall time of the run that wrote this table: 99 s" in table and "of all recipes: 91 s" in table
    assert "- n1" in table
    assert json.loads((tmp_path / "study.json").read_text())["rows"][1]["eval"]["accuracy"] == 0.5
    assert (tmp_path / "study.png").read_bytes()[:4] == b"\x89PNG"


def test_wilson_interval() -> None:
    lo, hi = wilson(0.5, 200)
    assert lo == pytest.approx(0.4314, abs=1e-4) and hi == pytest.approx(0.5686, abs=1e-4)
    assert wilson(0.0, 200)[0] == 0.0 and wilson(1.0, 10)[1] == 1.0
