"""The command line: every config parses, CPU-sized configs run, help shows the documented arguments."""

from pathlib import Path

import pytest
import yaml

from cli_utils import fit, sft_config
from srlm_pl.cli import main

ROOT = Path(__file__).resolve().parents[1]
# pipelines/ folders hold pipeline files (lists of stages) and configs/paper/studies study files, validated by
# tests/pipelines/test_pipeline_configs.py, test_paper_configs.py and test_study_file.py
CONFIGS = sorted(p for p in (ROOT / "configs").rglob("*.yaml") if p.parent.name not in ("pipelines", "studies"))
# Configs small enough to run a few steps here; the others (real hub models) are parsed only.
CPU_CONFIGS = {"quickstart.yaml"}


def test_configs_are_categorised() -> None:
    assert CONFIGS, "no configs found"
    assert (ROOT / "configs" / "quickstart.yaml") in CONFIGS


@pytest.mark.parametrize("config", CONFIGS, ids=lambda p: str(p.relative_to(ROOT / "configs")))
def test_every_config_parses(config: Path, capsys: pytest.CaptureFixture) -> None:
    for base in _bases(config):
        args = ["fit", "--config", str(base), "--config", str(config)] if base != config else ["fit", "--config",
                                                                                              str(config)]
        with pytest.raises(SystemExit) as exit_info:
            main([*args, "--print_config"])
        assert exit_info.value.code in (0, None)
        printed = yaml.safe_load(capsys.readouterr().out)
        assert printed["model"]["class_path"].startswith("srlm_pl.")
        assert "tokenizer" not in printed["data"]["init_args"], "data.tokenizer is linked, never set by hand"
        if config.parent.name == "variants":  # an overlay: its model settings win over the base's
            for key, value in yaml.safe_load(config.read_text())["model"]["init_args"].items():
                got = printed["model"]["init_args"][key]
                if isinstance(value, dict):  # a model spec: the overlay's fields, the rest defaults
                    got = {k: got[k] for k in value}
                assert got == value, (base, key, got)


def _bases(config: Path) -> list[Path]:
    """The configs an overlay is composed with (strategies: the quick start; GRPO variants: the tiny GRPO run and,
    unless the name says tiny or gsm8k, the paper model's); a full config is its own base."""
    configs = ROOT / "configs"
    if config.parent.name == "strategies":
        return [configs / "quickstart.yaml"]
    if config.parent.name == "variants":
        if config.stem.endswith("_tiny"):
            return [configs / "grpo_tiny.yaml"]
        if config.stem.endswith("_gsm8k"):
            return [configs / "grpo_gsm8k.yaml"]
        return [configs / "grpo_tiny.yaml", configs / "grpo_gsm8k.yaml"]
    return [config]


def test_policy_is_linked_to_the_data_tokenizer() -> None:
    cli = main(["--config", str(ROOT / "configs" / "quickstart.yaml"), "--model.init_args.policy.tiny.hidden_size",
                "32"], run=False)
    assert cli.datamodule.tokenizer_spec == cli.model.policy_spec
    assert cli.datamodule.tokenizer_spec.tiny.hidden_size == 32


@pytest.mark.parametrize("name", sorted(CPU_CONFIGS))
def test_cpu_configs_run_a_few_steps(name: str, tmp_path: Path) -> None:
    cli = main(["fit", "--config", str(ROOT / "configs" / name), "--trainer.max_steps", "3",
                "--trainer.default_root_dir", str(tmp_path), "--trainer.val_check_interval", "3",
                "--trainer.limit_val_batches", "1", "--trainer.enable_progress_bar", "false"])
    assert cli.trainer.global_step == 3
    assert (tmp_path / "checkpoints" / "last.ckpt").is_file() or name != "quickstart.yaml"


def test_rerun_in_the_same_folder_overwrites_the_saved_config(tmp_path: Path) -> None:
    cfg = sft_config(tmp_path, max_steps=1, every=None)
    fit(cfg)
    fit(cfg)  # LightningCLI would refuse to overwrite config.yaml without save_config_kwargs overwrite
    assert len(list((tmp_path / "logs").glob("version_*/config.yaml"))) == 2


def test_help_shows_documented_arguments(capsys: pytest.CaptureFixture) -> None:
    with pytest.raises(SystemExit):
        main(["fit", "--model.help", "srlm_pl.SFTModule"])
    out = capsys.readouterr().out
    assert "completion-only" in out and "loss_chunk_size" in out and "positions per chunk" in out
    with pytest.raises(SystemExit):
        main(["fit", "--data.help", "srlm_pl.SFTDataModule"])
    out = capsys.readouterr().out
    assert "best-fit decreasing" in out and "length_policy" in out


def test_unknown_class_path_is_a_clear_error(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    cfg = sft_config(tmp_path)
    with pytest.raises(SystemExit):
        fit(cfg, "--model.class_path", "srlm_pl.NoSuchModule")
    assert "srlm_pl.NoSuchModule" in capsys.readouterr().err


def test_hub_model_offline_fails_before_training(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from srlm_pl.models.loading import ModelLoadError

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    cfg = sft_config(tmp_path)
    with pytest.raises(ModelLoadError, match="model.init_args.policy.name_or_path"):
        fit(cfg, "--model.init_args.policy.name_or_path", "Qwen/Qwen2.5-0.5B-Instruct")
    assert not (tmp_path / "checkpoints").exists()
