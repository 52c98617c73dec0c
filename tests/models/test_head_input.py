"""Forwards that ask for the last position's logits hand the LM head a contiguous input (``srlm_pl.models.forward``)."""

from __future__ import annotations

import pytest
import torch
from transformers import Qwen2Config, Qwen2ForCausalLM

from srlm_pl.generation.engine import SamplingConfig, generate
from srlm_pl.models.forward import contiguous_head_input, hidden_states
from srlm_pl.modules.distill import teacher_hidden_states
from srlm_pl.rl.logprobs import completion_logprobs


def bf16_model() -> Qwen2ForCausalLM:
    torch.manual_seed(0)
    cfg = Qwen2Config(vocab_size=300, hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
                      num_key_value_heads=2, intermediate_size=128, max_position_embeddings=128,
                      initializer_range=0.2, rope_parameters={"rope_type": "default", "rope_theta": 100.0})
    return Qwen2ForCausalLM(cfg).to(torch.bfloat16).eval()


@pytest.fixture
def model_and_inputs(monkeypatch: pytest.MonkeyPatch):
    """The model, and the contiguity of every input its LM head's ``forward`` receives (after pre-hooks)."""
    model = bf16_model()
    head = model.get_output_embeddings()
    seen: list[bool] = []
    original = head.forward

    def forward(x: torch.Tensor) -> torch.Tensor:
        seen.append(x.is_contiguous())
        return original(x)

    monkeypatch.setattr(head, "forward", forward)
    return model, seen


def batch() -> dict[str, torch.Tensor]:
    ids = torch.tensor([[0, 0, 5, 6, 7, 8], [9, 10, 11, 12, 13, 14], [0, 15, 16, 17, 18, 19]])
    mask = (ids != 0).long()
    return {"input_ids": ids, "attention_mask": mask, "position_ids": (mask.cumsum(-1) - 1).clamp(min=0)}


def test_a_plain_forward_hands_the_head_a_strided_view(model_and_inputs) -> None:
    """The premise: without the hook, ``logits_to_keep=1`` gives the head ``hidden[:, -1:]``, not contiguous."""
    model, seen = model_and_inputs
    with torch.no_grad():
        model(**batch(), use_cache=False, logits_to_keep=1)
    assert seen == [False]


def test_the_hook_copies_and_changes_no_value(model_and_inputs) -> None:
    model, seen = model_and_inputs
    with torch.no_grad():
        plain = model(**batch(), use_cache=False, logits_to_keep=1).logits
        with contiguous_head_input(model):
            hooked = model(**batch(), use_cache=False, logits_to_keep=1).logits
        full = model(**batch(), use_cache=False).logits[:, -1:]
    assert seen == [False, True, True]
    assert hooked.shape == (3, 1, 300)
    torch.testing.assert_close(hooked, full, rtol=0, atol=0)  # same contiguous matmul as the full forward
    torch.testing.assert_close(hooked.float(), plain.float(), rtol=0.02, atol=0.02)  # strided kernel: bf16 rounding
    assert not model.get_output_embeddings()._forward_pre_hooks  # removed on exit


def test_the_hook_is_removed_when_the_forward_raises() -> None:
    model = bf16_model()
    with pytest.raises(RuntimeError, match="boom"), contiguous_head_input(model):
        assert len(model.get_output_embeddings()._forward_pre_hooks) == 1
        raise RuntimeError("boom")
    assert not model.get_output_embeddings()._forward_pre_hooks


def test_every_last_position_forward_of_the_package_is_contiguous(model_and_inputs) -> None:
    model, seen = model_and_inputs
    b = batch()
    with torch.no_grad():
        hidden_states(model, b)
        teacher_hidden_states(model, b)
        generate(model, [[5, 6, 7], [8, 9], [10, 11, 12, 13]], SamplingConfig(max_new_tokens=3), eos_token_ids=[],
                 pad_token_id=0, lean=False)
        completion_logprobs(model, b["input_ids"][[0, 0, 1]], b["attention_mask"][[0, 0, 1]],
                            torch.tensor([[20, 21], [22, 23], [24, 25]]), torch.ones(3, 2, dtype=torch.long),
                            share_prompt=True)
    # hidden_states 1, teacher 1, generation prefill + 2 HF decode steps, shared prompt: prompt pass + completion
    # pass + the token log-probs on the gathered [6, H] completion positions
    assert len(seen) == 8
    assert all(seen)


def test_a_model_without_output_embeddings_passes_through() -> None:
    module = torch.nn.Linear(2, 2)
    with contiguous_head_input(module):
        out = module(torch.ones(1, 2))
    assert out.shape == (1, 2)
