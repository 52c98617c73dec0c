"""DistiLLM's skew KL / skew reverse KL (``srlm_pl.losses.kd``): values and gradients of the float32 functions
against float64 references written out here, their properties (skew_alpha = 0 is the plain KL, 0 at S = T,
bounded by -log(skew_alpha)), ``chunked_kd_loss(divergence=...)`` against a full-logit reference, and the
dispatch sending skew divergences to the generic path and jsd to the fused kernel."""

from __future__ import annotations

import math

import pytest
import torch

from srlm_pl import ops
from srlm_pl.losses import kd
from srlm_pl.losses.kd import generalized_jsd, kd_divergence, skew_kl, skew_rkl
from srlm_pl.ops import fused_kd

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _p(logits: torch.Tensor, tau: float) -> torch.Tensor:
    return torch.softmax(logits.double() / tau, dim=-1)


def ref_skew_kl(s: torch.Tensor, t: torch.Tensor, a: float, tau: float) -> torch.Tensor:
    """tau^2 * KL(T || a T + (1 - a) S), float64, explicit probabilities."""
    p_s, p_t = _p(s, tau), _p(t, tau)
    m = a * p_t + (1 - a) * p_s
    return tau**2 * (p_t * (p_t.log() - m.log())).sum(-1)


def ref_skew_rkl(s: torch.Tensor, t: torch.Tensor, a: float, tau: float) -> torch.Tensor:
    """tau^2 * KL(S || a S + (1 - a) T), float64."""
    p_s, p_t = _p(s, tau), _p(t, tau)
    m = a * p_s + (1 - a) * p_t
    return tau**2 * (p_s * (p_s.log() - m.log())).sum(-1)


REFS = {"skew_kl": (skew_kl, ref_skew_kl), "skew_rkl": (skew_rkl, ref_skew_rkl)}


def _batch(seed: int = 0, scale: float = 3.0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    s = torch.randn(4, 3, 17, generator=g, dtype=torch.float64) * scale
    t = torch.randn(4, 3, 17, generator=g, dtype=torch.float64) * scale
    w = torch.rand(4, 3, generator=g, dtype=torch.float64)  # weights so every token's gradient is checked
    return s, t, w


@pytest.mark.parametrize("name", ["skew_kl", "skew_rkl"])
@pytest.mark.parametrize(("a", "tau"), [(0.1, 1.0), (0.3, 2.0), (0.0, 0.7), (0.9, 1.0)])
def test_values_and_gradients_match_float64_reference(name, a, tau):
    fn, ref = REFS[name]
    s64, t64, w = _batch()
    s64.requires_grad_(True)
    expected = ref(s64, t64, a, tau)
    (g_ref,) = torch.autograd.grad((expected * w).sum(), s64)

    s32 = s64.detach().float().requires_grad_(True)
    out = fn(s32, t64.float(), skew_alpha=a, temperature=tau)
    assert out.dtype == torch.float32 and out.shape == (4, 3)
    (g32,) = torch.autograd.grad((out * w.float()).sum(), s32)
    torch.testing.assert_close(out.double(), expected.detach(), rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(g32.double(), g_ref, rtol=1e-4, atol=1e-6)


def test_skew_alpha_zero_is_the_plain_kl_in_each_direction():
    s, t, _ = _batch(1)
    s, t = s.float(), t.float()
    torch.testing.assert_close(skew_kl(s, t, skew_alpha=0.0), generalized_jsd(s, t, beta=0.0))  # KL(T || S)
    torch.testing.assert_close(skew_rkl(s, t, skew_alpha=0.0), generalized_jsd(s, t, beta=1.0))  # KL(S || T)
    # and the two are different divergences (the test above is not vacuous)
    assert not torch.allclose(skew_kl(s, t, skew_alpha=0.1), skew_rkl(s, t, skew_alpha=0.1))


@pytest.mark.parametrize("name", ["skew_kl", "skew_rkl"])
def test_zero_when_student_equals_teacher(name):
    s, _, _ = _batch(2)
    out = REFS[name][0](s.float(), s.float(), skew_alpha=0.1, temperature=1.5)
    torch.testing.assert_close(out, torch.zeros(4, 3), atol=1e-6, rtol=0)


@pytest.mark.parametrize("name", ["skew_kl", "skew_rkl"])
@pytest.mark.parametrize("a", [0.05, 0.1, 0.5])
def test_bounded_by_minus_log_skew_alpha_even_for_disjoint_distributions(name, a):
    v = 12
    s = torch.full((v, v), -40.0)
    t = torch.full((v, v), -40.0)
    s[torch.arange(v), torch.arange(v)] = 40.0  # student: one-hot on token i
    t[torch.arange(v), (torch.arange(v) + 1) % v] = 40.0  # teacher: one-hot on another token
    out = REFS[name][0](s, t, skew_alpha=a)
    assert torch.isfinite(out).all()
    assert (out <= -math.log(a) + 1e-5).all()
    torch.testing.assert_close(out, torch.full((v,), -math.log(a)), rtol=1e-4, atol=1e-4)  # the bound is tight here
    plain = kd_divergence(s, t, divergence="jsd", beta=0.0)
    assert (plain > 50).all()  # the unskewed KL is huge there


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"divergence": "skew"}, r"divergence must be one of jsd, skew_kl, skew_rkl, got 'skew'"),
    ({"divergence": "skew_kl", "skew_alpha": 1.0}, r"skew_alpha must be in \[0, 1\)"),
    ({"divergence": "skew_rkl", "skew_alpha": -0.1}, r"skew_alpha must be in \[0, 1\)"),
])  # fmt: skip
def test_rejects_bad_arguments(kwargs, message):
    with pytest.raises(ValueError, match=message):
        kd_divergence(torch.zeros(1, 3), torch.zeros(1, 3), **kwargs)


