"""The evaluation loop on a tiny model: predictions and summary files, resumption after an interruption (torn
file, exception mid-run) giving the same predictions as an uninterrupted run, settings checks, bad models."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from cli_utils import SMALL_TINY, fit, sft_config
from srlm_pl.evaluation import harness
from srlm_pl.evaluation.cli import main as eval_main
from srlm_pl.evaluation.harness import EvalConfig, run_evaluation
from srlm_pl.evaluation.predictions import EvalError
from srlm_pl.models.loading import ModelLoadError, ModelSpec, TinyConfig, export_hf, load_model, load_tokenizer

FIELDS = {"id", "sample", "prompt", "gold", "completion", "extracted", "normalized", "verdict", "tokens", "truncated",
          "seconds"}


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    spec = ModelSpec(tiny=TinyConfig(**SMALL_TINY))
    tok = load_tokenizer(spec)
    return export_hf(load_model(spec, tok, trainable=False), tok, tmp_path_factory.mktemp("tiny") / "model")


def _cfg(model: Path | str, **kw) -> EvalConfig:
    base = {"dataset": "builtin", "limit": 6, "max_new_tokens": 6, "batch_size": 2, "progress": False}
    return EvalConfig(model=str(model), **{**base, **kw})


def _predictions(out: Path) -> dict[tuple[str, int], tuple[str, str]]:
    rows = [json.loads(line) for line in (out / "predictions.jsonl").read_text().splitlines()]
    keyed = {(r["id"], r["sample"]): (r["completion"], r["verdict"]) for r in rows}
    assert len(keyed) == len(rows), "a sample is on file twice"
    return keyed


class Generated:
    """Spy on what a run really generates: the problem ids handed to ``harness._score_batch`` and the number of
    completions ``srlm_pl.generation.engine.generate`` returned (problems x samples). ``take()`` returns and resets."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        import srlm_pl.generation.backends as generation  # the hf engine calls engine.generate through it

        self.ids: list[str] = []
        self.completions = 0
        real_score, real_generate = harness._score_batch, generation.generate

        def score(loaded, batch, *args, **kwargs):
            self.ids += [r["id"] for r in batch]
            return real_score(loaded, batch, *args, **kwargs)

        def generate(*args, **kwargs):
            out = real_generate(*args, **kwargs)
            self.completions += out.completion_ids.shape[0]
            return out

        monkeypatch.setattr(harness, "_score_batch", score)
        monkeypatch.setattr(generation, "generate", generate)

    def take(self) -> tuple[list[str], int]:
        out = (sorted(self.ids), self.completions)
        self.ids, self.completions = [], 0
        return out


@pytest.fixture
def generated(monkeypatch: pytest.MonkeyPatch) -> Generated:
    return Generated(monkeypatch)


def test_predictions_and_summary_files(tiny_dir: Path, tmp_path: Path, generated: Generated) -> None:
    s = run_evaluation(_cfg(tiny_dir, prompt_style="gsm8k"), tmp_path)
    assert generated.take() == ([f"gen-{i}" for i in range(6)], 6)
    rows = [json.loads(line) for line in (tmp_path / "predictions.jsonl").read_text().splitlines()]
    assert len(rows) == 6 and set(rows[0]) == FIELDS
    assert {r["id"] for r in rows} == {f"gen-{i}" for i in range(6)}
    assert all("#### N" in r["prompt"] and r["tokens"] <= 6 for r in rows)
    saved = json.loads((tmp_path / "summary.json").read_text())
    assert saved["problems"] == 6 and saved["accuracy"] == s["accuracy"]
    assert sum(saved["counts"].values()) == 6 and saved["generated_tokens"] == sum(r["tokens"] for r in rows)
    assert saved["prompt_style"] == "gsm8k" and saved["tokens_per_s"] > 0
    assert "| model | dataset | problems | accuracy |" in (tmp_path / "summary.md").read_text()
    expected = {(r["id"], r["sample"]): (r["completion"], r["verdict"]) for r in rows}
    again = run_evaluation(_cfg(tiny_dir, prompt_style="gsm8k"), tmp_path)  # everything done: nothing regenerated
    assert generated.take() == ([], 0)
    assert _predictions(tmp_path) == expected
    assert again["accuracy"] == s["accuracy"] and again["generated_tokens"] == s["generated_tokens"]
    # two problems' rows deleted from the file: exactly those two are regenerated (greedy: the same text)
    lines = (tmp_path / "predictions.jsonl").read_text().splitlines(True)
    (tmp_path / "predictions.jsonl").write_text("".join(x for x in lines if json.loads(x)["id"] not in
                                                        ("gen-1", "gen-4")))
    run_evaluation(_cfg(tiny_dir, prompt_style="gsm8k"), tmp_path)
    assert generated.take() == (["gen-1", "gen-4"], 2)
    assert _predictions(tmp_path) == expected


