"""Shared-prompt log-probs (each distinct prompt run once, its KV cache gathered per row) against the
concatenated prompt + completion forward: same values, same gradients.

The model runs in float64, but Qwen2's RMSNorm computes in float32 whatever the input dtype; the shared
path sums the G rows' gradients before that norm's backward instead of after, so gradients agree to float32
rounding (~1e-7 relative), not float64's. Log-probs (forward) agree exactly."""

from __future__ import annotations

import pytest
import torch
from transformers import Qwen2Config, Qwen2ForCausalLM

from srlm_pl.generation.engine import left_pad
from srlm_pl.rl.logprobs import completion_logprobs, prompt_groups

PAD = 0


def tiny_model(seed: int = 0) -> Qwen2ForCausalLM:
    torch.manual_seed(seed)
    cfg = Qwen2Config(vocab_size=300, hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
                      num_key_value_heads=2, intermediate_size=128, max_position_embeddings=128,
                      initializer_range=0.2, rope_parameters={"rope_type": "default", "rope_theta": 100.0})
    return Qwen2ForCausalLM(cfg).double().train()


def rollout(order: list[int]) -> tuple[torch.Tensor, ...]:
    """Three prompts of different lengths (left-padded), two or three completions each (right-padded),
    rows in the given order."""
    prompts = [[5, 6, 7, 8, 9], [10, 11], [12, 13, 14]]
    completions = [[20, 21, 22, 23], [24, 25], [26], [27, 28, 29, 30], [31, 32, 33], [34, 35, 36, 37], [38, 39]]
    owner = [0, 0, 0, 1, 1, 2, 2]
    p_ids, p_mask = left_pad([prompts[owner[i]] for i in order], PAD)
    width = max(len(c) for c in completions)
    c_ids = torch.tensor([completions[i] + [PAD] * (width - len(completions[i])) for i in order])
    c_mask = torch.tensor([[1] * len(completions[i]) + [0] * (width - len(completions[i])) for i in order])
    return p_ids, p_mask, c_ids, c_mask


def logp_and_grads(model, batch, share: bool, with_entropy: bool = False):
    """Log-probs, entropy, gradients of a weighted sum, and the ``input_ids`` shape of every model forward."""
    model.zero_grad(set_to_none=True)
    forwards: list[tuple[int, ...]] = []
    hook = model.register_forward_pre_hook(lambda m, args, kwargs: forwards.append(tuple(kwargs["input_ids"].shape)),
                                           with_kwargs=True)
    weights = torch.linspace(0.5, 2.0, batch[2].numel(), dtype=torch.float64).view(batch[2].shape)
    try:
        logp, ent = completion_logprobs(model, *batch, chunk_size=5, with_entropy=with_entropy, share_prompt=share)
    finally:
        hook.remove()
    loss = (logp * weights).sum() + (ent.sum() if ent is not None else 0.0)
    loss.backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    return logp.detach(), ent, grads, forwards


def shared_forwards(batch) -> list[tuple[int, ...]]:
    """The forwards of the shared path: the 3 distinct prompts once ``[3, P]``, then every row's completion on top
    of its prompt's cache ``[B, C]``."""
    return [(3, batch[0].shape[1]), tuple(batch[2].shape)]


def test_prompt_groups_finds_repeated_prompts() -> None:
    p_ids, p_mask, _, _ = rollout([0, 3, 1, 5, 2, 4, 6])
    first, inverse = prompt_groups(p_ids, p_mask)
    assert len(first) == 3
    assert torch.equal(p_ids[first][inverse], p_ids) and torch.equal(p_mask[first][inverse], p_mask)
    assert prompt_groups(p_ids[[0, 1, 3]], p_mask[[0, 1, 3]]) is None  # all distinct: nothing to share


@pytest.mark.parametrize("order", [[0, 1, 2, 3, 4, 5, 6], [6, 0, 3, 5, 1, 4, 2]])
def test_shared_prompt_matches_concatenated_forward(order: list[int]) -> None:
    model = tiny_model()
    batch = rollout(order)
    ref_logp, _, ref_grads, ref_forwards = logp_and_grads(model, batch, share=False)
    logp, _, grads, forwards = logp_and_grads(model, batch, share=True)
    # the arms ran different code: one forward over prompt + completion, against each prompt once then completions
    assert ref_forwards == [(7, batch[0].shape[1] + batch[2].shape[1])]
    assert forwards == shared_forwards(batch)
    assert (logp[batch[3] == 0] == 0).all()  # padding positions stay exactly zero
    assert (ref_logp[batch[3] == 1] < 0).all()
    torch.testing.assert_close(logp, ref_logp, rtol=1e-12, atol=1e-12)
    assert ref_grads.keys() == grads.keys() and len(grads) > 0
    for name, g in ref_grads.items():
        assert (grads[name] - g).abs().max() <= 1e-5 * g.abs().max(), name
    # the prompt tokens (ids 5..14, never in a completion) get their gradient through the shared KV cache: the
    # shared arm's own prompt rows are non-zero and match the concatenated forward's, row by row
    embed, ref_embed = grads["model.embed_tokens.weight"], ref_grads["model.embed_tokens.weight"]
    prompt_rows, ref_prompt_rows = embed[5:15], ref_embed[5:15]
    assert (prompt_rows.abs().amax(-1) > 1e-2 * embed.abs().max()).all()
    assert ((prompt_rows - ref_prompt_rows).abs().amax(-1) <= 1e-5 * ref_prompt_rows.abs().amax(-1)).all()


def test_shared_prompt_entropy_matches() -> None:
    model = tiny_model(1)
    batch = rollout([0, 1, 2, 3, 4, 5, 6])
    _, ref_ent, ref_grads, ref_forwards = logp_and_grads(model, batch, share=False, with_entropy=True)
    _, ent, grads, forwards = logp_and_grads(model, batch, share=True, with_entropy=True)
    assert len(ref_forwards) == 1 and forwards == shared_forwards(batch)
    torch.testing.assert_close(ent.detach(), ref_ent.detach(), rtol=1e-12, atol=1e-12)
    g, ref = grads["model.embed_tokens.weight"], ref_grads["model.embed_tokens.weight"]
    assert (g - ref).abs().max() <= 1e-5 * ref.abs().max()
    assert (g[5:15].abs().amax(-1) > 1e-2 * g.abs().max()).all()  # the entropy's gradient reaches the prompt too


def test_gradient_checkpointing_falls_back_to_concatenated_forward() -> None:
    model = tiny_model()
    batch = rollout([0, 1, 2, 3, 4, 5, 6])
    ref_logp, _, ref_grads, _ = logp_and_grads(model, batch, share=False)
    model.gradient_checkpointing_enable()
    logp, _, grads, forwards = logp_and_grads(model, batch, share=True)
    assert forwards == [(7, batch[0].shape[1] + batch[2].shape[1])]  # one concatenated forward, no shared prompt
    torch.testing.assert_close(logp, ref_logp, rtol=1e-12, atol=1e-12)
    for name, g in ref_grads.items():  # the concatenated forward again: float64-exact, not float32-close
        torch.testing.assert_close(grads[name], g, rtol=1e-9, atol=1e-12, msg=name)