# ------------------------------------------------------------------------------------------------ chunked + dispatch
N, HS, HT, V = 11, 6, 8, 19


def _heads(seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    s_h, t_h = torch.randn(N, HS, generator=g), torch.randn(N, HT, generator=g)
    s_head, t_head = torch.nn.Linear(HS, V, bias=False), torch.nn.Linear(HT, V, bias=False)
    with torch.no_grad():
        s_head.weight.copy_(torch.randn(V, HS, generator=g))
        t_head.weight.copy_(torch.randn(V, HT, generator=g))
    targets = torch.randint(0, V, (N,), generator=g)
    targets[[0, 4]] = -100
    return s_h, t_h, s_head, t_head, targets


@pytest.mark.parametrize(("divergence", "a", "tau", "alpha"), [("skew_kl", 0.1, 1.0, 0.0), ("skew_rkl", 0.2, 2.0, 0.3)])
def test_chunked_kd_loss_skew_matches_full_logit_reference(divergence, a, tau, alpha):
    s_h, t_h, s_head, t_head, targets = _heads()
    s_h.requires_grad_(True)
    loss, metrics = kd.chunked_kd_loss(s_h, t_h, s_head, t_head, targets, beta=0.5, temperature=tau, alpha=alpha,
                                       chunk_size=4, divergence=divergence, skew_alpha=a)
    (g,) = torch.autograd.grad(loss, s_h)

    s64 = s_h.detach().double().requires_grad_(True)
    s_logits, t_logits = s64 @ s_head.weight.double().T, t_h.double() @ t_head.weight.double().T
    keep = targets != -100
    div = REFS[divergence][1](s_logits, t_logits, a, tau)[keep].mean()
    ce = torch.nn.functional.cross_entropy(s_logits[keep], targets[keep])
    ref = alpha * ce + (1 - alpha) * div
    (g_ref,) = torch.autograd.grad(ref, s64)
    torch.testing.assert_close(loss.double(), ref.detach(), rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(metrics["kd"].double(), div.detach(), rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(g.double(), g_ref, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize(("divergence", "path"), [("jsd", "fused"), ("skew_kl", "generic"), ("skew_rkl", "generic")])
def test_dispatch_sends_skew_to_the_generic_path_and_jsd_to_the_fused_kernel(monkeypatch, divergence, path):
    calls: list[str] = []
    fused, generic = fused_kd.fused_kd_loss, kd.chunked_kd_loss
    monkeypatch.setattr(fused_kd, "fused_kd_loss", lambda *a, **k: calls.append("fused") or fused(*a, **k))
    monkeypatch.setattr(kd, "chunked_kd_loss", lambda *a, **k: calls.append("generic") or generic(*a, **k))
    s_h, t_h, s_head, t_head, targets = _heads(1)
    s_h.requires_grad_(True)
    kwargs = dict(beta=0.5, temperature=1.0, alpha=0.0, chunk_size=4, divergence=divergence, skew_alpha=0.1)
    loss, _ = ops.chunked_kd_loss(s_h, t_h, s_head, t_head, targets, **kwargs)
    assert calls == [path]
    with torch.no_grad():  # same value as the generic function called directly
        expected, _ = generic(s_h, t_h, s_head, t_head, targets, **kwargs)
    torch.testing.assert_close(loss.detach(), expected, rtol=1e-5, atol=1e-6)
