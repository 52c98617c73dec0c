"""The fused LM-head token log-probs (and entropy) equal a float64 reference in values and gradients."""

import pytest
import torch
from torch import nn

from srlm_pl.ops import chunked_token_logprobs
from srlm_pl.ops.linear_logprob import linear_token_logprobs


def _reference(hidden, weight, targets, vocab, temperature):
    logp_all = torch.log_softmax(hidden.double() @ weight.double()[:vocab].T / temperature, -1)
    return logp_all.gather(-1, targets[:, None]).squeeze(-1), -(logp_all.exp() * logp_all).sum(-1)


@pytest.mark.parametrize("chunk, temperature, use_logp, use_entropy",
                         [(1, 1.0, True, True), (4, 0.7, True, True), (100, 1.3, True, False),
                          (3, 1.0, False, True), (5, 0.9, True, False)])
def test_values_and_gradients_match_float64(chunk: int, temperature: float, use_logp: bool,
                                            use_entropy: bool) -> None:
    torch.manual_seed(0)
    n, h, v_rows, vocab = 11, 8, 23, 20  # head rows beyond the tokenizer's length are padding
    hidden = torch.randn(n, h, requires_grad=True)
    head = nn.Linear(h, v_rows, bias=False)
    targets = torch.randint(0, vocab, (n,))
    g_logp, g_ent = torch.randn(n), torch.randn(n)  # arbitrary upstream gradients (a GRPO loss's are per token)
    logp, entropy = linear_token_logprobs(hidden, head, targets, temperature=temperature, chunk_size=chunk,
                                          vocab_size=vocab, with_entropy=True)
    ref_h = hidden.detach().double().requires_grad_()
    ref_w = head.weight.detach().double().requires_grad_()
    ref_logp, ref_ent = _reference(ref_h, ref_w, targets, vocab, temperature)
    torch.testing.assert_close(logp.double(), ref_logp, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(entropy.double(), ref_ent, rtol=1e-5, atol=1e-6)
    loss = (logp * g_logp).sum() * use_logp + (entropy * g_ent).sum() * use_entropy
    ref = (ref_logp * g_logp.double()).sum() * use_logp + (ref_ent * g_ent.double()).sum() * use_entropy
    loss.backward()
    ref.backward()
    torch.testing.assert_close(hidden.grad.double(), ref_h.grad, rtol=1e-4, atol=1e-6)
    torch.testing.assert_close(head.weight.grad.double(), ref_w.grad, rtol=1e-4, atol=1e-6)
    assert head.weight.grad[vocab:].abs().sum() == 0  # padding rows get no gradient


def test_dispatch_and_agreement_with_the_generic_path() -> None:
    torch.manual_seed(1)
    head = nn.Linear(6, 15, bias=False)
    hidden = torch.randn(9, 6, requires_grad=True)
    targets = torch.randint(0, 15, (9,))
    weights = torch.randn(9)
    fused, fused_ent = chunked_token_logprobs(hidden, head, targets, chunk_size=4, temperature=0.8,
                                              with_entropy=True)
    assert fused.grad_fn is not None and "LinearLogprob" in type(fused.grad_fn).__name__
    ((fused * weights).sum() + fused_ent.sum()).backward()
    g_fused = hidden.grad.clone()
    hidden.grad = None
    generic, generic_ent = chunked_token_logprobs(hidden, lambda x: head(x), targets, chunk_size=4, temperature=0.8,
                                                  with_entropy=True)  # a callable: the generic path
    ((generic * weights).sum() + generic_ent.sum()).backward()
    torch.testing.assert_close(fused, generic)
    torch.testing.assert_close(fused_ent, generic_ent)
    torch.testing.assert_close(g_fused, hidden.grad)
    with torch.no_grad():  # no gradient: the generic path, same numbers
        torch.testing.assert_close(chunked_token_logprobs(hidden, head, targets, temperature=0.8)[0], fused)


def test_bf16_autocast_is_close_to_float32() -> None:
    torch.manual_seed(2)
    head = nn.Linear(32, 50, bias=False)
    hidden = torch.randn(20, 32, requires_grad=True)
    targets = torch.randint(0, 50, (20,))
    ref, _ = linear_token_logprobs(hidden, head, targets, chunk_size=8)
    ref.sum().backward()
    g_ref = hidden.grad.clone()
    hidden.grad = None
    with torch.autocast("cpu", dtype=torch.bfloat16):
        low, _ = linear_token_logprobs(hidden, head, targets, chunk_size=8)
    low.sum().backward()
    assert low.dtype == torch.float32 and hidden.grad.dtype == torch.float32
    torch.testing.assert_close(low, ref, atol=0.1, rtol=0.02)
    assert torch.nn.functional.cosine_similarity(hidden.grad.flatten(), g_ref.flatten(), dim=0) > 0.99
