"""The fused top-k KD kernel (``srlm_pl.ops.fused_topk_kd``) against the generic ``losses.topk`` path: same loss,
metrics and gradients (hidden states and head weight) for every divergence, temperature, CE weight, ignored rows,
chunk sizes, k = V and a padded head; a frozen head gets no weight gradient; the dispatch picks the kernel for a
plain ``nn.Linear`` under autograd and the generic path otherwise."""

from __future__ import annotations

import pytest
import torch

from srlm_pl import ops
from srlm_pl.losses import topk
from srlm_pl.ops import fused_topk_kd

pytestmark = pytest.mark.usefixtures("one_torch_thread")
V = 37


def _case(n: int = 21, h: int = 6, k: int = 5, seed: int = 0, rows: int = V + 3):
    g = torch.Generator().manual_seed(seed)
    hidden = torch.randn(n, h, generator=g)
    head = torch.nn.Linear(h, rows, bias=False)
    with torch.no_grad():
        head.weight.copy_(torch.randn(rows, h, generator=g))
    targets = torch.randint(0, V, (n,), generator=g)
    targets[[1, 8, n - 1]] = -100
    t_lp = torch.log_softmax(torch.randn(n, V, generator=g, dtype=torch.float64) * 2, -1)
    lp, ids = t_lp.topk(k, -1)
    tail = torch.logsumexp(t_lp.scatter(-1, ids, -torch.inf), -1).float()  # the tail's log-mass, as stored
    return hidden, head, targets, ids, lp.float(), tail


def _run(fn, hidden, head, *args, **kw):
    hid = hidden.clone().requires_grad_(True)
    head.weight.grad = None
    loss, metrics = fn(hid, head, *args, **kw)
    loss.backward()
    return loss.detach(), metrics, hid.grad, head.weight.grad


@pytest.mark.parametrize(("divergence", "beta", "tau", "alpha", "chunk", "k"), [
    ("jsd", 0.0, 1.0, 0.0, 8, 5), ("jsd", 0.0, 2.0, 0.3, 5, 5), ("jsd", 0.5, 1.0, 0.5, 64, 3),
    ("jsd", 1.0, 0.7, 0.0, 8, 5), ("skew_kl", 0.0, 1.0, 0.1, 4, 5), ("skew_rkl", 0.0, 1.5, 0.0, 16, 7),
    ("jsd", 0.0, 1.0, 0.2, 8, V), ("jsd", 0.5, 1.0, 0.0, 8, V),
])  # fmt: skip
def test_fused_matches_generic_values_and_gradients(divergence, beta, tau, alpha, chunk, k):
    hidden, head, targets, ids, lp, tail = _case(k=k)
    kw = dict(alpha=alpha, temperature=tau, divergence=divergence, beta=beta, skew_alpha=0.2, chunk_size=chunk,
              vocab_size=V)
    f_loss, f_m, f_gh, f_gw = _run(fused_topk_kd.fused_topk_kd_loss, hidden, head, targets, ids, lp, tail, **kw)
    g_loss, g_m, g_gh, g_gw = _run(topk.chunked_topk_kd_loss, hidden, head, targets, ids, lp, tail, **kw)
    torch.testing.assert_close(f_loss, g_loss, rtol=1e-5, atol=1e-6)
    for name in ("kd", "ce", "kd_sum", "ce_sum", "n_tokens"):
        torch.testing.assert_close(f_m[name], g_m[name], rtol=1e-5, atol=1e-6)
    assert torch.isfinite(f_gh).all() and torch.isfinite(f_gw).all()
    torch.testing.assert_close(f_gh, g_gh, rtol=1e-4, atol=1e-6)
    torch.testing.assert_close(f_gw, g_gw, rtol=1e-4, atol=1e-6)
    assert f_gw[V:].abs().sum() == 0  # padding rows of the head get nothing


