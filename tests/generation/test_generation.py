"""Tests for srlm_pl.generation.engine on a tiny random Qwen2 model (float32, CPU)."""

from __future__ import annotations

import copy
import functools
import math
import weakref
from collections import Counter

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode
from transformers import Qwen2Config, Qwen2ForCausalLM

import srlm_pl.generation.engine as gen
from srlm_pl.generation.engine import GenerationOutput, SamplingConfig, generate, top_k_filter, top_p_filter

PROMPTS = [[5, 6, 7, 8, 9], [10, 11], [12, 13, 14]]
PAD = 0


def tiny_model(seed: int = 0) -> Qwen2ForCausalLM:
    torch.manual_seed(seed)
    cfg = Qwen2Config(
        vocab_size=300, hidden_size=64, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
        intermediate_size=128, max_position_embeddings=128,
        # peaky logits and fast rotary frequencies, so position or cache mistakes change the argmax
        initializer_range=0.2, rope_parameters={"rope_type": "default", "rope_theta": 100.0},
    )  # fmt: skip
    return Qwen2ForCausalLM(cfg).float().eval()


@pytest.fixture(scope="module")
def model() -> Qwen2ForCausalLM:
    return tiny_model()


def run(model, prompts=PROMPTS, eos=(), seed=None, **kw) -> GenerationOutput:
    opts = {k: kw.pop(k) for k in ("decode", "use_cache", "sync_ranks", "lean") if k in kw}
    g = torch.Generator().manual_seed(seed) if seed is not None else None
    return generate(
        model, prompts, SamplingConfig(**kw), eos_token_ids=list(eos), pad_token_id=PAD, generator=g, **opts
    )


def spy_forwards(monkeypatch: pytest.MonkeyPatch) -> list[tuple[tuple[int, ...], tuple[int, ...]]]:
    """``(input_ids shape, logits shape)`` of every HF forward of a Qwen2ForCausalLM. The class's ``forward`` is
    wrapped rather than a module hook registered: hooks make ``LeanDecoder.build`` fall back to the HF loop, which
    is what these tests must be able to tell apart."""
    calls: list[tuple[tuple[int, ...], tuple[int, ...]]] = []
    original = Qwen2ForCausalLM.forward

    @functools.wraps(original)  # keeps the signature generate() inspects (logits_to_keep, cache)
    def forward(self, *args, **kwargs):
        out = original(self, *args, **kwargs)
        calls.append((tuple(kwargs["input_ids"].shape), tuple(out.logits.shape)))
        return out

    monkeypatch.setattr(Qwen2ForCausalLM, "forward", forward)
    return calls



def assert_same(a: GenerationOutput, b: GenerationOutput) -> None:
    for name, x, y in zip(GenerationOutput._fields, a, b, strict=True):
        assert (x is None and y is None) or torch.equal(x, y), name


def rows(out: GenerationOutput) -> list[list[int]]:
    return [out.completion_ids[i, : out.lengths[i]].tolist() for i in range(out.completion_ids.shape[0])]


def test_greedy_deterministic_and_cache_matches_no_cache(model):
    a = run(model, temperature=0.0, max_new_tokens=10)
    assert_same(a, run(model, temperature=0.0, max_new_tokens=10))
    assert_same(a, run(model, temperature=0.0, max_new_tokens=10, use_cache=False))
    # left padding / masks
    assert a.prompt_ids.tolist()[1] == [PAD, PAD, PAD, 10, 11]
    assert a.prompt_mask.tolist()[1] == [0, 0, 0, 1, 1]
    # greedy rows really are argmax continuations of the unpadded prompt
    with torch.no_grad():
        seq = torch.tensor([PROMPTS[1] + rows(a)[1][:3]])
        assert model(seq).logits[0, -1].argmax().item() == rows(a)[1][3]


def test_seeded_sampling_deterministic_and_cache_matches_no_cache(model):
    kw = {"temperature": 1.0, "top_k": 50, "top_p": 0.95, "num_samples": 3, "max_new_tokens": 8}
    a = run(model, seed=1, **kw)
    assert_same(a, run(model, seed=1, **kw))
    assert_same(a, run(model, seed=1, use_cache=False, **kw))  # each row of the expanded cache is its own
    assert not torch.equal(a.completion_ids, run(model, seed=2, **kw).completion_ids)
    assert len({tuple(r) for r in rows(a)[:3]}) > 1  # samples in a group differ