def test_resume_after_torn_write_and_mid_run_exception_equals_uninterrupted(
        tiny_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, generated: Generated) -> None:
    sampled = {"n": 3, "k": [1, 3], "temperature": 1.0, "seed": 5}
    everything = [f"gen-{i}" for i in range(6)]
    straight = tmp_path / "straight"
    full = run_evaluation(_cfg(tiny_dir, **sampled), straight)
    assert generated.take() == (everything, 18)
    expected = _predictions(straight)
    assert len(expected) == 18 and len({c for c, _ in expected.values()}) > 1  # sampled, not all equal

    # 1) killed mid-write: keep 7 complete lines (2 problems + 1 sample) and half of the next line
    torn = tmp_path / "torn"
    torn.mkdir()
    shutil.copy(straight / "run.json", torn / "run.json")
    lines = (straight / "predictions.jsonl").read_text().splitlines(True)
    (torn / "predictions.jsonl").write_text("".join(lines[:7]) + lines[7][: len(lines[7]) // 2])
    kept = {json.loads(x)["id"] for x in lines[:6]}
    assert len(kept) == 2 and json.loads(lines[6])["id"] not in kept
    resumed = run_evaluation(_cfg(tiny_dir, batch_size=4, **sampled), torn)  # another batch size: same samples
    # the 2 complete problems are kept; the one with 1 of 3 samples on file and the 3 absent ones are redone
    assert generated.take() == (sorted(set(everything) - kept), 4 * 3)
    assert _predictions(torn) == expected
    assert resumed["pass@k"] == full["pass@k"] and resumed["maj@k"] == full["maj@k"]

    # 2) an exception after the first batch: that batch is on file, the rerun does the rest
    crashed = tmp_path / "crashed"
    real, calls = harness._score_batch, []  # the spy

    def flaky(*args, **kwargs):
        if calls:
            raise KeyboardInterrupt
        calls.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr(harness, "_score_batch", flaky)
    with pytest.raises(KeyboardInterrupt):
        run_evaluation(_cfg(tiny_dir, **sampled), crashed)
    first, n_first = generated.take()
    assert len(first) == 2 and n_first == 6
    assert {pid for pid, _ in _predictions(crashed)} == set(first)  # one batch of 2 problems x 3 samples
    monkeypatch.setattr(harness, "_score_batch", real)
    run_evaluation(_cfg(tiny_dir, **sampled), crashed)
    assert generated.take() == (sorted(set(everything) - set(first)), 4 * 3)  # only the rest
    assert _predictions(crashed) == expected


def test_limit_extends_and_settings_mismatch_is_refused(tiny_dir: Path, tmp_path: Path,
                                                       generated: Generated) -> None:
    run_evaluation(_cfg(tiny_dir, limit=3), tmp_path)
    assert generated.take() == (["gen-0", "gen-1", "gen-2"], 3)
    s = run_evaluation(_cfg(tiny_dir, limit=6), tmp_path)  # a larger --limit resumes the quick look
    assert generated.take() == (["gen-3", "gen-4", "gen-5"], 3)  # only the new problems
    assert s["problems"] == 6 and len(_predictions(tmp_path)) == 6
    with pytest.raises(EvalError, match="max_new_tokens: was 6, now 9"):
        run_evaluation(_cfg(tiny_dir, max_new_tokens=9), tmp_path)
    assert generated.take() == ([], 0)
    assert run_evaluation(_cfg(tiny_dir, max_new_tokens=9, limit=2), tmp_path, overwrite=True)["problems"] == 2
    assert generated.take() == (["gen-0", "gen-1"], 2)  # --overwrite discards the 6 on file
    assert len(_predictions(tmp_path)) == 2
    with pytest.raises(EvalError, match="needs sampling"):
        run_evaluation(_cfg(tiny_dir, n=4), tmp_path / "x")
    with pytest.raises(EvalError, match="k must be in 1..n"):
        run_evaluation(_cfg(tiny_dir, n=2, k=[4], temperature=1.0), tmp_path / "x")


def test_missing_model_fails_before_any_work(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    missing = tmp_path / "runs" / "nope" / "export" / "final"
    # the data file is missing too: the model is checked first
    with pytest.raises(ModelLoadError, match="does not exist"):
        run_evaluation(_cfg(missing, dataset="gsm8k", data_file=str(tmp_path / "absent.jsonl")), tmp_path / "out")
    assert not (tmp_path / "out").exists()
    (tmp_path / "empty").mkdir()
    with pytest.raises(ModelLoadError, match="holds no config.json"):
        run_evaluation(_cfg(tmp_path / "empty"), tmp_path / "out")
    code = eval_main(["--model", str(tmp_path / "last.ckpt"), "--dataset", "builtin", "--out", str(tmp_path / "o")])
    assert code == 2 and "checkpoint" in capsys.readouterr().err


@pytest.mark.parametrize("lora", [None, {"r": 4, "alpha": 8, "dropout": 0.0}], ids=["full", "lora"])
def test_checkpoint_evaluates_like_its_export(tmp_path: Path, lora: dict | None) -> None:
    run = tmp_path / "run"
    fit(sft_config(run, max_steps=2, every=2, lora=lora))
    from_ckpt = run_evaluation(_cfg(run / "checkpoints" / "last.ckpt", limit=4), tmp_path / "ckpt")
    from_export = run_evaluation(_cfg(run / "export" / "final", limit=4), tmp_path / "export")
    assert _predictions(tmp_path / "ckpt") == _predictions(tmp_path / "export")
    assert from_ckpt["prompt_style"].startswith("auto: training template")
    assert from_ckpt["accuracy"] == from_export["accuracy"]
