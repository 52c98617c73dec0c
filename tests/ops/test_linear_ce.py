"""The fused LM-head cross-entropy equals a float64 reference in value and gradients."""

import pytest
import torch
from torch import nn

from srlm_pl.ops import chunked_cross_entropy
from srlm_pl.ops.linear_ce import _LinearCrossEntropy, applies, linear_cross_entropy

FUSED_NODE = _LinearCrossEntropy._backward_cls  # the autograd node of the fused Function


def saved_tensors(fn):
    """``fn()``'s result and the (shape, dtype) of every tensor its autograd graph saves for backward."""
    saved: list[tuple[tuple[int, ...], torch.dtype]] = []

    def pack(t):
        saved.append((tuple(t.shape), t.dtype))
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        out = fn()
    return out, saved


def _reference(hidden, weight, targets, vocab):
    logits = hidden.double() @ weight.double()[:vocab].T
    valid = targets != -100
    return -(torch.log_softmax(logits, -1)[valid].gather(-1, targets[valid][:, None])).sum()


@pytest.mark.parametrize("chunk", [1, 3, 7, 100])
def test_value_and_gradients_match_float64(chunk: int) -> None:
    torch.manual_seed(0)
    n, h, v_rows, vocab = 11, 8, 23, 20  # head rows beyond the tokenizer's length are padding
    hidden = torch.randn(n, h, requires_grad=True)
    head = nn.Linear(h, v_rows, bias=False)
    targets = torch.randint(0, vocab, (n,))
    targets[[2, 5]] = -100
    loss, count = linear_cross_entropy(hidden, head, targets, chunk_size=chunk, vocab_size=vocab)
    assert isinstance(loss.grad_fn, FUSED_NODE)
    (2.5 * loss).backward()
    ref_h = hidden.detach().double().requires_grad_()
    ref_w = head.weight.detach().double().requires_grad_()
    ref = _reference(ref_h, ref_w, targets, vocab)
    (2.5 * ref).backward()
    assert int(count) == 9
    assert loss.item() == pytest.approx(ref.item(), rel=1e-5)
    torch.testing.assert_close(hidden.grad.double(), ref_h.grad, rtol=1e-4, atol=1e-6)
    torch.testing.assert_close(head.weight.grad.double(), ref_w.grad, rtol=1e-4, atol=1e-6)
    assert head.weight.grad[vocab:].abs().sum() == 0  # padding rows get no gradient


def test_dispatch_and_agreement_with_the_generic_path(monkeypatch: pytest.MonkeyPatch) -> None:
    torch.manual_seed(1)
    head = nn.Linear(6, 15, bias=False)
    hidden = torch.randn(9, 6, requires_grad=True)
    targets = torch.randint(0, 15, (9,))
    assert applies(head) and not applies(nn.Linear(6, 15))
    with torch.no_grad():
        assert not applies(head)
    # a plain bias-free Linear under autograd: the fused Function ran, and it saved only the two gradients
    # ([N, H] and [V, H] float32); the generic path saves checkpointed chunk inputs instead
    (fused, _), saved = saved_tensors(lambda: chunked_cross_entropy(hidden, head, targets, chunk_size=4))
    assert isinstance(fused.grad_fn, FUSED_NODE)
    assert saved == [((9, 6), torch.float32), ((15, 6), torch.float32)]
    fused.backward()
    g_fused = hidden.grad.clone()
    hidden.grad = None
    (generic, _), saved = saved_tensors(lambda: chunked_cross_entropy(hidden, lambda x: head(x), targets,
                                                                      chunk_size=4))  # a callable: generic path
    assert not isinstance(generic.grad_fn, FUSED_NODE)
    assert ((4, 6), torch.float32) in saved  # the checkpointed hidden chunks
    generic.backward()
    assert fused.item() == pytest.approx(generic.item(), rel=1e-6)
    torch.testing.assert_close(g_fused, hidden.grad)
    monkeypatch.setenv("SRLM_FUSED_CE", "0")  # the benchmarks' switch: the same plain head takes the generic path
    assert not applies(head)
    off, _ = chunked_cross_entropy(hidden, head, targets, chunk_size=4)
    assert not isinstance(off.grad_fn, FUSED_NODE)
    assert off.item() == pytest.approx(generic.item(), rel=1e-6)


def test_bf16_autocast_is_close_to_float32() -> None:
    torch.manual_seed(2)
    head = nn.Linear(32, 50, bias=False)
    hidden = torch.randn(20, 32)
    targets = torch.randint(0, 50, (20,))
    exact = _reference(hidden, head.weight, targets, 50).item()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss, _ = linear_cross_entropy(hidden.requires_grad_(), head, targets, chunk_size=8)
    loss.backward()
    assert loss.item() == pytest.approx(exact, rel=2e-2)
    assert hidden.grad.dtype == torch.float32 and torch.isfinite(hidden.grad).all()
