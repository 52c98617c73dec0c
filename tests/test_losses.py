"""Tests for srlm_pl.losses against independent float64 references written out here."""

from __future__ import annotations

import math

import pytest
import torch

from srlm_pl.losses import aggregate, generalized_jsd, grpo_policy_loss, kl_k3, selective_log_softmax
from srlm_pl.ops import chunked_cross_entropy, chunked_kd_loss, chunked_token_logprobs


def ref_log_softmax(logits: torch.Tensor, tau: float = 1.0) -> torch.Tensor:
    x = logits.double() / tau
    m = x.max(-1, keepdim=True).values
    return x - (m + torch.log(torch.exp(x - m).sum(-1, keepdim=True)))


def ref_kl(p_log: torch.Tensor, q_log: torch.Tensor) -> torch.Tensor:
    return (torch.exp(p_log) * (p_log - q_log)).sum(-1)


def ref_jsd(student: torch.Tensor, teacher: torch.Tensor, beta: float, tau: float) -> torch.Tensor:
    s, t = ref_log_softmax(student, tau), ref_log_softmax(teacher, tau)
    if beta == 0:
        out = ref_kl(t, s)
    elif beta == 1:
        out = ref_kl(s, t)
    else:
        m = torch.log(beta * torch.exp(t) + (1 - beta) * torch.exp(s))
        out = beta * ref_kl(t, m) + (1 - beta) * ref_kl(s, m)
    return out * tau**2


def make_head(h: int, v: int, seed: int = 0) -> torch.nn.Linear:
    g = torch.Generator().manual_seed(seed)
    head = torch.nn.Linear(h, v, bias=False)
    with torch.no_grad():
        head.weight.copy_(torch.randn(v, h, generator=g) * 0.5)
    return head


# ---------------------------------------------------------------- log-probs / CE


def test_selective_log_softmax_matches_reference_bf16_and_grad():
    g = torch.Generator().manual_seed(0)
    logits = (torch.randn(3, 5, 37, generator=g) * 3).bfloat16().requires_grad_()
    targets = torch.randint(0, 37, (3, 5), generator=g)
    out = selective_log_softmax(logits, targets, chunk_size=4)
    assert out.dtype == torch.float32 and out.shape == (3, 5)
    ref = ref_log_softmax(logits.detach().float()).gather(-1, targets[..., None]).squeeze(-1)
    torch.testing.assert_close(out.double(), ref, atol=1e-5, rtol=0)
    out.sum().backward()
    probs = torch.exp(ref_log_softmax(logits.detach().float()))
    expected = torch.nn.functional.one_hot(targets, 37).double() - probs
    torch.testing.assert_close(logits.grad.double(), expected, atol=1e-2, rtol=0)  # bf16 grad
    assert selective_log_softmax(logits.detach(), targets).shape == (3, 5)  # default chunk, no grad


