"""Study files: parsing errors name the key, recipes merge into one pipeline per (arm, seed) with identical stages
trained once, and the tiny study file runs end to end (train, evaluate, table, resume)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import yaml

from srlm_pl.pipelines import PipelineError
from srlm_pl.pipelines.study_file import arm_pipeline, load_study
from srlm_pl.pipelines.study_run import cell, run_study_file

ROOT = Path(__file__).resolve().parents[2]
BASE = {"name": "s", "arms": {"a": {"model": "tiny"}}, "recipes": {"sft": {"config": "configs/quickstart.yaml"}}}


def _write(tmp_path: Path, doc: dict, name: str = "study.yaml") -> Path:
    path = tmp_path / name
    path.write_text(yaml.safe_dump(doc, allow_unicode=True, sort_keys=False))
    return path


@pytest.mark.parametrize(("change", "message"), [
    ({"seeds": []}, "seeds must be a non-empty list"),
    ({"extra": 1}, "unknown top-level keys"),
    ({"arms": {"a": {"label": "x"}}}, "arms.a needs 'model'"),
    ({"arms": {"a": {"model": "m", "modle": 1}}}, r"arms.a: unknown keys \['modle'\]"),
    ({"recipes": {"r": {"config": "x.yaml", "pipeline": "y.yaml"}}}, "recipes.r needs exactly one of"),
    ({"recipes": {"a.s1": {"config": "x.yaml"}}}, "a recipe key is letters, digits"),
    ({"evaluation": {"sampled": {"n": 1, "temperature": 0.7}}}, "needs n >= 2 and temperature > 0"),
    ({"evaluation": {"settings": {"dataset": "gsm8k"}}}, "list the test sets in evaluation.datasets"),
    ({"evaluation": {"settings": {"max_new_token": 5}}}, "unknown keys"),
    ({"overrides": {"*": "--x=1"}}, "overrides must map a config-file pattern"),
])
def test_bad_study_files_name_the_key(change: dict, message: str, tmp_path: Path) -> None:
    with pytest.raises(PipelineError, match=message):
        load_study(_write(tmp_path, {**BASE, **change}))


def _hybrid_study(tmp_path: Path, rl_init: str, rl_override: str, **extra: object) -> dict:
    """A study of sft, grpo and a three-stage pipeline (first = sft's stage, teacher, rl) as a file mapping."""
    pipe_file = _write(tmp_path, {"name": "p", "stages": [
        {"name": "first", "config": "configs/quickstart.yaml"},
        {"name": "teacher", "config": "configs/quickstart.yaml", "overrides": ["--trainer.max_steps=3"]},
        {"name": "rl", "config": "configs/grpo_tiny.yaml", "init": rl_init, "overrides": [rl_override]}]}, "p.yaml")
    return {"name": "s", "arms": {"a": {"model": "tiny"}},
            "recipes": {"sft": {"config": "configs/quickstart.yaml"}, "grpo": {"config": "configs/grpo_tiny.yaml"},
                        "hybrid": {"pipeline": str(pipe_file)}}, **extra}


def test_recipes_merge_identical_stages_and_start_from_the_arm(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(ROOT)
    doc = _hybrid_study(tmp_path, "first", "--model.init_args.policy.tiny.seed={export:teacher}", seeds=[5],
                        arms={"a": {"model": "/models/{arm}x"}},
                        overrides={"grpo_*.yaml": ["--trainer.max_steps=2"], "*": ["--trainer.logger=false"]})
    spec = load_study(_write(tmp_path, doc))
    built = arm_pipeline(spec, spec.arms[0], 5)
    stages = {s.name: s for s in built.pipeline.stages}
    # hybrid's first stage is the sft recipe's (same config, overrides and start): trained once
    assert list(stages) == ["sft", "grpo", "hybrid.teacher", "hybrid"]
    assert built.final_stage == {"sft": "sft", "grpo": "grpo", "hybrid": "hybrid"}
    assert stages["sft"].init == "config" and stages["grpo"].init == "config"
    assert stages["sft"].overrides[-1] == "--model.init_args.policy.name_or_path=/models/{arm}x"
    assert stages["hybrid.teacher"].init == "sft" and stages["hybrid"].init == "sft"
    assert "--model.init_args.policy.tiny.seed={export:hybrid.teacher}" in stages["hybrid"].overrides
    # overrides by file-name pattern, then the seed (module seed only where the module takes one)
    assert stages["grpo"].overrides[:2] == ["--trainer.max_steps=2", "--trainer.logger=false"]
    assert "--trainer.max_steps=2" not in stages["sft"].overrides
    assert "--seed_everything=5" in stages["sft"].overrides and "--seed_everything=5" in stages["grpo"].overrides
    # the data order is SFT's only randomness from a pretrained model: each study seed must change it
    assert all("--data.init_args.seed=5" in stages[name].overrides for name in ("sft", "grpo"))
    assert "--model.init_args.seed=5" in stages["grpo"].overrides
    assert not any(o.startswith("--model.init_args.seed") for o in stages["sft"].overrides)  # SFTModule has none
    # stage folders are named, not numbered: adding a recipe in front moves no finished stage
    from srlm_pl.pipelines.runner import stage_dir

    assert built.pipeline.named_dirs and stage_dir(tmp_path, built.pipeline, "hybrid") == tmp_path / "hybrid"
    doc["recipes"] = {"new": {"config": "configs/distill_tiny.yaml"}, **doc["recipes"]}
    moved = arm_pipeline(load_study(_write(tmp_path, doc)), spec.arms[0], 5)
    for name in stages:
        assert stage_dir(tmp_path, moved.pipeline, name) == stage_dir(tmp_path, built.pipeline, name)


def test_cell_is_mean_and_std_over_seeds() -> None:
    assert cell([0.25]) == "25.0" and cell([]) == "-"
    assert cell([0.1, 0.3]) == "20.0 ± 14.1"  # stdev of (10, 30) = 14.14


def _weights(folder: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return load_file(str(folder / "model.safetensors"))


@pytest.mark.usefixtures("one_torch_thread")
def test_tiny_study_runs_end_to_end_and_resumes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(ROOT)
    spec = load_study(ROOT / "configs" / "paper" / "studies" / "tiny.yaml")
    out = tmp_path / "study"
    report = run_study_file(spec, out, launcher="inprocess")
    rows = {(r["arm"], r["recipe"]): r for r in report["rows"]}
    assert set(rows) == {(a, r) for a in ("base", "instruct") for r in ("untrained", "sft", "grpo", "sft_grpo")}
    for arm, style in (("base", "plain"), ("instruct", "chat")):
        stages = out / arm / "seed0" / "stages"
        assert sorted(p.name for p in stages.iterdir() if p.is_dir()) == ["grpo", "sft", "sft_grpo"]
        # SFT->GRPO started from the SFT row's model and changed it
        done = json.loads((stages / "sft_grpo" / "stage_done.json").read_text())
        assert done["args"][-1] == str(stages / "sft" / "export" / "final")
        sft = _weights(stages / "sft" / "export" / "final")
        hybrid = _weights(stages / "sft_grpo" / "export" / "final")
        assert any(not torch.equal(sft[k], hybrid[k]) for k in sft)
        assert rows[(arm, "sft_grpo")]["stages"] == ["sft", "sft_grpo"]
        saved = yaml.safe_load((stages / "sft" / "export" / "final" / "srlm_config.yaml").read_text())
        assert saved["data"]["init_args"]["template"]["style"] == style  # each arm trains with its own prompt
        for recipe in ("untrained", "sft", "grpo", "sft_grpo"):
            ev = rows[(arm, recipe)]["eval"]["builtin"]
            assert ev["greedy"]["problems"] == 32 and ev["greedy"]["samples_per_problem"] == 1
            assert ev["sampled"]["samples_per_problem"] == 2
    sft_eval = json.loads((out / "base" / "seed0" / "stages" / "sft" / "study_eval" / "builtin" / "greedy"
                           / "summary.json").read_text())
    assert rows[("base", "sft")]["eval"]["builtin"]["greedy"]["accuracy"] == sft_eval["accuracy"]
    table = (out / "study.md").read_text()
    assert "| tiny (base arm) | SFT→GRPO |" in table and "Sampled avg@2" in table
    assert (out / "study.png").read_bytes()[:4] == b"\x89PNG"
    # a rerun trains nothing and evaluates nothing again
    marker = out / "instruct" / "seed0" / "stages" / "sft" / "stage_done.json"
    predictions = out / "instruct" / "seed0" / "stages" / "sft_grpo" / "study_eval" / "builtin" / "sampled" \
        / "predictions.jsonl"
    before = [(p.stat().st_mtime_ns, p.read_text()) for p in (marker, predictions)]
    again = run_study_file(spec, out, launcher="inprocess")
    assert [(p.stat().st_mtime_ns, p.read_text()) for p in (marker, predictions)] == before
    assert [r["eval"] for r in again["rows"]] == [r["eval"] for r in report["rows"]]
    # restart_from retrains that stage (and later ones) and re-evaluates it, in every arm
    with pytest.raises(PipelineError, match="no such stage"):
        run_study_file(spec, out, launcher="inprocess", restart_from="nope")
    run_study_file(spec, out, launcher="inprocess", restart_from="sft_grpo")
    assert (marker.stat().st_mtime_ns, marker.read_text()) == before[0]
    redone = out / "base" / "seed0" / "stages" / "sft_grpo" / "stage_done.json"
    assert json.loads(redone.read_text())["finished"] >= json.loads(marker.read_text())["finished"]
    assert predictions.stat().st_mtime_ns != before[1][0]


@pytest.mark.parametrize("path", sorted((ROOT / "configs" / "paper" / "studies").glob("*.yaml")), ids=lambda p: p.stem)
def test_shipped_study_files_load_and_merge(path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(ROOT)
    spec = load_study(path)
    for arm in spec.arms:
        built = arm_pipeline(spec, arm, spec.seeds[0])
        assert set(built.final_stage) == {r.key for r in spec.recipes}
        assert all(Path(c).is_file() for s in built.pipeline.stages for c in s.config)


def test_restart_redoes_only_the_stages_that_depend_on_it(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from srlm_pl.pipelines.runner import restarted_stages

    monkeypatch.chdir(ROOT)
    spec = load_study(_write(tmp_path, _hybrid_study(tmp_path, "config",
                                                     "--model.init_args.policy.name_or_path={export:teacher}")))
    pipe = arm_pipeline(spec, spec.arms[0], 0).pipeline
    names = lambda stages: [s.name for s in stages]  # noqa: E731
    assert names(pipe.stages) == ["sft", "grpo", "hybrid.teacher", "hybrid"]
    # grpo starts from the arm's model: redoing sft leaves it alone; hybrid reads hybrid.teacher's export
    assert names(restarted_stages(pipe, "sft")) == ["sft", "hybrid.teacher", "hybrid"]
    assert names(restarted_stages(pipe, "grpo")) == ["grpo"]
    assert names(restarted_stages(pipe, "hybrid.teacher")) == ["hybrid.teacher", "hybrid"]
