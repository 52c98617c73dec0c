"""The three fused LM-head losses with a frozen head (LoRA): the hidden gradient is unchanged, no weight gradient is
built; and their saved gradients cannot be scaled twice by a second backward."""

from __future__ import annotations

import pytest
import torch
from torch import Tensor, nn
from torch.utils._python_dispatch import TorchDispatchMode

from srlm_pl.ops import chunked_kd_loss
from srlm_pl.ops.linear_ce import linear_cross_entropy
from srlm_pl.ops.linear_logprob import linear_token_logprobs

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
FUSED_NODES = {"linear_ce": "_LinearCrossEntropyBackward", "linear_logprob": "_LinearLogprobBackward",
               "fused_kd": "_FusedKDBackward"}
MATMULS = {torch.ops.aten.mm, torch.ops.aten.addmm, torch.ops.aten.addmm_, torch.ops.aten.bmm}


class MatmulShapes(TorchDispatchMode):
    """Records the output shape of every matrix product (out= and in-place forms included)."""

    def __init__(self) -> None:
        super().__init__()
        self.shapes: list[tuple[int, ...]] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):  # noqa: ANN001, ANN204
        out = func(*args, **(kwargs or {}))
        if func.overloadpacket in MATMULS:
            self.shapes.append(tuple(out.shape))
        return out


def grads(name: str, frozen: bool) -> tuple[Tensor, Tensor | None, list[tuple[int, ...]]]:
    """Hidden and weight gradients of ``2.5 * loss``, and the shapes of the products forward + backward ran."""
    torch.manual_seed(0)
    head = nn.Linear(H, V_ROWS, bias=False)
    head.weight.requires_grad_(not frozen)
    hidden = torch.randn(N, H, requires_grad=True)
    targets = torch.randint(0, VOCAB, (N,))
    with MatmulShapes() as products:
        loss = LOSSES[name](hidden, head, targets)
        assert FUSED_NODES[name] in {type(node).__name__ for node in _graph_nodes(loss)}  # the fused path ran
        (2.5 * loss).backward()
    return hidden.grad, head.weight.grad, products.shapes


def _graph_nodes(t: Tensor) -> list:
    """Every autograd node reachable from ``t`` (the log-prob loss wraps the Function's node in sums/products)."""
    seen, todo = [], [t.grad_fn]
    while todo:
        node = todo.pop()
        if node is None or node in seen:
            continue
        seen.append(node)
        todo.extend(next_node for next_node, _ in node.next_functions)
    return seen


@pytest.mark.parametrize("name", list(LOSSES))
def test_a_frozen_head_gets_no_gradient_and_the_hidden_gradient_is_unchanged(name: str) -> None:
    g_h, g_w, trained = grads(name, frozen=False)
    f_h, f_w, frozen = grads(name, frozen=True)
    assert g_w is not None and g_w.abs().sum() > 0
    assert f_w is None
    torch.testing.assert_close(f_h, g_h, rtol=0, atol=0)
    # the [V, H] weight-gradient product (one per chunk of 4 rows) is computed only for a trainable head
    chunks = len(range(0, N, 4))
    assert trained.count((VOCAB, H)) == chunks
    assert frozen.count((VOCAB, H)) == 0
    assert len(frozen) == len(trained) - chunks  # nothing else changes


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