@pytest.mark.parametrize("lean", [True, False])
def test_group_expansion_prefills_each_prompt_once(model, monkeypatch, lean, lean_steps):
    forwards, steps = spy_forwards(monkeypatch), lean_steps
    steps.clear()  # count from here
    out = run(model, temperature=0.0, num_samples=3, max_new_tokens=4, lean=lean)
    prefill = ((3, 5), (3, 1, 300))  # the B = 3 distinct prompts once, logits of the last position only
    if lean:  # 3 decode steps on N = B * G rows in the lean decoder, no further HF forward
        assert forwards == [prefill] and steps == [9] * 3
    else:  # the HF loop: the expanded cache decodes N = B * G rows per step
        assert forwards == [prefill] + [((9, 1), (9, 1, 300))] * 3 and steps == []
    single = run(model, temperature=0.0, max_new_tokens=4, lean=lean)
    for i in range(3):
        for j in range(3):
            assert torch.equal(out.prompt_ids[3 * i + j], single.prompt_ids[i])
            assert torch.equal(out.completion_ids[3 * i + j], single.completion_ids[i])
            assert torch.equal(out.completion_mask[3 * i + j], single.completion_mask[i])


def test_batch_equals_one_at_a_time(model):
    batch = run(model, temperature=0.0, max_new_tokens=8)
    for i, p in enumerate(PROMPTS):
        alone = run(model, prompts=[p], temperature=0.0, max_new_tokens=8)
        assert rows(alone)[0] == rows(batch)[i]


def test_max_new_tokens_and_truncation(model):
    out = run(model, temperature=1.0, max_new_tokens=5, seed=0, num_samples=2)
    assert out.completion_ids.shape == (6, 5) and out.completion_mask.sum().item() == 30
    assert out.lengths.tolist() == [5] * 6 and out.truncated.all() and not out.stopped_by_string.any()


def _first_new_token(seq: list[int], start: int) -> int:
    return next(i for i in range(start, len(seq)) if seq[i] not in seq[:i])


def test_eos_stops_and_pads(model):
    ref = rows(run(model, temperature=0.0, max_new_tokens=10))
    k = _first_new_token(ref[0], 2)
    eos = ref[0][k]
    out = run(model, eos=[10_000, eos], temperature=0.0, max_new_tokens=10)
    assert out.lengths[0].item() == k + 1 and not out.truncated[0]
    for i, r in enumerate(ref):
        stop = r.index(eos) + 1 if eos in r else 10
        assert out.lengths[i].item() == stop
        assert out.completion_ids[i, :stop].tolist() == r[:stop]
        assert (out.completion_ids[i, stop:] == PAD).all() and (out.completion_mask[i, stop:] == 0).all()
        assert (out.completion_mask[i, :stop] == 1).all()
        assert out.truncated[i].item() == (eos not in r)
    assert out.completion_ids.shape[1] == out.lengths.max().item()
    assert not out.stopped_by_string.any()


def test_stop_string_stops(model):
    def decode(ids):
        return "".join(f"<{i}>" for i in ids)

    ref = rows(run(model, temperature=0.0, max_new_tokens=10))
    k = _first_new_token(ref[1], 2)
    stop = f"<{ref[1][k - 1]}><{ref[1][k]}>"
    out = run(model, temperature=0.0, max_new_tokens=10, stop_strings=[stop, "never"], decode=decode)
    for i, r in enumerate(ref):
        hit = next((j + 1 for j in range(10) if stop in decode(r[: j + 1])), None)
        assert out.lengths[i].item() == (hit or 10)
        assert out.stopped_by_string[i].item() == (hit is not None)
        assert out.truncated[i].item() == (hit is None)
        assert rows(out)[i] == r[: hit or 10]
    assert out.lengths[1].item() == k + 1
    with pytest.raises(ValueError, match="decode"):
        run(model, stop_strings=["x"])


def test_peft_lora_model(model):
    from peft import LoraConfig, get_peft_model

    peft_model = get_peft_model(
        tiny_model(),
        LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"], init_lora_weights=False),
    )
    peft_model.train()
    out = run(peft_model, temperature=0.0, max_new_tokens=8, num_samples=2)
    assert peft_model.training and peft_model.base_model.model.model.layers[0].self_attn.q_proj.training
    assert_same(out, run(peft_model, temperature=0.0, max_new_tokens=8, num_samples=2, use_cache=False))
    merged = copy.deepcopy(peft_model).merge_and_unload()
    assert rows(out) == rows(run(merged, temperature=0.0, max_new_tokens=8, num_samples=2))
    assert rows(out) != rows(run(model, temperature=0.0, max_new_tokens=8, num_samples=2))  # adapter active


def test_top_k_one_equals_greedy(model):
    greedy = run(model, temperature=0.0, max_new_tokens=6, num_samples=2)
    assert_same(greedy, run(model, temperature=1.0, top_k=1, max_new_tokens=6, num_samples=2, seed=3))