def test_small_tail_gradient_is_exact():
    """A teacher and student whose tail mass is ~1e-9: the fused kernel sums the tail directly (no 1 - sum)."""
    hidden, head, targets, ids, lp, tail = _case(seed=3, k=30)
    with torch.no_grad():
        head.weight[:V] *= 6.0  # peaky student: little mass outside any 30 tokens
    kw = dict(alpha=0.0, temperature=1.0, chunk_size=8, vocab_size=V)
    f = _run(fused_topk_kd.fused_topk_kd_loss, hidden, head, targets, ids, lp, tail, divergence="jsd", beta=0.0,
             skew_alpha=0.1, **kw)
    g = _run(topk.chunked_topk_kd_loss, hidden, head, targets, ids, lp, tail, **kw)
    torch.testing.assert_close(f[0], g[0], rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(f[2], g[2], rtol=1e-4, atol=1e-5)


def test_frozen_head_gets_no_weight_gradient():
    hidden, head, targets, ids, lp, tail = _case()
    head.weight.requires_grad_(False)
    hid = hidden.clone().requires_grad_(True)
    loss, _ = ops.chunked_topk_kd_loss(hid, head, targets, ids, lp, tail, alpha=0.0, vocab_size=V, chunk_size=8)
    loss.backward()
    assert hid.grad is not None and head.weight.grad is None


@pytest.mark.parametrize(("grad", "plain", "path"), [(True, True, "fused"), (False, True, "generic"),
                                                     (True, False, "generic")])
def test_dispatch(monkeypatch, grad, plain, path):
    calls: list[str] = []
    fused, generic = fused_topk_kd.fused_topk_kd_loss, topk.chunked_topk_kd_loss
    monkeypatch.setattr(fused_topk_kd, "fused_topk_kd_loss", lambda *a, **k: calls.append("fused") or fused(*a, **k))
    monkeypatch.setattr(topk, "chunked_topk_kd_loss", lambda *a, **k: calls.append("generic") or generic(*a, **k))
    hidden, head, targets, ids, lp, tail = _case()
    call_head = head if plain else (lambda x: head(x))
    with torch.set_grad_enabled(grad):
        ops.chunked_topk_kd_loss(hidden.requires_grad_(grad), call_head, targets, ids, lp, tail, alpha=0.0,
                                 vocab_size=V)
    assert calls == [path]


def test_ignored_rows_with_a_tail_free_teacher_do_not_poison_the_reverse_kl_gradient():
    """Reverse KL is infinite where the teacher's tail is 0 and the student's is not; on an ignored row that must
    not turn the gradients into NaN (0 * inf): the kernel equals the generic path run on the valid rows only."""
    hidden, head, targets, ids, lp, tail = _case(seed=5)
    ignored = targets == -100
    tail = torch.where(ignored, -torch.inf, tail)
    kw = dict(alpha=0.0, temperature=1.0, divergence="jsd", beta=1.0, skew_alpha=0.1, chunk_size=8, vocab_size=V)
    f_loss, _, f_gh, f_gw = _run(fused_topk_kd.fused_topk_kd_loss, hidden, head, targets, ids, lp, tail, **kw)
    keep = ~ignored
    g_loss, _, g_gh, g_gw = _run(topk.chunked_topk_kd_loss, hidden[keep], head, targets[keep], ids[keep], lp[keep],
                                 tail[keep], **kw)
    assert torch.isfinite(f_gw).all() and torch.isfinite(f_gh).all()
    torch.testing.assert_close(f_loss, g_loss, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(f_gh[keep], g_gh, rtol=1e-4, atol=1e-6)
    torch.testing.assert_close(f_gw, g_gw, rtol=1e-4, atol=1e-6)


def _gap_case(gap: float = 110.0):
    """Teacher rows from ``teacher_topk`` (the store writer) whose non-top-k logits all sit ``gap`` nats below the
    top-k: a tail mass of about e**-gap, below float32's smallest subnormal (e**-103.3) when gap = 110."""
    from srlm_pl.kd.topk_writer import teacher_topk

    n, k = 6, 4
    t_logits = torch.full((n, V), -gap, dtype=torch.float32)
    t_logits[:, :k] = torch.tensor([0.5, 0.0, -0.5, -1.0])
    ident = torch.nn.Linear(V, V, bias=False)
    with torch.no_grad():
        ident.weight.copy_(torch.eye(V))
    with torch.no_grad():
        ids, lp, tail = teacher_topk(t_logits, ident, k, vocab_size=V)
    g = torch.Generator().manual_seed(7)
    hidden = torch.randn(n, 5, generator=g)
    head = torch.nn.Linear(5, V, bias=False)
    with torch.no_grad():
        head.weight.copy_(torch.randn(V, 5, generator=g))
    targets = torch.randint(0, V, (n,), generator=g)
    return t_logits.double(), hidden, head, targets, ids, lp, tail


@pytest.mark.parametrize("fn", [fused_topk_kd.fused_topk_kd_loss, topk.chunked_topk_kd_loss])
def test_a_110_nat_tail_gap_trains_finitely_with_reverse_kl(fn):
    """Reverse KL (beta = 1) over the buckets with the teacher's tail at ~e**-110: finite, equal to a float64
    computation from the teacher's logits (the tail's log-mass, not a mass that underflowed to 0), finite grads."""
    t_logits, hidden, head, targets, ids, lp, tail = _gap_case()
    kw = dict(alpha=0.0, temperature=1.0, divergence="jsd", beta=1.0, skew_alpha=0.1, chunk_size=4, vocab_size=V)
    loss, _, gh, gw = _run(fn, hidden, head, targets, ids, lp, tail, **kw)
    assert torch.isfinite(loss) and torch.isfinite(gh).all() and torch.isfinite(gw).all()
    t_lse = torch.logsumexp(t_logits, -1, keepdim=True)
    t_b = torch.cat([t_logits.gather(-1, ids) - t_lse,
                     torch.logsumexp(t_logits.scatter(-1, ids, -torch.inf), -1, keepdim=True) - t_lse], -1)
    s = torch.log_softmax((hidden @ head.weight.T).double(), -1)
    s_b = torch.cat([s.gather(-1, ids), torch.logsumexp(s.scatter(-1, ids, -torch.inf), -1, keepdim=True)], -1)
    expected = (s_b.exp() * (s_b - t_b)).sum(-1).mean()  # KL(S || T) over the k + 1 buckets
    torch.testing.assert_close(loss.double(), expected, rtol=1e-5, atol=1e-5)


def test_generic_path_ignored_row_with_an_underflowing_tail_keeps_gradients_finite():
    """An ignored row whose teacher tail is ~e**-110 (and one with tail exactly 0 at the stored log, -inf): the
    generic path's reverse-KL gradients stay finite and equal those of the valid rows alone."""
    _, hidden, head, targets, ids, lp, tail = _gap_case()
    targets[[0, 3]] = -100
    tail = tail.clone()
    tail[3] = -torch.inf if tail[0] < 0 else 0.0  # log-mass store: -inf; mass store: 0
    kw = dict(alpha=0.0, temperature=1.0, divergence="jsd", beta=1.0, skew_alpha=0.1, chunk_size=4, vocab_size=V)
    keep = targets != -100
    # the kept rows get a finite teacher tail (a 20-nat gap) so the reference itself is finite
    _, _, _, _, _, _, tail20 = _gap_case(20.0)
    tail = torch.where(keep, tail20, tail)
    loss, _, gh, gw = _run(topk.chunked_topk_kd_loss, hidden, head, targets, ids, lp, tail, **kw)
    r_loss, _, r_gh, r_gw = _run(topk.chunked_topk_kd_loss, hidden[keep], head, targets[keep], ids[keep], lp[keep],
                                 tail[keep], **kw)
    assert torch.isfinite(gh).all() and torch.isfinite(gw).all()
    torch.testing.assert_close(loss, r_loss, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(gw, r_gw, rtol=1e-4, atol=1e-6)
    torch.testing.assert_close(gh[keep], r_gh, rtol=1e-4, atol=1e-6)
    assert torch.equal(gh[~keep], torch.zeros_like(gh[~keep]))
