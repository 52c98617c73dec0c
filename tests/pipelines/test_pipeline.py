"""Pipelines: chaining two tiny stages through their exports, skip on rerun, resume of a failed stage from its
checkpoint, changed stages, and invalid stage configs caught before stage 1 starts."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
import torch
import yaml

from cli_utils import grpo_config, sft_config
from srlm_pl.pipelines import PipelineError, StageFailed, load_pipeline, run_pipeline

EVAL = {"dataset": "builtin", "builtin": {"num_problems": 4, "seed": 3}, "max_new_tokens": 4, "batch_size": 4,
        "prompt_style": "question"}


def _pipeline(path: Path, stages: list[dict], **top) -> Path:
    path.write_text(yaml.safe_dump({"name": "two", "evaluation": EVAL, "stages": stages, **top}))
    return path


def _first_logged_step(folder: Path, version: int) -> int:
    with (folder / "logs" / f"version_{version}" / "metrics.csv").open() as f:
        return min(int(row["step"]) for row in csv.DictReader(f) if row.get("step"))


def _versions(folder: Path) -> int:
    return len(list((folder / "logs").glob("version_*")))


def test_two_stages_chain_skip_on_rerun_and_resume_the_failed_stage(tmp_path: Path) -> None:
    sft = sft_config(tmp_path / "cfg_sft", max_steps=3, every=None)
    crash = {"class_path": "pipeline_crash.CrashOnceAtStep", "init_args": {"step": 2, "flag": str(tmp_path / "flag")}}
    grpo = grpo_config(tmp_path / "cfg_grpo", max_steps=3, every=1, extra_callbacks=[crash],
                       rewards=[{"class_path": "reward_fns.ContainsDigit"}])
    spec = _pipeline(tmp_path / "p.yaml", [{"name": "sft", "config": str(sft), "evaluate": True},
                                           {"name": "grpo", "config": str(grpo), "evaluate": True}])
    out = tmp_path / "out"
    with pytest.raises(StageFailed, match=r"(?s)stage 1 \(grpo\) failed.*simulated crash.*Rerun the same command"):
        run_pipeline(load_pipeline(spec), out, launcher="inprocess")
    assert (out / "0_sft" / "stage_done.json").is_file() and not (out / "1_grpo" / "stage_done.json").exists()
    last = out / "1_grpo" / "checkpoints" / "last.ckpt"
    assert torch.load(last, map_location="cpu", weights_only=False)["global_step"] == 2
    sft_versions = _versions(out / "0_sft")

    result = run_pipeline(load_pipeline(spec), out, launcher="inprocess")
    stages = {s["stage"]: s for s in result["stages"]}
    assert stages["sft"]["status"] == "skipped (done earlier)" and _versions(out / "0_sft") == sft_versions
    assert stages["grpo"]["status"] == "resumed and finished"
    assert json.loads((out / "1_grpo" / "stage_done.json").read_text())["resumed"] is True
    resumed_cfg = yaml.safe_load((out / "1_grpo" / "logs" / "version_1" / "config.yaml").read_text())
    assert resumed_cfg["ckpt_path"] == "last"
    assert _first_logged_step(out / "1_grpo", 1) == 2  # continued from the crashed run's step 2, not from 0
    assert resumed_cfg["model"]["init_args"]["policy"]["name_or_path"] == str(out / "0_sft" / "export" / "final")
    assert json.loads((out / "1_grpo" / "export" / "final" / "export_info.json").read_text())["global_step"] == 3
    for name in ("0_sft", "1_grpo"):
        summary = json.loads((out / name / "eval" / "summary.json").read_text())
        assert summary["problems"] == 4 and summary["model"] == str(out / name / "export" / "final")
    table = (out / "pipeline.md").read_text()
    assert "| 0_sft |" in table and "| 1_grpo |" in table and "| recipe | accuracy |" in table
    assert [s["stage"] for s in json.loads((out / "pipeline.json").read_text())["stages"]] == ["sft", "grpo"]

    again = run_pipeline(load_pipeline(spec), out, launcher="inprocess")
    assert {s["status"] for s in again["stages"]} == {"skipped (done earlier)"}
    assert _versions(out / "1_grpo") == 2

    changed = _pipeline(tmp_path / "p2.yaml", [{"name": "sft", "config": str(sft), "evaluate": True},
                                               {"name": "grpo", "config": str(grpo), "evaluate": True,
                                                "overrides": ["--trainer.max_steps=2"]}])
    with pytest.raises(PipelineError, match="already ran with other arguments.*--restart_from grpo"):
        run_pipeline(load_pipeline(changed), out, launcher="inprocess")
    redone = run_pipeline(load_pipeline(changed), out, launcher="inprocess", restart_from="grpo")
    assert [s["status"] for s in redone["stages"]] == ["skipped (done earlier)", "trained"]
    assert json.loads((out / "1_grpo" / "export" / "final" / "export_info.json").read_text())["global_step"] == 2


@pytest.mark.parametrize("override, message", [
    ("--model.init_args.no_such_argument=1", "no_such_argument"),
    ("--model.init_args.num_generations=1", "num_generations must be >= 2"),
])
def test_an_invalid_later_stage_fails_before_stage_one_starts(tmp_path: Path, override: str, message: str) -> None:
    sft = sft_config(tmp_path / "cfg_sft", max_steps=2, every=None)
    grpo = grpo_config(tmp_path / "cfg_grpo", max_steps=2)
    spec = _pipeline(tmp_path / "p.yaml", [{"name": "sft", "config": str(sft)},
                                           {"name": "grpo", "config": str(grpo), "overrides": [override]}])
    with pytest.raises(PipelineError, match=rf"(?s)stage 'grpo': invalid config.*{message}"):
        run_pipeline(load_pipeline(spec), tmp_path / "out", launcher="inprocess")
    assert not (tmp_path / "out").exists()


def test_bad_pipeline_files(tmp_path: Path) -> None:
    sft = str(sft_config(tmp_path / "cfg", max_steps=1, every=None))
    cases = [
        ([{"name": "a", "config": sft}, {"name": "a", "config": sft}], "used twice"),
        ([{"name": "a", "config": sft, "init": "b"}, {"name": "b", "config": sft}], "not an earlier stage"),
        ([{"name": "a", "config": sft, "overrides": ["--x={export:zzz}"]}], "refers to stage 'zzz'"),
        ([{"name": "a", "config": str(tmp_path / "missing.yaml")}], "does not exist"),
        ([{"name": "a", "config": sft, "colour": "red"}], "unknown keys"),
        ([{"name": "a b", "config": sft}], "must be letters"),
        ([{"name": "a"}], "has no config"),
        ([], "non-empty 'stages' list"),
    ]
    for stages, message in cases:
        with pytest.raises(PipelineError, match=message):
            load_pipeline(_pipeline(tmp_path / "bad.yaml", stages))
    with pytest.raises(PipelineError, match="evaluation: unknown keys"):
        load_pipeline(_pipeline(tmp_path / "bad.yaml", [{"name": "a", "config": sft}], evaluation={"datset": "x"}))
    spec = _pipeline(tmp_path / "ev.yaml", [{"name": "a", "config": sft, "evaluate": True}],
                     evaluation={"dataset": "gsm8k", "data_file": str(tmp_path / "none.jsonl")})
    with pytest.raises(PipelineError, match="evaluation settings.*does not exist"):
        run_pipeline(load_pipeline(spec), tmp_path / "out", launcher="inprocess")


def test_subprocess_stage_failure_names_the_stage_and_shows_its_log(tmp_path: Path) -> None:
    sft = sft_config(tmp_path / "cfg", max_steps=1, every=None)
    spec = _pipeline(tmp_path / "p.yaml", [{"name": "sft", "config": str(sft),
                                            "overrides": [f"--model.init_args.policy.name_or_path={tmp_path}/nope"]}])
    with pytest.raises(StageFailed, match=r"(?s)stage 0 \(sft\) failed: exit code 1.*does not exist"):
        run_pipeline(load_pipeline(spec), tmp_path / "out")
    assert "does not exist" in (tmp_path / "out" / "0_sft" / "stage.log").read_text()
