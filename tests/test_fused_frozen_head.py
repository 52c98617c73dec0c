"""The three fused LM-head losses with a frozen head (LoRA): the hidden gradient is unchanged, no weight gradient is
built; and their saved gradients cannot be scaled twice by a second backward."""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch
from torch import Tensor, nn

from srlm_pl.linear_ce import linear_cross_entropy
from srlm_pl.linear_logprob import linear_token_logprobs
from srlm_pl.losses import chunked_kd_loss

N, H, V_ROWS, VOCAB = 13, 8, 23, 20


def ce(hidden: Tensor, head: nn.Linear, targets: Tensor) -> Tensor:
    return linear_cross_entropy(hidden, head, targets, chunk_size=4, vocab_size=VOCAB)[0]


def logprob(hidden: Tensor, head: nn.Linear, targets: Tensor) -> Tensor:
    logp, entropy = linear_token_logprobs(hidden, head, targets, temperature=0.7, chunk_size=4, vocab_size=VOCAB,
                                          with_entropy=True)
    return (logp * torch.linspace(-1, 2, N)).sum() + 0.3 * entropy.sum()


TEACHER_H = torch.randn(N, 5, generator=torch.Generator().manual_seed(3))
TEACHER = nn.Linear(5, V_ROWS, bias=False)


def kd(hidden: Tensor, head: nn.Linear, targets: Tensor) -> Tensor:
    return chunked_kd_loss(hidden, TEACHER_H, head, TEACHER, targets, beta=0.5, temperature=2.0, alpha=0.3,
                           chunk_size=4, vocab_size=VOCAB)[0]


LOSSES = {"linear_ce": ce, "linear_logprob": logprob, "fused_kd": kd}


def grads(loss_fn: Callable, frozen: bool) -> tuple[Tensor, Tensor | None]:
    torch.manual_seed(0)
    head = nn.Linear(H, V_ROWS, bias=False)
    head.weight.requires_grad_(not frozen)
    hidden = torch.randn(N, H, requires_grad=True)
    targets = torch.randint(0, VOCAB, (N,))
    (2.5 * loss_fn(hidden, head, targets)).backward()
    return hidden.grad, head.weight.grad


@pytest.mark.parametrize("name", list(LOSSES))
def test_a_frozen_head_gets_no_gradient_and_the_hidden_gradient_is_unchanged(name: str) -> None:
    g_h, g_w = grads(LOSSES[name], frozen=False)
    f_h, f_w = grads(LOSSES[name], frozen=True)
    assert g_w is not None and g_w.abs().sum() > 0
    assert f_w is None
    torch.testing.assert_close(f_h, g_h, rtol=0, atol=0)


@pytest.mark.parametrize("name", ["linear_ce", "fused_kd"])
def test_a_second_backward_through_the_same_graph_is_refused(name: str) -> None:
    """These two precompute their gradients in the forward and scale them in place by the upstream gradient."""
    torch.manual_seed(0)
    head = nn.Linear(H, V_ROWS, bias=False)
    hidden = torch.randn(N, H, requires_grad=True)
    loss = 3.0 * LOSSES[name](hidden, head, torch.randint(0, VOCAB, (N,)))
    loss.backward(retain_graph=True)
    with pytest.raises(RuntimeError, match="backward can run once"):
        loss.backward()


def test_the_log_prob_backward_recomputes_so_a_second_backward_accumulates_exactly() -> None:
    torch.manual_seed(0)
    head = nn.Linear(H, V_ROWS, bias=False)
    hidden = torch.randn(N, H, requires_grad=True)
    loss = 3.0 * logprob(hidden, head, torch.randint(0, VOCAB, (N,)))
    loss.backward(retain_graph=True)
    once = hidden.grad.clone(), head.weight.grad.clone()
    loss.backward()
    torch.testing.assert_close(hidden.grad, 2 * once[0])
    torch.testing.assert_close(head.weight.grad, 2 * once[1])
