"""``srlm_pl.models.forward.eos_token_ids``: the one EOS rule, and the generation call sites that use it."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch

import srlm_pl.generation.backends as backends_module
from cli_utils import SMALL_TINY
from srlm_pl.models.forward import eos_token_ids
from srlm_pl.models.loading import ModelSpec, TinyConfig
from srlm_pl.modules.grpo import GRPOModule


def _model(eos: object) -> SimpleNamespace:
    return SimpleNamespace(generation_config=SimpleNamespace(eos_token_id=eos))


def test_eos_token_ids_unions_tokenizer_and_generation_config() -> None:
    tok = SimpleNamespace(eos_token_id=151645)  # Qwen2.5-Instruct: <|im_end|>
    assert eos_token_ids(tok) == [151645]
    assert eos_token_ids(tok, _model([151645, 151643])) == [151645, 151643]  # + <|endoftext|>
    assert eos_token_ids(tok, _model([151643, 151645, 151643])) == [151645, 151643]  # deduplicated, tokenizer first
    assert eos_token_ids(tok, _model(151643)) == [151645, 151643]  # an int
    assert eos_token_ids(tok, _model(None)) == [151645]
    assert eos_token_ids(tok, SimpleNamespace()) == [151645]  # no generation config
    assert eos_token_ids(SimpleNamespace(eos_token_id=None), _model((7, 9))) == [7, 9]


def test_eos_token_ids_reads_through_a_peft_wrapper() -> None:
    base = _model([3, 4])
    wrapper = SimpleNamespace(get_base_model=lambda: base)
    assert eos_token_ids(SimpleNamespace(eos_token_id=2), wrapper) == [2, 3, 4]


@pytest.fixture(scope="module")
def grpo() -> GRPOModule:
    torch.manual_seed(0)
    module = GRPOModule(policy=ModelSpec(name_or_path="tiny", tiny=TinyConfig(**SMALL_TINY)), num_generations=2,
                        max_new_tokens=8, seed=0)
    module.configure_model()
    module.model.eval()
    return module


def _second_eos(rows: list[list[int]], lengths: list[int], eos: int) -> int:
    """A token the first row emits at its 2nd position (and not before): a stop there makes it 2 tokens long."""
    assert lengths[0] >= 3, lengths
    token = rows[0][1]
    assert token != eos and token != rows[0][0]
    return token


def _expected_lengths(rows: list[list[int]], lengths: list[int], stop: int) -> list[int]:
    return [min(n, row[:n].index(stop) + 1) if stop in row[:n] else n for row, n in zip(rows, lengths, strict=True)]


def test_grpo_sampling_and_validation_stop_at_every_eos_of_the_generation_config(grpo, monkeypatch) -> None:
    """A model whose generation config lists a second EOS id: GRPO's sampling and generation-based validation
    hand ``generate`` both ids and stop at the second one too."""
    tok, model = grpo.tokenizer, grpo.model
    prompts = [tok("1+2=", add_special_tokens=False)["input_ids"], tok("3+4=", add_special_tokens=False)["input_ids"]]
    seen: list[list[int]] = []
    generate = backends_module.generate

    def spy(*args, **kwargs):
        seen.append(list(kwargs["eos_token_ids"]))
        return generate(*args, **kwargs)

    monkeypatch.setattr(backends_module, "generate", spy)
    monkeypatch.setattr(model.generation_config, "eos_token_id", tok.eos_token_id)

    with torch.no_grad():
        before, _ = grpo.sample_and_score(prompts, ["3", "7"], ["a", "b"])
        texts_before, _ = grpo.generate_and_score(prompts, ["3", "7"], 8, 1.0)
    rows, lengths = before["rollout"].completion_ids.tolist(), before["rollout"].completion_mask.sum(1).tolist()
    stop = _second_eos(rows, lengths, tok.eos_token_id)

    model.generation_config.eos_token_id = [tok.eos_token_id, stop]
    seen.clear()
    with torch.no_grad():
        after, _ = grpo.sample_and_score(prompts, ["3", "7"], ["a", "b"])
    assert seen == [[tok.eos_token_id, stop]]
    assert after["rollout"].completion_mask.sum(1).tolist() == _expected_lengths(rows, lengths, stop)
    assert after["rollout"].completion_mask.sum(1).tolist()[0] == 2

    # validation (greedy): the same prompts stop at the second id wherever the tokenizer-only run emitted it
    greedy = generate(model, prompts, backends_module.SamplingConfig(max_new_tokens=8, temperature=0.0),
                      eos_token_ids=[tok.eos_token_id], pad_token_id=tok.pad_token_id)
    g_rows, g_lengths = greedy.completion_ids.tolist(), greedy.lengths.tolist()
    seen.clear()
    greedy_stop = g_rows[0][1]
    model.generation_config.eos_token_id = [tok.eos_token_id, greedy_stop]
    with torch.no_grad():
        texts_after, _ = grpo.generate_and_score(prompts, ["3", "7"], 8, 1.0)
    assert seen == [[tok.eos_token_id, greedy_stop]]
    expected = [tok.decode(row[:n], skip_special_tokens=True)
                for row, n in zip(g_rows, _expected_lengths(g_rows, g_lengths, greedy_stop), strict=True)]
    assert texts_after == expected and texts_after != texts_before
