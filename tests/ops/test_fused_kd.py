"""The fused KD loss (analytic gradient) equals the generic checkpointed chunks in value and gradients."""

import pytest
import torch
from torch import nn

from srlm_pl.ops import chunked_kd_loss
from srlm_pl.ops.fused_kd import _FusedKD

FUSED_NODE = _FusedKD._backward_cls  # the autograd node of the fused KD Function


@pytest.mark.parametrize("beta", [0.0, 0.5, 1.0])
@pytest.mark.parametrize("temperature, alpha, n", [(1.0, 0.0, 13), (2.0, 0.3, 13), (0.7, 1.0, 13), (1.0, 0.3, 70)])
def test_fused_matches_generic(beta: float, temperature: float, alpha: float, n: int) -> None:
    """n = 13, chunk 4: the tail is padded to a multiple of 4; n = 70: the positions are padded to 96 (TAIL 32)."""
    torch.manual_seed(0)
    hs, ht, v_rows, vocab = 8, 12, 29, 25
    student, teacher = nn.Linear(hs, v_rows, bias=False), nn.Linear(ht, v_rows + 3, bias=False)
    s_h = torch.randn(n, hs, requires_grad=True)
    t_h = torch.randn(n, ht)
    targets = torch.randint(0, vocab, (n,))
    targets[[1, 7]] = -100
    kw = dict(beta=beta, temperature=temperature, alpha=alpha, chunk_size=4 if n < 32 else 48, vocab_size=vocab)
    fused, m_fused = chunked_kd_loss(s_h, t_h, student, teacher, targets, **kw)  # plain Linear: fused path
    assert isinstance(fused.grad_fn, FUSED_NODE)
    (3.0 * fused).backward()
    g_h, g_w = s_h.grad.clone(), student.weight.grad.clone()
    s_h.grad, student.weight.grad = None, None
    generic, m_generic = chunked_kd_loss(s_h, t_h, lambda x: student(x), teacher, targets, **kw)  # generic path
    assert not isinstance(generic.grad_fn, FUSED_NODE)
    (3.0 * generic).backward()
    assert fused.item() == pytest.approx(generic.item(), rel=1e-5, abs=1e-7)
    for key in ("kd_sum", "ce_sum", "n_tokens"):
        assert float(m_fused[key]) == pytest.approx(float(m_generic[key]), rel=1e-5, abs=1e-7), key
    torch.testing.assert_close(g_h, s_h.grad, rtol=1e-4, atol=1e-6)
    torch.testing.assert_close(g_w, student.weight.grad, rtol=1e-4, atol=1e-6)
    assert teacher.weight.grad is None


def test_fused_kd_under_bf16_autocast_is_close() -> None:
    torch.manual_seed(1)
    student, teacher = nn.Linear(16, 40, bias=False), nn.Linear(16, 40, bias=False)
    s_h, t_h, targets = torch.randn(10, 16, requires_grad=True), torch.randn(10, 16), torch.randint(0, 40, (10,))
    exact, _ = chunked_kd_loss(s_h, t_h, lambda x: student(x), teacher, targets, beta=0.5, temperature=1.0,
                               alpha=0.5, chunk_size=3)
    assert not isinstance(exact.grad_fn, FUSED_NODE)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        fused, _ = chunked_kd_loss(s_h, t_h, student, teacher, targets, beta=0.5, temperature=1.0, alpha=0.5,
                                   chunk_size=3)
    assert isinstance(fused.grad_fn, FUSED_NODE)
    fused.backward()
    assert fused.item() == pytest.approx(exact.item(), rel=3e-2)
    assert torch.isfinite(s_h.grad).all()