def test_top_p_filter_keeps_exact_nucleus():
    # row 0 sorted: 0.5 (id 1), 0.3 (id 3), 0.15 (id 2), 0.05 (id 0); mass before each: 0, .5, .8, .95
    # row 1 sorted: 0.6 (id 0), 0.25 (id 1), 0.1 (id 2), 0.05 (id 3); mass before each: 0, .6, .85, .95
    probs = torch.tensor([[0.05, 0.5, 0.15, 0.3], [0.6, 0.25, 0.1, 0.05]])
    logits = probs.log()
    kept = {
        0.4: [[1], [0]],
        0.55: [[1, 3], [0]],
        0.7: [[1, 3], [0, 1]],
        0.9: [[1, 2, 3], [0, 1, 2]],
        0.99: [[0, 1, 2, 3], [0, 1, 2, 3]],
        1.0: [[0, 1, 2, 3], [0, 1, 2, 3]],
    }
    for top_p, expected in kept.items():
        out = top_p_filter(logits, top_p)
        got = [torch.isfinite(r).nonzero().flatten().tolist() for r in out]
        assert got == expected, top_p
        finite = torch.isfinite(out)
        assert torch.equal(out[finite], logits[finite])  # kept logits untouched


def test_top_k_filter():
    logits = torch.tensor([[1.0, 4.0, 3.0, 2.0], [0.0, 0.0, 5.0, -1.0]])
    out = top_k_filter(logits, 2)
    assert out.tolist() == [[-math.inf, 4.0, 3.0, -math.inf], [0.0, 0.0, 5.0, -math.inf]]  # ties kept
    assert torch.equal(top_k_filter(logits, 0), logits) and torch.equal(top_k_filter(logits, 9), logits)


@pytest.mark.parametrize(
    ("kwargs", "name"),
    [
        ({"max_new_tokens": 0}, "max_new_tokens"),
        ({"temperature": -1.0}, "temperature"),
        ({"top_p": 0.0}, "top_p"),
        ({"top_p": 1.5}, "top_p"),
        ({"top_k": -1}, "top_k"),
        ({"num_samples": 0}, "num_samples"),
        ({"stop_strings": [""]}, "stop_strings"),
    ],
)
def test_config_validation(kwargs, name):
    with pytest.raises(ValueError, match=name):
        SamplingConfig(**kwargs)


def test_restores_mode_and_rejects_empty_prompt(model):
    model.train()
    run(model, temperature=0.0, max_new_tokens=2)
    assert all(m.training for m in model.modules())
    model.eval()
    run(model, temperature=0.0, max_new_tokens=2)
    assert not any(m.training for m in model.modules())
    with pytest.raises(ValueError, match="prompts"):
        run(model, prompts=[[1], []])


def test_sync_ranks_keeps_stepping_while_another_rank_runs(model, monkeypatch, lean_steps):
    ref = rows(run(model, temperature=0.0, max_new_tokens=10))
    eos = ref[0][0]  # row 0 stops at once; other rows may run on
    local = run(model, eos=[eos], temperature=0.0, max_new_tokens=10)
    reduced = []

    def fake_all_reduce(flag, op=None):
        reduced.append(int(flag))
        flag.fill_(1)  # another rank is still generating

    monkeypatch.setattr(gen.dist, "is_available", lambda: True)
    monkeypatch.setattr(gen.dist, "is_initialized", lambda: True)
    monkeypatch.setattr(gen.dist, "get_backend", lambda: "gloo")
    monkeypatch.setattr(gen.dist, "all_reduce", fake_all_reduce)
    forwards, steps = spy_forwards(monkeypatch), lean_steps
    steps.clear()  # count from here
    synced = run(model, eos=[eos], temperature=0.0, max_new_tokens=10, sync_ranks=True)
    assert len(reduced) == 9 and len(forwards) == 1 and steps == [3] * 9  # all 10 steps, 9 of them lean
    forwards.clear()
    steps.clear()
    unsynced = run(model, prompts=[PROMPTS[0]], eos=[eos], temperature=0.0, max_new_tokens=10)
    assert len(forwards) == 1 and steps == []  # prefill only: the lone row stopped at its first token
    assert_same(synced, local)
    assert unsynced.lengths.tolist() == [1]


