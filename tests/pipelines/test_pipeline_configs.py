"""Every shipped pipeline file (configs/pipelines/*.yaml) parses and every stage's config validates."""

from pathlib import Path

import pytest

from srlm_pl.pipelines import load_pipeline, validate

ROOT = Path(__file__).resolve().parents[2]
PIPELINES = sorted((ROOT / "configs" / "pipelines").glob("*.yaml"))


def test_the_four_hybrid_pipelines_ship() -> None:
    assert {p.stem for p in PIPELINES} >= {"sft_grpo", "kd_grpo", "sft_kd_grpo", "kd_sft_grpo"}


@pytest.mark.parametrize("path", PIPELINES, ids=lambda p: p.stem)
def test_pipeline_file_validates(path: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(ROOT)  # config paths in pipeline files are relative to the repository root
    pipe = load_pipeline(path)
    args = validate(pipe, tmp_path / "out")
    assert len(args) == len(pipe.stages)
    grpo = args[[s.name for s in pipe.stages].index("grpo")]
    previous = pipe.stages[[s.name for s in pipe.stages].index("grpo") - 1].name
    assert grpo[-2:] == ["--model.init_args.policy.name_or_path", str(tmp_path / "out" / f"{len(args) - 2}_{previous}"
                                                                       / "export" / "final")]
