"""KD loss cases the issue names that tests/test_losses.py does not cover: ``chunked_kd_loss`` at beta = 0 and
beta = 1, temperatures != 1 and targets masked with -100 (ignored rows inside the chunked path), against a
float64 reference written here with explicit probabilities; chunk-size invariance; no full-size logits kept
for backward."""

from __future__ import annotations

import math

import pytest
import torch

from srlm_pl.ops import chunked_kd_loss
from srlm_pl.ops.fused_kd import _FusedKD

N, HS, HT, V, VS = 13, 6, 10, 21, 19  # rows, student/teacher width, head rows (padded), tokenizer vocab
FUSED_NODE = _FusedKD._backward_cls  # the autograd node of the fused KD Function


pytestmark = pytest.mark.usefixtures("one_torch_thread")  # conftest.py: small ops, no thread pool


def _probs(logits: torch.Tensor, tau: float) -> torch.Tensor:
    z = torch.exp(logits.double() / tau - (logits.double() / tau).max(-1, keepdim=True).values)
    return z / z.sum(-1, keepdim=True)


def _kl(p: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
    return (p * torch.log(p / q)).sum(-1)


def reference(s_logits, t_logits, targets, beta, tau, alpha):
    """alpha * CE + (1 - alpha) * tau^2 * JSD_beta over rows whose target is not -100 (float64)."""
    p_s, p_t = _probs(s_logits, tau), _probs(t_logits, tau)
    if beta == 0:
        div = _kl(p_t, p_s)
    elif beta == 1:
        div = _kl(p_s, p_t)
    else:
        mix = beta * p_t + (1 - beta) * p_s
        div = beta * _kl(p_t, mix) + (1 - beta) * _kl(p_s, mix)
    keep = targets != -100
    kd = (div * tau**2)[keep].mean()
    p1 = _probs(s_logits, 1.0)
    ce = -torch.log(p1[keep].gather(-1, targets[keep][:, None])).mean()
    return alpha * ce + (1 - alpha) * kd, kd, ce


def _setup(seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    s_hidden = torch.randn(N, HS, generator=g)
    t_hidden = torch.randn(N, HT, generator=g)
    s_head, t_head = torch.nn.Linear(HS, V, bias=False), torch.nn.Linear(HT, V + 4, bias=False)
    with torch.no_grad():
        s_head.weight.copy_(torch.randn(V, HS, generator=g))
        t_head.weight.copy_(torch.randn(V + 4, HT, generator=g))
    targets = torch.randint(0, VS, (N,), generator=g)
    targets[[0, 1, 5, 12]] = -100  # masked (prompt / padding) rows
    return s_hidden, t_hidden, s_head, t_head, targets


@pytest.mark.parametrize("beta", [0.0, 1.0, 0.3])
@pytest.mark.parametrize("tau", [1.0, 0.5, 3.0])
@pytest.mark.parametrize("alpha", [0.0, 0.4])
@pytest.mark.parametrize("path", ["fused", "generic"])
def test_chunked_kd_with_masked_targets_matches_float64_reference(beta, tau, alpha, path):
    """Both dispatch targets of ``chunked_kd_loss``: the fused Function (a plain ``nn.Linear`` student head) and
    the generic checkpointed chunks (any other callable head)."""
    s_hidden, t_hidden, s_head, t_head, targets = _setup()
    h = s_hidden.clone().requires_grad_()
    head = s_head if path == "fused" else (lambda x: s_head(x))
    loss, metrics = chunked_kd_loss(h, t_hidden, head, t_head, targets, beta=beta, temperature=tau, alpha=alpha,
                                    chunk_size=4, vocab_size=VS)
    assert isinstance(loss.grad_fn, FUSED_NODE) == (path == "fused")
    loss.backward()

    h64 = s_hidden.double().requires_grad_()
    w64 = s_head.weight.detach().double().requires_grad_()
    s_logits = (h64 @ w64.T)[:, :VS]
    t_logits = (t_hidden.double() @ t_head.weight.detach().double().T)[:, :VS]
    ref, kd, ce = reference(s_logits, t_logits, targets, beta, tau, alpha)
    ref.backward()
    torch.testing.assert_close(loss.double(), ref, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(metrics["kd"].double(), kd.detach(), rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(metrics["ce"].double(), ce.detach(), rtol=1e-5, atol=1e-6)
    assert metrics["n_tokens"].item() == 9
    torch.testing.assert_close(h.grad.double(), h64.grad, rtol=1e-4, atol=1e-6)
    torch.testing.assert_close(s_head.weight.grad.double(), w64.grad, rtol=1e-4, atol=1e-6)
    assert h.grad[[0, 1, 5, 12]].abs().max() == 0  # masked rows get no gradient
    assert t_head.weight.grad is None  # the teacher's head gets none either


def test_masked_rows_do_not_change_the_loss():
    s_hidden, t_hidden, s_head, t_head, targets = _setup(1)
    keep = targets != -100
    kw = dict(beta=0.5, temperature=2.0, alpha=0.2, vocab_size=VS)
    full, _ = chunked_kd_loss(s_hidden, t_hidden, s_head, t_head, targets, chunk_size=3, **kw)
    only, _ = chunked_kd_loss(s_hidden[keep], t_hidden[keep], s_head, t_head, targets[keep], chunk_size=3, **kw)
    torch.testing.assert_close(full, only, rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("beta", [0.0, 0.5, 1.0])
def test_chunked_equals_unchunked(beta):
    s_hidden, t_hidden, s_head, t_head, targets = _setup(2)
    results = []
    for chunk in (1, 5, N):
        h = s_hidden.clone().requires_grad_()
        s_head.zero_grad()
        loss, _ = chunked_kd_loss(h, t_hidden, s_head, t_head, targets, beta=beta, temperature=1.5, alpha=0.3,
                                  chunk_size=chunk, vocab_size=VS)
        loss.backward()
        results.append((loss.detach(), h.grad.clone(), s_head.weight.grad.clone()))
    for other in results[1:]:
        for a, b in zip(results[0], other, strict=True):
            torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-7)


def test_no_full_vocabulary_logits_are_saved_for_backward():
    n, h, v = 512, 16, 8192
    g = torch.Generator().manual_seed(3)
    s_head, t_head = torch.nn.Linear(h, v, bias=False), torch.nn.Linear(2 * h, v, bias=False)
    s_hidden = torch.randn(n, h, generator=g, requires_grad=True)
    t_hidden = torch.randn(n, 2 * h, generator=g)
    targets = torch.randint(0, v, (n,), generator=g)
    saved: list[tuple[tuple[int, ...], torch.dtype]] = []

    def pack(t: torch.Tensor) -> torch.Tensor:
        saved.append((tuple(t.shape), t.dtype))
        return t

    def saved_bytes() -> int:
        return sum(math.prod(shape) * dtype.itemsize for shape, dtype in saved)

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):  # a callable head: the generic path
        loss, _ = chunked_kd_loss(s_hidden, t_hidden, lambda x: s_head(x), t_head, targets, beta=0.5,
                                  temperature=1.0, alpha=0.5, chunk_size=32)
    assert not isinstance(loss.grad_fn, FUSED_NODE)
    assert saved and saved_bytes() < n * v * 4 / 50  # one [n, V] float32 logits tensor would be n*v*4 bytes
    assert all(v not in shape for shape, _ in saved)  # not even one chunk of logits
    loss.backward()
    assert torch.isfinite(s_hidden.grad).all()
    saved.clear()
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):  # a plain Linear head: the fused path
        fused, _ = chunked_kd_loss(s_hidden, t_hidden, s_head, t_head, targets, beta=0.5, temperature=1.0,
                                   alpha=0.5, chunk_size=32)
    assert isinstance(fused.grad_fn, FUSED_NODE)
    # exactly the float32 gradients of the hidden states [n, h] and of the head [v, h], nothing else (the
    # generic path saves its chunk inputs instead)
    assert saved == [((n, h), torch.float32), ((v, h), torch.float32)]
    assert saved_bytes() == (n + v) * h * 4
    torch.testing.assert_close(fused, loss)
