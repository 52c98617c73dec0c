"""Top-k KD with the tail as one bucket (``srlm_pl.losses.topk``): values and gradients against float64 references
written out here, k = V equal to the full KL, the tail bucket not renormalised away (a hand-computed binary KL),
the forward KL over buckets below the full one, and ``chunked_topk_kd_loss`` (CE term, ignored rows, chunks)."""

from __future__ import annotations

import pytest
import torch

from srlm_pl.losses.kd import generalized_jsd
from srlm_pl.losses.topk import chunked_topk_kd_loss, topk_kd_divergence

pytestmark = pytest.mark.usefixtures("one_torch_thread")
V = 19


def teacher_topk(t_logits: torch.Tensor, k: int, tau: float = 1.0):
    """Top-k ids, log-probs and the tail's log-mass (as the store keeps it) of the tempered teacher (float64)."""
    lp = torch.log_softmax(t_logits.double() / tau, dim=-1)
    top, ids = lp.topk(k, dim=-1)
    return ids, top, torch.logsumexp(lp.scatter(-1, ids, -torch.inf), dim=-1)


def _kl(p: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
    return torch.where(p > 0, p * (p.log() - q.log()), 0.0).sum(-1)


def reference(s_logits, ids, t_lp, tail, divergence, beta, a, tau):
    """tau^2 * D over the k + 1 buckets: student probs at ids and 1 - their sum; teacher exp(t_lp) and exp(tail)."""
    p_s = torch.softmax(s_logits.double() / tau, dim=-1)
    s_top = p_s.gather(-1, ids)
    s_b = torch.cat([s_top, (1 - s_top.sum(-1))[:, None]], -1)
    t_b = torch.cat([t_lp.double().exp(), tail.double().exp()[:, None]], -1)
    if divergence == "skew_kl":
        d = _kl(t_b, a * t_b + (1 - a) * s_b)
    elif divergence == "skew_rkl":
        d = _kl(s_b, a * s_b + (1 - a) * t_b)
    elif beta == 0:
        d = _kl(t_b, s_b)
    elif beta == 1:
        d = _kl(s_b, t_b)
    else:
        m = beta * t_b + (1 - beta) * s_b
        d = beta * _kl(t_b, m) + (1 - beta) * _kl(s_b, m)
    return tau**2 * d


def _batch(n: int = 9, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(n, V, generator=g, dtype=torch.float64) * 2, torch.randn(n, V, generator=g,
            dtype=torch.float64) * 2, torch.rand(n, generator=g, dtype=torch.float64))


@pytest.mark.parametrize(("divergence", "beta", "a", "tau", "k"), [
    ("jsd", 0.0, 0.1, 1.0, 5), ("jsd", 0.0, 0.1, 2.0, 3), ("jsd", 0.5, 0.1, 1.0, 5), ("jsd", 1.0, 0.1, 1.0, 4),
    ("skew_kl", 0.0, 0.1, 1.0, 5), ("skew_rkl", 0.0, 0.2, 1.5, 6),
])  # fmt: skip
def test_values_and_gradients_match_float64_reference(divergence, beta, a, tau, k):
    s64, t64, w = _batch()
    ids, t_lp, tail = teacher_topk(t64, k, tau)
    s64.requires_grad_(True)
    expected = reference(s64, ids, t_lp, tail, divergence, beta, a, tau)
    (g_ref,) = torch.autograd.grad((expected * w).sum(), s64)

    s32 = s64.detach().float().requires_grad_(True)
    out = topk_kd_divergence(s32, ids, t_lp.float(), tail.float(), divergence=divergence, beta=beta,
                             skew_alpha=a, temperature=tau)
    (g32,) = torch.autograd.grad((out * w.float()).sum(), s32)
    assert out.dtype == torch.float32 and out.shape == (9,)
    torch.testing.assert_close(out.double(), expected.detach(), rtol=1e-4, atol=1e-6)
    torch.testing.assert_close(g32.double(), g_ref, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("tau", [1.0, 2.0])
def test_k_equal_to_vocabulary_is_the_full_kl_with_finite_gradients(tau):
    s64, t64, _ = _batch(seed=1)
    ids, t_lp, tail = teacher_topk(t64, V, tau)
    s32 = s64.float().requires_grad_(True)
    out = topk_kd_divergence(s32, ids, t_lp.float(), tail.float(), temperature=tau)  # forward KL over V + 1 buckets
    full = generalized_jsd(s64.float(), t64.float(), beta=0.0, temperature=tau)
    torch.testing.assert_close(out.detach(), full, rtol=1e-4, atol=1e-5)
    (g,) = torch.autograd.grad(out.sum(), s32)
    s_full = s64.float().requires_grad_(True)
    (g_full,) = torch.autograd.grad(generalized_jsd(s_full, t64.float(), beta=0.0, temperature=tau).sum(), s_full)
    assert torch.isfinite(g).all()
    torch.testing.assert_close(g, g_full, rtol=1e-4, atol=1e-6)


def test_the_tail_is_a_bucket_not_renormalised_away():
    """A student equal to the teacher on the top-k up to a common factor (so the renormalised top-k KL is 0) but
    with another tail mass pays exactly the binary KL of the tail masses."""
    _, t64, _ = _batch(seed=2)
    k = 4
    ids, t_lp, tail = teacher_topk(t64, k)
    s = t64.clone()
    outside = torch.ones_like(s, dtype=torch.bool).scatter(-1, ids, False)
    s[outside] += 1.5  # the student puts more mass on the teacher's tail
    out = topk_kd_divergence(s.float(), ids, t_lp.float(), tail.float())
    tail = tail.exp()
    p_s = torch.softmax(s, -1)
    s_tail = 1 - p_s.gather(-1, ids).sum(-1)
    binary = tail * (tail / s_tail).log() + (1 - tail) * ((1 - tail) / (1 - s_tail)).log()
    torch.testing.assert_close(out.double(), binary, rtol=1e-4, atol=1e-6)
    assert (out > 1e-3).all()
    renormalised_s = p_s.gather(-1, ids) / p_s.gather(-1, ids).sum(-1, keepdim=True)
    renormalised_t = t_lp.exp() / t_lp.exp().sum(-1, keepdim=True)
    torch.testing.assert_close(renormalised_s, renormalised_t)  # what a renormalising loss would see: no signal


@pytest.mark.parametrize("k", [1, 3, 10])
def test_forward_kl_over_buckets_is_at_most_the_full_kl(k):
    s64, t64, _ = _batch(seed=3)
    ids, t_lp, tail = teacher_topk(t64, k)
    out = topk_kd_divergence(s64.float(), ids, t_lp.float(), tail.float())
    full = generalized_jsd(s64.float(), t64.float(), beta=0.0)
    assert (out <= full + 1e-5).all() and (out > 0).all()


def test_chunked_loss_with_ce_and_ignored_rows_matches_reference_and_is_chunk_invariant():
    g = torch.Generator().manual_seed(4)
    n, h, k, alpha, tau = 13, 6, 5, 0.25, 1.0
    hidden = torch.randn(n, h, generator=g)
    head = torch.nn.Linear(h, V + 3, bias=False)  # padded head rows, sliced to vocab_size
    with torch.no_grad():
        head.weight.copy_(torch.randn(V + 3, h, generator=g))
    targets = torch.randint(0, V, (n,), generator=g)
    targets[[2, 7]] = -100
    t_logits = torch.randn(n, V, generator=g, dtype=torch.float64) * 2
    ids, t_lp, tail = teacher_topk(t_logits, k, tau)
    losses, grads = [], []
    for chunk in (4, 13, 100):
        hid = hidden.clone().requires_grad_(True)
        loss, metrics = chunked_topk_kd_loss(hid, head, targets, ids, t_lp.half(), tail.float(), alpha=alpha,
                                             temperature=tau, chunk_size=chunk, vocab_size=V)
        losses.append(loss.detach())
        grads.append(torch.autograd.grad(loss, hid)[0])
    h64 = hidden.double().requires_grad_(True)
    logits = h64 @ head.weight.double()[:V].T
    keep = targets != -100
    kd = reference(logits, ids, t_lp.half().double(), tail, "jsd", 0.0, 0.1, tau)[keep].mean()
    ce = torch.nn.functional.cross_entropy(logits[keep], targets[keep])
    ref = alpha * ce + (1 - alpha) * kd
    (g_ref,) = torch.autograd.grad(ref, h64)
    for loss, grad in zip(losses, grads, strict=True):
        torch.testing.assert_close(loss.double(), ref.detach(), rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(grad.double(), g_ref, rtol=1e-4, atol=1e-6)
    assert metrics["n_tokens"].item() == 11
    torch.testing.assert_close(metrics["kd"].double(), kd.detach(), rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(metrics["ce"].double(), ce.detach(), rtol=1e-5, atol=1e-6)


def test_rejects_mismatched_rows():
    with pytest.raises(ValueError, match="same number of rows N"):
        chunked_topk_kd_loss(torch.zeros(3, 2), torch.nn.Linear(2, 5, bias=False), torch.zeros(3, dtype=torch.long),
                             torch.zeros(2, 2, dtype=torch.long), torch.zeros(2, 2), torch.zeros(2), alpha=0.0)
