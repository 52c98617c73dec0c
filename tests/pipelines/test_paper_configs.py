"""configs/paper: every recipe file parses through the CLI on its own, its pipelines validate, both arms are there,
and the paper study's dry run lists every stage with an estimate computed from the measured throughputs."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest
import yaml

from srlm_pl.cli import main
from srlm_pl.pipelines import load_pipeline, validate
from srlm_pl.pipelines.study_check import THROUGHPUT_FILE, dry_run, reference
from srlm_pl.pipelines.study_file import load_study

ROOT = Path(__file__).resolve().parents[2]
PAPER = ROOT / "configs" / "paper"
CONFIGS = sorted(PAPER.glob("*.yaml"))
PIPELINES = sorted((PAPER / "pipelines").glob("*.yaml"))
SHARED = ROOT.parent / "shared" / "data"
RECIPES = ("sft", "lora_sft", "kd_r1", "kd_logit", "grpo")
HYBRIDS = ("sft_grpo", "kd_grpo", "sft_kd_grpo", "kd_sft_grpo")


def test_both_arms_have_every_recipe_and_hybrid() -> None:
    assert {p.stem for p in CONFIGS} == {f"{arm}_{r}" for arm in ("base", "instruct") for r in RECIPES}
    assert {p.stem for p in PIPELINES} == {f"{arm}_{h}" for arm in ("base", "instruct") for h in HYBRIDS}


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.stem)
def test_recipe_parses_on_its_own(path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(ROOT)
    cli = main(["--config", str(path)], run=False)
    cfg = cli.config.as_dict()
    policy, template = cfg["model"]["init_args"]["policy"], cfg["data"]["init_args"]["template"]
    header = path.read_text().split("\nseed_everything")[0]
    assert "paper" in header.lower() and "our choice" in header.lower()  # the header says which is which
    if path.stem.startswith("base_"):
        assert policy["name_or_path"] == "Qwen/Qwen2.5-0.5B" and template["style"] == "plain"
    else:
        assert policy["name_or_path"] == "Qwen/Qwen2.5-0.5B-Instruct" and template["style"] == "chat"
    if "kd_r1" in path.stem:  # the paper's KD: SFT on R1 traces, kept verbatim
        assert cfg["model"]["class_path"] == "srlm_pl.SFTModule"
        assert cfg["data"]["init_args"]["train"]["format"] == "r1"
        assert cfg["data"]["init_args"]["max_length"] == 8192
    recipe = path.stem.split("_", 1)[1]
    lr = cfg["model"]["init_args"]["optimizer"]["init_args"]["lr"]
    if recipe in ("sft", "kd_r1", "lora_sft"):  # the paper's SFT: full at lr 4e-5, LoRA at 1e-4, 4 epochs
        assert lr == (1e-4 if recipe == "lora_sft" else 4e-5) and cfg["trainer"]["max_epochs"] == 4
        assert (policy["lora"] is not None) == (recipe == "lora_sft")
        # 8,192-token rows with bounded memory: packing, per-example attention, checkpointing, a chunked loss
        assert cfg["data"]["init_args"]["packing"] and cfg["data"]["init_args"]["max_length"] == 8192
        assert policy["attn_implementation"] == "sdpa_packed" and policy["gradient_checkpointing"]
        assert cfg["model"]["init_args"]["loss_chunk_size"] <= 1024


@pytest.mark.parametrize("path", PIPELINES, ids=lambda p: p.stem)
def test_paper_pipeline_validates(path: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(ROOT)
    pipe = load_pipeline(path)
    arm = path.stem.split("_")[0]
    assert all(Path(c).name.startswith(f"{arm}_") for s in pipe.stages for c in s.config)  # no arm mix-up
    if not SHARED.is_dir():  # the stages still parse; the evaluation set needs ../shared/data
        pipe = dataclasses.replace(pipe, stages=[dataclasses.replace(s, evaluate=False) for s in pipe.stages])
    args = validate(pipe, tmp_path / "out")
    for i in range(1, len(args)):  # every later stage starts from the previous stage's export
        assert args[i][-1] == str(tmp_path / "out" / f"{i - 1}_{pipe.stages[i - 1].name}" / "export" / "final")


def test_reference_kinds(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert reference("runs/qwen05_base") == "missing"  # an output folder that is not there, not a hub id
    (tmp_path / "Qwen" / "Qwen2.5-0.5B-Instruct").mkdir(parents=True)
    monkeypatch.chdir(tmp_path)  # one model downloaded into ./Qwen/ does not make the other hub id "missing"
    assert reference("Qwen/Qwen2.5-0.5B-Instruct") == "local" and reference("Qwen/Qwen2.5-0.5B").startswith("hub id")
    assert reference(str(tmp_path)) == "local"
    assert reference(str(tmp_path / "nope")) == "missing"
    assert reference("data/train.jsonl") == "missing"
    assert reference("Qwen/Qwen2.5-0.5B").startswith("hub id")
    assert reference("tiny") == reference("builtin") == "built-in"


@pytest.mark.skipif(not SHARED.is_dir(), reason="the dry run checks the five test sets in ../shared/data")
def test_paper_study_dry_run_lists_every_stage_and_estimates(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(ROOT)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    spec = load_study(PAPER / "studies" / "paper.yaml")
    report = dry_run(spec, "/tmp/unused")
    rows = [line for line in report.splitlines() if line.startswith(("| base |", "| instruct |"))]
    # 5 recipes + 4 hybrids per arm; SFT->RL and KD->RL reuse the SFT and KD rows, the 3-stage ones add their middle
    assert len(rows) == 2 * (5 + 4 + 2)
    assert "| instruct | sft_grpo | configs/paper/instruct_grpo.yaml | sft |" in report
    assert "| base | kd_sft_grpo.sft | configs/paper/base_sft.yaml | kd_r1 |" in report
    assert "`Qwen/Qwen2.5-0.5B`: hub id" in report and "`test set aime24`: local, 30 problems" in report
    tp = json.loads(THROUGHPUT_FILE.read_text())
    # instruct GRPO by hand: 500 steps x 16 prompts x G 8 completions of 1,024 tokens, prompts of 300 tokens, and
    # validation every 50 steps plus once before training: 11 x 500 prompts x 1,024 tokens
    completions, gen = 500 * 16 * 8, tp["grpo"]["generation_tokens_per_s"]
    hours = (completions * 1024 / gen + completions * (1024 + 300) / tp["grpo"]["train_tokens_per_s"]
             + 11 * 500 * 1024 / gen) / 3600
    row = f"| instruct | grpo | configs/paper/instruct_grpo.yaml | Qwen/Qwen2.5-0.5B-Instruct | {hours:.2f} |"
    assert row in report
    assert "GPU hours on one NVIDIA H100" in report
    # evaluation: 2 arms x 3 seeds x (9 recipes + the untrained model), 2,889 problems, greedy + avg@8, 800 tokens
    assert f"= {60 * 2889 * 9 * 800 / gen / 3600:.1f} GPU h." in report


def test_estimate_counts_packed_steps_as_examples() -> None:
    from srlm_pl.pipelines.study_check import Throughput, stage_seconds

    tp = Throughput("gpu", sft=1000.0, kd=500.0, generation=100.0, grpo_train=1000.0)
    table = {"d": {"rows": 1000, "tokens": 100}}

    def cfg(val: dict | None = None, **trainer: object) -> dict:
        return {"trainer": {"accumulate_grad_batches": 2, **trainer},
                "model": {"class_path": "srlm_pl.SFTModule", "init_args": {"val_generation": val}},
                "data": {"init_args": {"train": {"path": "d"}, "batch_size": 1, "max_length": 1000,
                                       "packing": True}}}

    by_epochs, _ = stage_seconds(cfg(max_epochs=2, max_steps=-1), tp, table)
    assert by_epochs == pytest.approx(2 * 1000 * 100 / 1000)  # 2 epochs of 1000 examples of 100 tokens
    # a packed step holds 2 rows of 1000 tokens = 20 examples: 100 steps are the same 2 epochs
    assert stage_seconds(cfg(max_epochs=2, max_steps=100), tp, table)[0] == pytest.approx(by_epochs)
    assert stage_seconds(cfg(max_epochs=2, max_steps=50), tp, table)[0] == pytest.approx(by_epochs / 2)
    assert stage_seconds(cfg(max_epochs=2, max_steps=10**6), tp, table)[0] == pytest.approx(by_epochs)  # epochs end it
    for unbounded in (None, -1):  # Lightning: max_steps ends the run
        assert stage_seconds(cfg(max_epochs=unbounded, max_steps=100), tp, table)[0] == pytest.approx(by_epochs)
    # validation every 10 training batches (micro-batches: 100 steps x 2 accumulation = 20 runs) of 10 x 100 tokens
    with_val, _ = stage_seconds(cfg({"num_prompts": 10, "max_new_tokens": 100}, max_epochs=2, max_steps=100,
                                    val_check_interval=10), tp, table)
    assert with_val - by_epochs == pytest.approx(20 * 10 * 100 / 100)


def test_dry_run_refuses_a_missing_local_model(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(ROOT)
    raw = yaml.safe_load((PAPER / "studies" / "tiny.yaml").read_text())
    raw["arms"]["base"]["model"] = str(tmp_path / "no_such_model")
    raw["evaluation"]["datasets"] = ["builtin"]
    path = tmp_path / "study.yaml"
    path.write_text(yaml.safe_dump(raw, allow_unicode=True))
    with pytest.raises(Exception, match="missing: .*no_such_model"):
        dry_run(load_study(path), tmp_path / "out")