@pytest.mark.parametrize("chunk", [1, 3, 10, 50])
def test_chunked_ce_and_logprobs_match_unchunked(chunk):
    n, h, v, vs = 10, 6, 23, 20
    g = torch.Generator().manual_seed(1)
    hidden0 = torch.randn(n, h, generator=g)
    targets = torch.randint(0, vs, (n,), generator=g)
    targets[4] = -100

    def run(fn):
        head = make_head(h, v)
        hidden = hidden0.clone().requires_grad_()
        out = fn(hidden, head)
        out.backward()
        return out.detach(), hidden.grad, head.weight.grad

    def ce_ref(hidden, head):
        lp = ref_log_softmax(head(hidden)[:, :vs])
        keep = targets != -100
        return -lp[keep].gather(-1, targets[keep][:, None]).sum()

    def ce_chunk(hidden, head):
        loss, n_tok = chunked_cross_entropy(hidden, head, targets, chunk_size=chunk, vocab_size=vs)
        assert n_tok.item() == n - 1
        return loss.double()

    for a, b in zip(run(ce_chunk), run(ce_ref), strict=True):
        torch.testing.assert_close(a.double(), b.double(), atol=1e-5, rtol=1e-5)

    tgt = targets.clamp(min=0)

    def lp_ref(hidden, head):
        lp = ref_log_softmax(head(hidden)[:, :vs], tau=0.7)
        ent = -(lp.exp() * lp).sum(-1)
        return (lp.gather(-1, tgt[:, None]).squeeze(-1) * torch.arange(1.0, n + 1).double()).sum() + ent.sum()

    def lp_chunk(hidden, head):
        lp, ent = chunked_token_logprobs(
            hidden, head, tgt, temperature=0.7, chunk_size=chunk, with_entropy=True, vocab_size=vs
        )
        assert lp.shape == ent.shape == (n,)
        return (lp * torch.arange(1.0, n + 1)).sum().double() + ent.sum().double()

    for a, b in zip(run(lp_chunk), run(lp_ref), strict=True):
        torch.testing.assert_close(a.double(), b.double(), atol=1e-4, rtol=1e-5)


def test_vocab_size_slicing_changes_normaliser():
    head = make_head(4, 12)
    hidden, targets = torch.randn(5, 4), torch.randint(0, 8, (5,))
    full, _ = chunked_cross_entropy(hidden, head, targets)
    sliced, _ = chunked_cross_entropy(hidden, head, targets, vocab_size=8)
    with torch.no_grad():
        lp8 = ref_log_softmax(head(hidden)[:, :8])
    torch.testing.assert_close(sliced.double(), -lp8.gather(-1, targets[:, None]).sum(), atol=1e-5, rtol=0)
    assert sliced.item() < full.item()  # fewer competitors -> lower NLL
    lp, ent = chunked_token_logprobs(hidden, head, targets, vocab_size=8)
    assert ent is None
    torch.testing.assert_close(lp.double(), lp8.gather(-1, targets[:, None]).squeeze(-1), atol=1e-5, rtol=0)


def test_chunked_ce_saves_no_full_logits_for_backward():
    from srlm_pl.ops.linear_ce import _LinearCrossEntropy

    n, v, h, chunk = 512, 8192, 16, 64
    head = make_head(h, v)
    hidden = torch.randn(n, h, requires_grad=True)
    targets = torch.randint(0, v, (n,))
    saved: list[tuple[tuple[int, ...], torch.dtype]] = []

    def pack(t):
        saved.append((tuple(t.shape), t.dtype))
        return t

    def saved_bytes() -> int:
        return sum(math.prod(shape) * dtype.itemsize for shape, dtype in saved)

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        loss, _ = chunked_cross_entropy(hidden, lambda x: head(x), targets, chunk_size=chunk)  # generic path
    assert not isinstance(loss.grad_fn, _LinearCrossEntropy._backward_cls)
    assert saved and saved_bytes() < n * v * 4 / 100  # the naive path would save >= n*v*4 bytes of logits
    assert all(v not in shape for shape, _ in saved)  # not even one chunk of logits
    loss.backward()
    assert hidden.grad.shape == (n, h) and torch.isfinite(hidden.grad).all()

    # The fused path (a plain nn.Linear head) ran and saved exactly the gradients of hidden and weight, float32
    # [n, h] and [v, h]: (n + v) * h floats, nothing else (the generic path saves chunk inputs instead).
    saved.clear()
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        fused, _ = chunked_cross_entropy(hidden, head, targets, chunk_size=chunk)
    assert isinstance(fused.grad_fn, _LinearCrossEntropy._backward_cls)
    assert saved == [((n, h), torch.float32), ((v, h), torch.float32)]
    assert saved_bytes() == (n + v) * h * 4
    torch.testing.assert_close(fused, loss)

    # Sanity check of the probe itself: an unchunked CE (smaller n) does save full-size logits.
    saved.clear()
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        torch.nn.functional.cross_entropy(head(hidden[:64]), targets[:64])
    assert saved_bytes() >= 64 * v * 4