def test_per_prompt_generators_make_samples_independent_of_the_batch(model):
    """One generator per prompt: a prompt's samples are the same alone or batched with others (how GRPO gets
    identical rollouts from 1 process x B prompts and 2 processes x B/2)."""
    cfg = SamplingConfig(max_new_tokens=6, temperature=1.0, num_samples=3)

    def gens(*seeds):
        return [torch.Generator().manual_seed(s) for s in seeds]

    both = generate(model, PROMPTS[:2], cfg, eos_token_ids=[], pad_token_id=0, generator=gens(11, 22))
    first = generate(model, PROMPTS[:1], cfg, eos_token_ids=[], pad_token_id=0, generator=gens(11))
    second = generate(model, PROMPTS[1:2], cfg, eos_token_ids=[], pad_token_id=0, generator=gens(22))
    assert rows(both)[:3] == rows(first) and rows(both)[3:] == rows(second)
    assert len({tuple(r) for r in rows(first)}) > 1  # the G samples of a prompt still differ
    with pytest.raises(ValueError, match="2 generators for 1 prompts"):
        generate(model, PROMPTS[:1], cfg, eos_token_ids=[], pad_token_id=0, generator=gens(1, 2))


def test_sampling_draws_from_the_tempered_distribution():
    """The inverse-CDF draw is an exact categorical sample: frequencies match the probabilities."""
    logits = torch.tensor([[2.0, 1.0, 0.0, -1.0, -30.0]]).repeat(40_000, 1)
    cfg = SamplingConfig(temperature=1.5)
    tokens = gen.sample_next_token(logits, cfg, torch.Generator().manual_seed(0))
    freq = torch.bincount(tokens, minlength=5).double() / tokens.numel()
    expected = (logits[0].double() / 1.5).softmax(-1)
    assert torch.allclose(freq, expected, atol=0.01), (freq, expected)
    assert freq[4] == 0


def test_zero_probability_tokens_are_never_drawn():
    """Tokens filtered to probability 0 (first, middle and last position) never come out, even for u near 0 or 1."""
    probs = torch.tensor([[0.0, 0.5, 0.0, 0.5, 0.0], [0.0, 0.0, 1.0, 0.0, 0.0]]).repeat(20_000, 1)
    draws = gen.categorical(probs, torch.Generator().manual_seed(0))
    assert set(draws[0::2].tolist()) == {1, 3} and set(draws[1::2].tolist()) == {2}
    assert abs((draws[0::2] == 1).double().mean().item() - 0.5) < 0.02


class WeightCasts(TorchDispatchMode):
    """Counts the float32 -> bfloat16 copies made of the given parameters (autocast's casts reach the kernels as
    ``_to_copy``; a cast served from autocast's cache does not) and keeps weak references to the copies."""

    def __init__(self, params: list[tuple[str, torch.nn.Parameter]]) -> None:
        super().__init__()
        self.names = {p.data_ptr(): name for name, p in params}
        self.casts: Counter[str] = Counter()
        self.copies: list[weakref.ref] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):  # noqa: ANN001, ANN204
        out = func(*args, **(kwargs or {}))
        if func is torch.ops.aten._to_copy.default and out.dtype == torch.bfloat16:
            name = self.names.get(args[0].data_ptr()) if args[0].dtype == torch.float32 else None
            if name is not None:
                self.casts[name] += 1
                self.copies.append(weakref.ref(out))
        return out


def test_autocast_decoding_casts_each_weight_once_and_restores_frozen_flags(model):
    """Under a bf16 autocast without cache (Lightning's), ``generate`` turns autocast's weight-cast cache on for
    the call, frozen fp32 weights included: over the prefill and 4 HF decode forwards each linear weight is cast
    to bf16 once, not once per forward, the cached copies are released when the call ends and the
    ``requires_grad`` flags are restored. Tokens equal decoding under the plain autocast context."""
    frozen = copy.deepcopy(model).requires_grad_(False)
    assert frozen.lm_head.weight.data_ptr() != frozen.model.embed_tokens.weight.data_ptr()  # untied head
    weights = [(n, p) for n, p in frozen.named_parameters() if n.endswith("proj.weight") or n == "lm_head.weight"]
    assert len(weights) == 2 * 7 + 1
    cfg = SamplingConfig(max_new_tokens=5, temperature=0.0)
    with torch.autocast("cpu", dtype=torch.bfloat16, cache_enabled=False):
        with WeightCasts(weights) as cached_casts:
            cached = generate(frozen, PROMPTS, cfg, eos_token_ids=[], pad_token_id=PAD, lean=False)
        assert cached_casts.casts == {name: 1 for name, _ in weights}
        assert all(copy_() is None for copy_ in cached_casts.copies)  # the cache was cleared after the call
    assert not any(p.requires_grad for p in frozen.parameters())
    with torch.autocast("cpu", dtype=torch.bfloat16, cache_enabled=False), WeightCasts(weights) as plain_casts:
        plain = gen._generate(frozen, PROMPTS, cfg, [], PAD, None, None, True, False, 8, torch.device("cpu"),
                              lean=False)
    assert plain_casts.casts == {name: 5 for name, _ in weights}  # the probe: uncached, one cast per forward
    assert torch.equal(cached.completion_ids, plain.completion_ids)