# ---------------------------------------------------------------- KD


@pytest.mark.parametrize("tau", [1.0, 2.0])
@pytest.mark.parametrize("beta", [0.0, 0.5, 1.0, 0.1])
def test_generalized_jsd_matches_reference(beta, tau):
    g = torch.Generator().manual_seed(2)
    s, t = torch.randn(6, 31, generator=g) * 2, torch.randn(6, 31, generator=g) * 2
    out = generalized_jsd(s.bfloat16(), t.bfloat16(), beta=beta, temperature=tau)
    assert out.dtype == torch.float32 and out.shape == (6,)
    ref = ref_jsd(s.bfloat16().float(), t.bfloat16().float(), beta, tau)
    torch.testing.assert_close(out.double(), ref, atol=1e-5, rtol=1e-5)
    assert (out >= -1e-6).all()


def test_generalized_jsd_tau_squared_scaling_and_identity():
    g = torch.Generator().manual_seed(8)
    s, t = torch.randn(4, 9, generator=g), torch.randn(4, 9, generator=g)
    unscaled = ref_jsd(s, t, 0.5, 2.0) / 4.0  # divergence of the tempered distributions, without tau^2
    out = generalized_jsd(s, t, beta=0.5, temperature=2.0).double()
    torch.testing.assert_close(out, 4 * unscaled, atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(generalized_jsd(s, s, beta=0.3), torch.zeros(4), atol=1e-6, rtol=0)
    # -inf logits (masked vocab) give exact zeros for 0*log0, not NaN
    s2, t2 = s.clone(), t.clone()
    s2[:, 0], t2[:, 0] = -math.inf, -math.inf
    assert torch.isfinite(generalized_jsd(s2, t2, beta=0.5)).all()


@pytest.mark.parametrize("kwargs", [{"beta": -0.1}, {"beta": 1.5}, {"beta": 0.5, "temperature": 0.0}])
def test_generalized_jsd_validates(kwargs):
    name = "temperature" if "temperature" in kwargs else "beta"
    with pytest.raises(ValueError, match=name):
        generalized_jsd(torch.zeros(1, 3), torch.zeros(1, 3), **kwargs)


def _kd_setup(seed=3):
    b, t, h, v = 2, 7, 5, 17
    g = torch.Generator().manual_seed(seed)
    s_hidden = torch.randn(b, t, h, generator=g)
    t_hidden = torch.randn(b, t, 2 * h, generator=g)
    input_ids = torch.randint(0, 15, (b, t), generator=g)
    loss_mask = torch.zeros(b, t, dtype=torch.bool)  # mask over target tokens (completion positions)
    loss_mask[0, 3:] = True
    loss_mask[1, 5:] = True
    return s_hidden, t_hidden, input_ids, loss_mask, make_head(h, v, 4), make_head(2 * h, v + 3, 5)


@pytest.mark.parametrize("chunk", [1, 3, 6, 100])
@pytest.mark.parametrize("alpha", [0.0, 0.3, 1.0])
def test_chunked_kd_loss_masked_gather_matches_reference(chunk, alpha):
    s_hidden0, t_hidden, input_ids, loss_mask, s_head, t_head = _kd_setup()
    vs, beta, tau = 15, 0.5, 2.0
    s_hidden = s_hidden0.clone().requires_grad_()
    t_hidden.requires_grad_()
    sel = loss_mask[:, 1:]  # hidden[:, t] predicts input_ids[:, t + 1]
    loss, metrics = chunked_kd_loss(
        s_hidden[:, :-1][sel], t_hidden[:, :-1][sel], s_head, t_head, input_ids[:, 1:][sel],
        beta=beta, temperature=tau, alpha=alpha, chunk_size=chunk, vocab_size=vs,
    )  # fmt: skip
    loss.backward()

    # Reference over full [B, T-1] tensors with the mask as weights (no gather), float64 explicit sums.
    ref_hidden = s_hidden0.clone().double().requires_grad_()
    ref_head_w = s_head.weight.detach().double().requires_grad_()
    s_logits = (ref_hidden[:, :-1] @ ref_head_w.T)[..., :vs]
    t_logits = (t_hidden.detach().double()[:, :-1] @ t_head.weight.detach().double().T)[..., :vs]
    w = sel.double()
    kd = (ref_jsd(s_logits, t_logits, beta, tau) * w).sum() / w.sum()
    lp = ref_log_softmax(s_logits)
    ce = -(lp.gather(-1, input_ids[:, 1:, None]).squeeze(-1) * w).sum() / w.sum()
    ref = alpha * ce + (1 - alpha) * kd
    ref.backward()
    torch.testing.assert_close(loss.double(), ref, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(metrics["kd"].double(), kd.detach(), atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(metrics["ce"].double(), ce.detach(), atol=1e-5, rtol=1e-5)
    assert metrics["n_tokens"].item() == int(sel.sum())
    torch.testing.assert_close(metrics["kd_sum"], metrics["kd"] * metrics["n_tokens"], rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(s_hidden.grad.double(), ref_hidden.grad, atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(s_head.weight.grad.double(), ref_head_w.grad, atol=1e-5, rtol=1e-4)
    assert t_hidden.grad is None and t_head.weight.grad is None  # teacher gets no gradient
    if alpha == 1.0:
        torch.testing.assert_close(loss, metrics["ce"])


def test_chunked_kd_loss_validates_and_handles_vocab_mismatch():
    s_hidden, t_hidden, input_ids, _, s_head, t_head = _kd_setup()
    args = (s_hidden[0], t_hidden[0], s_head, t_head, input_ids[0])
    for bad in ({"alpha": 1.2}, {"beta": -1.0}, {"temperature": -1.0}):
        kw = {"beta": 0.5, "temperature": 1.0, "alpha": 0.5} | bad
        with pytest.raises(ValueError, match=next(iter(bad))):
            chunked_kd_loss(*args, **kw)
    with pytest.raises(ValueError, match="vocab_size"):  # heads of width 17 vs 20, no slicing
        chunked_kd_loss(*args, beta=0.5, temperature=1.0, alpha=0.0)


# ---------------------------------------------------------------- GRPO


def test_kl_k3_values():
    logp = torch.tensor([-1.0, -2.0, -0.5])
    ref = torch.tensor([-1.0, -1.0, -3.0])
    expected = torch.tensor([0.0, math.exp(1.0) - 1.0 - 1.0, math.exp(-2.5) + 2.5 - 1.0])
    torch.testing.assert_close(kl_k3(logp, ref), expected)
    assert (kl_k3(torch.randn(100), torch.randn(100)) >= 0).all()


X = torch.tensor([[1.0, 2.0, 3.0, 4.0], [5.0, 6.0, 7.0, 8.0], [9.0, 10.0, 11.0, 12.0]])
M = torch.tensor([[1, 1, 0, 0], [0, 0, 0, 0], [1, 1, 1, 1]])


@pytest.mark.parametrize(
    ("mode", "kwargs", "expected"),
    [
        ("grpo", {}, ((1 + 2) / 2 + 0 + (9 + 10 + 11 + 12) / 4) / 3),  # empty row counts in B
        ("bnpo", {}, (3 + 42) / 6),
        ("dr_grpo", {"max_completion_length": 5}, 45 / 15),
        ("dapo", {"num_global_tokens": 18}, 45 / 18),
        ("dapo", {"num_global_tokens": torch.tensor(9.0)}, 45 / 9),
        ("dapo", {}, 45 / 6),
    ],
)
def test_aggregate_hand_computed(mode, kwargs, expected):
    x = X.clone()
    x[1] = float("nan")  # all-masked row content must not leak
    out = aggregate(x, M, mode, **kwargs)
    assert math.isclose(out.item(), expected, rel_tol=1e-6)


def test_aggregate_empty_and_errors():
    for mode in ("grpo", "bnpo", "dapo"):
        assert aggregate(X, torch.zeros_like(M), mode).item() == 0.0
    with pytest.raises(ValueError, match="max_completion_length"):
        aggregate(X, M, "dr_grpo")
    with pytest.raises(ValueError, match="mode"):
        aggregate(X, M, "mean")


def test_grpo_clip_fractions_and_loss_on_hand_made_ratio():
    ratio = torch.tensor([[0.5, 0.9, 1.0, 1.5], [0.7, 1.3, 1.1, 2.0]])
    adv = torch.tensor([-1.0, 2.0])
    mask = torch.tensor([[1, 1, 1, 1], [1, 1, 1, 0]])
    old = torch.zeros(2, 4)
    logp = torch.log(ratio).requires_grad_()
    loss, m = grpo_policy_loss(logp, adv, mask, old_logp=old, eps_low=0.2, eps_high=0.28, aggregation="bnpo")
    # row 0 (A<0): 0.5 is low-clipped; row 1 (A>0): 1.3 is high-clipped; 2.0 is masked; 0.7 with A>0 is not.
    assert m["clip_frac_low"].item() == pytest.approx(1 / 7)
    assert m["clip_frac_high"].item() == pytest.approx(1 / 7)
    assert m["clip_frac"].item() == pytest.approx(2 / 7)
    # -min(r*A, clip(r)*A): row0 (A=-1) max(r, clip r) = [0.8, 0.9, 1.0, 1.5]; row1 (A=2) [1.4, 2.56, 2.2]
    expected = (0.8 + 0.9 + 1.0 + 1.5 - 1.4 - 2.56 - 2.2) / 7
    assert loss.item() == pytest.approx(expected, rel=1e-5)
    loss.backward()
    # clipped tokens carry no gradient
    assert logp.grad[0, 0] == 0 and logp.grad[1, 1] == 0 and logp.grad[1, 3] == 0
    assert logp.grad[1, 0].item() == pytest.approx(-2 * 0.7 / 7, rel=1e-5)


def test_grpo_kl_zero_entropy_and_all_masked():
    g = torch.Generator().manual_seed(6)
    logp = -torch.rand(3, 4, generator=g)
    ent = torch.rand(3, 4, generator=g)
    adv = torch.tensor([1.0, -1.0, 0.5])
    loss, m = grpo_policy_loss(logp, adv, M, ref_logp=logp.clone(), beta=0.1, entropy=ent, entropy_coef=0.01)
    assert m["kl"].item() == 0.0
    w = M.bool()
    assert m["entropy"].item() == pytest.approx(ent[w].mean().item(), rel=1e-6)
    row_means = [(-adv[i] - 0.01 * ent[i][w[i]]).mean() if w[i].any() else 0.0 for i in range(3)]
    assert loss.item() == pytest.approx(float(sum(row_means)) / 3, rel=1e-5)
    z = torch.zeros_like(M)
    loss0, m0 = grpo_policy_loss(logp, adv, z, ref_logp=logp - 1, beta=0.1, entropy=ent)
    assert loss0.item() == 0.0
    for key in ("kl", "entropy", "clip_frac", "clip_frac_low", "clip_frac_high", "loss"):
        assert torch.isfinite(m0[key]) and m0[key].item() == 0.0, key


def test_grpo_kl_term_value():
    logp = torch.tensor([[-1.0, -2.0]], requires_grad=True)
    ref = torch.tensor([[-1.5, -1.0]])
    loss, m = grpo_policy_loss(logp, torch.zeros(1), torch.ones(1, 2), ref_logp=ref, beta=0.5)
    k3 = [math.exp(-0.5) + 0.5 - 1, math.exp(1.0) - 1.0 - 1]
    assert m["kl"].item() == pytest.approx(sum(k3) / 2, rel=1e-6)
    assert loss.item() == pytest.approx(0.5 * sum(k3) / 2, rel=1e-6)


@pytest.mark.parametrize("aggregation", ["grpo", "bnpo", "dr_grpo", "dapo"])
def test_old_logp_none_equals_detached(aggregation):
    g = torch.Generator().manual_seed(7)
    base = -torch.rand(3, 4, generator=g)
    adv = torch.tensor([0.3, -1.2, 0.8])
    grads = []
    for old in (None, "detached"):
        logp = base.clone().requires_grad_()
        kw = {"old_logp": logp.detach()} if old else {}
        loss, m = grpo_policy_loss(logp, adv, M, aggregation=aggregation, max_completion_length=4, **kw)
        loss.backward()
        grads.append(logp.grad)
        assert m["clip_frac"].item() == 0.0
    torch.testing.assert_close(grads[0], grads[1], rtol=0, atol=0)
    assert grads[0].abs().sum() > 0


@pytest.mark.parametrize(
    ("kwargs", "name"),
    [
        ({"eps_low": -0.1}, "eps_low"),
        ({"aggregation": "sum"}, "aggregation"),
        ({"beta": 0.1}, "ref_logp"),
        ({"entropy_coef": 0.1}, "entropy"),
        ({"beta": -1.0}, "beta"),
    ],
)
def test_grpo_policy_loss_validates(kwargs, name):
    with pytest.raises(ValueError, match=name):
        grpo_policy_loss(torch.zeros(3, 4), torch.zeros(3), M, **kwargs)


def test_chunked_ce_through_lora_wrapped_head_matches_full_logits():
    peft = pytest.importorskip("peft")
    from transformers import Qwen2Config, Qwen2ForCausalLM

    torch.manual_seed(0)
    cfg = Qwen2Config(
        vocab_size=120, hidden_size=32, num_hidden_layers=1, num_attention_heads=2, num_key_value_heads=1,
        intermediate_size=64,
    )  # fmt: skip
    lora = peft.LoraConfig(r=2, target_modules=["lm_head", "q_proj"], init_lora_weights=False)
    model = peft.get_peft_model(Qwen2ForCausalLM(cfg), lora)
    ids = torch.randint(0, 100, (2, 9))
    sel = torch.zeros(2, 9, dtype=torch.bool)
    sel[0, 4:], sel[1, 6:] = True, True
    sel = sel[:, 1:]  # target positions; hidden[:, t] predicts ids[:, t + 1]

    def loss_and_grads(chunked: bool):
        model.zero_grad()
        if chunked:
            hidden = model.get_base_model().model(input_ids=ids).last_hidden_state  # [B, T, H]
            head = model.get_output_embeddings()
            loss, _ = chunked_cross_entropy(
                hidden[:, :-1][sel], head, ids[:, 1:][sel], chunk_size=3, vocab_size=100
            )
        else:
            logits = model(input_ids=ids).logits[:, :-1][sel][:, :100]
            loss = torch.nn.functional.cross_entropy(logits.float(), ids[:, 1:][sel], reduction="sum")
        loss.backward()
        return loss.detach(), {n: p.grad.clone() for n, p in model.named_parameters() if p.requires_grad}

    loss_c, grads_c = loss_and_grads(True)
    loss_f, grads_f = loss_and_grads(False)
    torch.testing.assert_close(loss_c, loss_f, atol=1e-5, rtol=1e-5)
    assert any("lm_head" in n for n in grads_c) and set(grads_c) == set(grads_f)
    for name, grad in grads_c.items():
        torch.testing.assert_close(grad, grads_f[name], atol=1e-6, rtol=1e-4, msg=name)
