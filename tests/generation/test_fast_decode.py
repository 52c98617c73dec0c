"""The lean decode step (``srlm_pl.generation.fast_decode``) against the Hugging Face forward it replaces."""

from __future__ import annotations

import copy
from collections import Counter

import pytest
import torch
import torch.nn.functional as F
from torch.utils._python_dispatch import TorchDispatchMode
from transformers import LlamaConfig, LlamaForCausalLM, MistralConfig, MistralForCausalLM, Qwen2Config, Qwen2ForCausalLM

from srlm_pl.generation.engine import SamplingConfig, generate
from srlm_pl.generation.fast_decode import LeanDecoder

PROMPTS = [[5, 6, 7, 8, 9], [10, 11], [12, 13, 14]]
COMMON = dict(vocab_size=300, hidden_size=64, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
              intermediate_size=128, max_position_embeddings=128, initializer_range=0.2)


def make(kind: str, seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    if kind == "qwen2":  # q/k/v biases, tied head
        model = Qwen2ForCausalLM(Qwen2Config(**COMMON, tie_word_embeddings=True,
                                             rope_parameters={"rope_type": "default", "rope_theta": 100.0}))
    elif kind == "llama-bias":  # biases on every projection (attention_bias, mlp_bias)
        model = LlamaForCausalLM(LlamaConfig(**COMMON, attention_bias=True, mlp_bias=True))
    elif kind == "llama":  # no biases, untied head, llama3 rope scaling
        model = LlamaForCausalLM(LlamaConfig(**COMMON, rope_parameters={
            "rope_type": "llama3", "rope_theta": 500.0, "factor": 8.0, "low_freq_factor": 1.0,
            "high_freq_factor": 4.0, "original_max_position_embeddings": 32}))
    else:
        model = MistralForCausalLM(MistralConfig(**COMMON, sliding_window=None, head_dim=24))
    for name, p in model.named_parameters():  # non-trivial norms and biases, so a missed term shows
        if "norm" in name or "bias" in name:
            with torch.no_grad():
                p.add_(torch.randn_like(p) * 0.3)
    return model.float().eval()


def run(model, lean: bool, seed: int | None = None, **kw):
    g = [torch.Generator().manual_seed(seed + i) for i in range(len(PROMPTS))] if seed is not None else None
    return generate(model, PROMPTS, SamplingConfig(**kw), eos_token_ids=[], pad_token_id=0, generator=g, lean=lean)


def _onednn_packed_linear() -> bool:
    """Whether this torch build runs oneDNN's packed bf16 linear, probed here independently of fast_decode's own
    (cached) check, so a broken check in the code under test cannot turn the prepacking tests into skips."""
    try:
        w, x = torch.randn(8, 16).bfloat16(), torch.randn(3, 16).bfloat16()
        packed = torch.ops.mkldnn._reorder_linear_weight(w, 3)
        return torch.equal(torch.ops.mkldnn._linear_pointwise(x, packed, None, "none", [], ""), F.linear(x, w))
    except (AttributeError, RuntimeError, NotImplementedError):
        return False


ONEDNN = torch.backends.mkldnn.is_available() and _onednn_packed_linear()
needs_onednn = pytest.mark.skipif(not ONEDNN, reason="this torch build has no oneDNN packed bf16 linear "
                                  "(torch.ops.mkldnn._reorder_linear_weight / _linear_pointwise), so there is "
                                  "nothing to prepack")


class OpCounter(TorchDispatchMode):
    """Counts the operators that reach the kernels (after autocast), by name."""

    def __init__(self) -> None:
        super().__init__()
        self.ops: Counter[str] = Counter()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):  # noqa: ANN001, ANN204
        self.ops[str(func.overloadpacket)] += 1
        return func(*args, **(kwargs or {}))



@pytest.mark.parametrize("kind", ["qwen2", "llama", "llama-bias", "mistral"])
def test_step_logits_equal_the_hf_forward_in_float32(kind: str) -> None:
    """Decode 6 tokens by hand; at each step the lean logits equal the full HF forward over the sequence."""
    assert_steps_match_hf(make(kind))


def assert_steps_match_hf(model: torch.nn.Module) -> None:
    ids = torch.tensor([[0, 0, 0, 5, 6, 7], [8, 9, 10, 11, 12, 13]])  # left padding on row 0
    mask = (torch.arange(6) >= torch.tensor([[3], [0]])).long()
    with torch.no_grad():
        out = model(input_ids=ids, attention_mask=mask, position_ids=(mask.cumsum(-1) - 1).clamp(min=0),
                    use_cache=True)
        decoder = LeanDecoder.build(model, 4)
        assert decoder is not None and decoder.load_cache(out.past_key_values, 2, capacity=12)
        seq, seq_mask = ids.repeat_interleave(2, 0), mask.repeat_interleave(2, 0)
        token = torch.tensor([20, 21, 22, 23])
        for _ in range(6):
            seq = torch.cat([seq, token[:, None]], 1)
            seq_mask = torch.cat([seq_mask, torch.ones(4, 1, dtype=torch.long)], 1)
            positions = (seq_mask.cumsum(-1) - 1).clamp(min=0)
            lean = decoder.step(token, positions[:, -1], seq_mask)
            ref = model(input_ids=seq, attention_mask=seq_mask, position_ids=positions).logits[:, -1]
            torch.testing.assert_close(lean, ref, atol=2e-5, rtol=1e-5)
            token = ref.argmax(-1)


@pytest.mark.parametrize("kind", ["qwen2", "llama"])
def test_generate_lean_equals_hf_greedy_and_seeded(kind: str, lean_steps: list[int]) -> None:
    model = make(kind)
    calls = lean_steps
    calls.clear()  # count from here
    for kw in ({"temperature": 0.0, "max_new_tokens": 10},
               {"temperature": 1.0, "top_k": 40, "top_p": 0.9, "num_samples": 3, "max_new_tokens": 10}):
        calls.clear()
        lean = run(model, True, seed=7, **kw)
        assert calls == [len(PROMPTS) * kw.get("num_samples", 1)] * 9  # the lean path really decoded
        hf = run(model, False, seed=7, **kw)
        assert torch.equal(lean.completion_ids, hf.completion_ids) and torch.equal(lean.lengths, hf.lengths)


def test_lora_adapters_are_merged_into_the_decode_weights(lean_steps: list[int]) -> None:
    from peft import LoraConfig, get_peft_model

    peft_model = get_peft_model(make("qwen2"), LoraConfig(r=4, lora_alpha=8, init_lora_weights=False,
                                                          target_modules=["q_proj", "v_proj", "down_proj"]))
    calls = lean_steps
    calls.clear()  # count from here
    lean = run(peft_model, True, temperature=0.0, max_new_tokens=8)
    assert len(calls) == 7
    hf = run(peft_model, False, temperature=0.0, max_new_tokens=8)
    assert torch.equal(lean.completion_ids, hf.completion_ids)
    base = run(make("qwen2"), True, temperature=0.0, max_new_tokens=8)
    assert not torch.equal(lean.completion_ids, base.completion_ids)  # the adapters changed the output
    with peft_model.disable_adapter():
        disabled = run(peft_model, True, temperature=0.0, max_new_tokens=8)
    assert torch.equal(disabled.completion_ids, base.completion_ids)


def test_lora_bias_terms_are_merged() -> None:
    """``LoraConfig(lora_bias=True)`` gives ``lora_B`` a bias, which peft's forward adds times the scaling."""
    from peft import LoraConfig, get_peft_model

    peft_model = get_peft_model(make("llama-bias"), LoraConfig(r=4, lora_alpha=8, init_lora_weights=False,
                                                               lora_bias=True,
                                                               target_modules=["q_proj", "v_proj", "down_proj"]))
    with torch.no_grad():
        for name, p in peft_model.named_parameters():
            if "lora_B" in name and name.endswith("bias"):
                p.normal_(0, 0.5)  # zero at init; non-zero after training
    assert_steps_match_hf(peft_model.eval())


def test_lora_variants_fall_back_to_the_hf_forward(lean_steps: list[int]) -> None:
    """aLoRA (active only after its invocation tokens) is a LoRA variant, not a plain delta: no lean decoder."""
    from peft import LoraConfig, get_peft_model

    peft_model = get_peft_model(make("qwen2"), LoraConfig(r=4, lora_alpha=8, init_lora_weights=False,
                                                          alora_invocation_tokens=[7],
                                                          target_modules=["q_proj", "v_proj"]))
    assert LeanDecoder.build(peft_model, 4) is None
    calls = lean_steps
    calls.clear()  # count from here
    lean = run(peft_model, True, temperature=0.0, max_new_tokens=8)
    assert calls == []
    with peft_model.disable_adapter():  # PROMPTS hold no token 7: the adapter never activates
        base = run(peft_model, False, temperature=0.0, max_new_tokens=8)
    assert torch.equal(lean.completion_ids, base.completion_ids)


def test_lora_deltas_are_merged_in_float32_on_a_bf16_base() -> None:
    from peft import LoraConfig, get_peft_model

    from srlm_pl.generation.fast_decode import _linear_weight

    peft_model = get_peft_model(make("qwen2").to(torch.bfloat16),
                                LoraConfig(r=4, lora_alpha=8, init_lora_weights=False, target_modules=["q_proj"]))
    layer = peft_model.base_model.model.model.layers[0].self_attn.q_proj
    with torch.no_grad():
        layer.lora_B["default"].weight.mul_(1e-3)  # small deltas, as early in training
        delta = layer.get_delta_weight("default").float()
        w, _ = _linear_weight(layer, torch.bfloat16)
    base = layer.base_layer.weight
    assert torch.equal(w, (base.float() + delta).to(torch.bfloat16))
    assert not torch.equal(w, base + delta.to(torch.bfloat16))  # the bf16 sum would round these differently


def test_global_and_accelerate_hooks_fall_back() -> None:
    model = make("llama")
    assert LeanDecoder.build(model, 4) is not None
    handle = torch.nn.modules.module.register_module_forward_hook(lambda module, args, out: None)
    try:
        assert LeanDecoder.build(model, 4) is None
    finally:
        handle.remove()
    model.model.layers[1].mlp._hf_hook = object()  # what accelerate's add_hook_to_module leaves on a module
    assert LeanDecoder.build(model, 4) is None


def test_transformers_output_capturing_hooks_do_not_disable_the_lean_path() -> None:
    """A training forward with ``output_hidden_states=True`` leaves transformers' (inert) capture hooks on every
    layer; the lean decoder must still be used afterwards (GRPO generates after every training step)."""
    model = make("qwen2")
    model(input_ids=torch.tensor([[5, 6, 7]]), output_hidden_states=True, use_cache=False)
    assert any(m._forward_hooks for m in model.modules())
    assert LeanDecoder.build(model, 4) is not None


def test_unsupported_models_fall_back_to_the_hf_forward(monkeypatch: pytest.MonkeyPatch) -> None:
    model = make("qwen2")
    monkeypatch.setenv("SRLM_LEAN_DECODE", "0")  # the benchmarks' switch
    assert LeanDecoder.build(model, 4) is None
    monkeypatch.delenv("SRLM_LEAN_DECODE")
    hooked = copy.deepcopy(model)
    hooked.model.layers[0].mlp.register_forward_hook(lambda m, i, o: None)
    assert LeanDecoder.build(hooked, 4) is None
    sliding = copy.deepcopy(model)
    sliding.config.layer_types = ["sliding_attention", "full_attention"]
    assert LeanDecoder.build(sliding, 4) is None
    gelu = copy.deepcopy(model)
    gelu.config.hidden_act = "gelu"
    assert LeanDecoder.build(gelu, 4) is None
    quantised = copy.deepcopy(model)  # a Linear subclass (as bitsandbytes' layers are) is not read as plain
    quantised.model.layers[1].self_attn.o_proj.__class__ = type("Linear8bit", (torch.nn.Linear,), {})
    assert LeanDecoder.build(quantised, 4) is None
    assert LeanDecoder.build(model, 4) is not None
    out = run(hooked, True, temperature=0.0, max_new_tokens=6)
    assert torch.equal(out.completion_ids, run(model, False, temperature=0.0, max_new_tokens=6).completion_ids)


def test_bf16_autocast_distribution_matches_the_hf_forward() -> None:
    """Under bf16 autocast the lean step computes in bf16 like HF's autocast (weights cast once, K/V cached in
    bf16): next-token distributions agree to bf16 rounding (total variation < 0.03 here, against ~0.5 between
    the model's distributions at different steps)."""
    model = make("qwen2")
    ids, mask = torch.tensor([[5, 6, 7, 8, 9, 10]]), torch.ones(1, 6, dtype=torch.long)
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        out = model(input_ids=ids, attention_mask=mask, use_cache=True)
        decoder = LeanDecoder.build(model, 4)
        qkv = decoder.layers[0].qkv
        assert decoder.cdtype == torch.bfloat16
        if ONEDNN:  # the weights must then be prepacked (test_bf16_weights_are_prepacked_for_onednn)
            assert qkv.packed is not None and qkv.weight is None
        else:
            assert qkv.packed is None and qkv.weight.dtype == torch.bfloat16
        assert decoder.load_cache(out.past_key_values, 1, capacity=10) and decoder.k[0].dtype == torch.bfloat16
        seq, tvs, previous = ids, [], None
        for token in (40, 41, 42):
            seq = torch.cat([seq, torch.tensor([[token]])], 1)
            full = torch.ones_like(seq)
            p_lean = decoder.step(torch.tensor([token]), torch.tensor([seq.shape[1] - 1]), full).softmax(-1)
            p_ref = model(input_ids=seq, attention_mask=full).logits[:, -1].float().softmax(-1)
            tvs.append(0.5 * (p_lean - p_ref).abs().sum().item())
            if previous is not None:
                assert 0.5 * (p_ref - previous).abs().sum().item() > 0.2  # the tolerance is meaningful
            previous = p_ref
    assert max(tvs) < 0.03, tvs


@needs_onednn
@pytest.mark.parametrize("kind", ["qwen2", "llama-bias"])
def test_bf16_weights_are_prepacked_for_onednn(kind: str) -> None:
    """Under bf16 autocast on a CPU with oneDNN, every product of the decode step (q/k/v, o, gate/up, down and the
    head) runs on a weight prepacked for the decode batch: only packed copies are held, the step calls oneDNN's
    packed linear and no plain matmul, and each packed product equals ``F.linear`` on the bf16 weight exactly."""
    model = make(kind)
    ids = torch.tensor([[5, 6, 7, 8]])
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        out = model(input_ids=ids, use_cache=True)
        decoder = LeanDecoder.build(model, 4)
        linears = [*(getattr(layer, name) for layer in decoder.layers for name in ("qkv", "o", "gate_up", "down")),
                   decoder.head]
        assert all(lin.packed is not None and lin.weight is None for lin in linears)
        attn, mlp = model.model.layers[0].self_attn, model.model.layers[0].mlp
        h = torch.randn(4, COMMON["hidden_size"]).bfloat16()
        qkv_w = torch.cat([attn.q_proj.weight, attn.k_proj.weight, attn.v_proj.weight]).bfloat16()
        qkv_b = (torch.cat([attn.q_proj.bias, attn.k_proj.bias, attn.v_proj.bias]).bfloat16()
                 if attn.q_proj.bias is not None else None)
        assert torch.equal(decoder.layers[0].qkv(h), F.linear(h, qkv_w, qkv_b))
        x = torch.randn(4, COMMON["intermediate_size"]).bfloat16()
        down_b = mlp.down_proj.bias.bfloat16() if mlp.down_proj.bias is not None else None
        assert torch.equal(decoder.layers[0].down(x), F.linear(x, mlp.down_proj.weight.bfloat16(), down_b))
        assert decoder.load_cache(out.past_key_values, 4, capacity=8)
        with OpCounter() as counter:
            decoder.step(torch.tensor([9, 10, 11, 12]), torch.tensor([4, 4, 4, 4]), torch.ones(4, 5, dtype=torch.long))
    assert counter.ops["mkldnn._linear_pointwise"] == len(linears)
    assert not {"aten.mm", "aten.addmm", "aten.linear"} & set(counter.ops)


def test_cache_capacity_is_enforced() -> None:
    model = make("llama")
    with torch.no_grad():
        out = model(input_ids=torch.tensor([[5, 6]]), use_cache=True)
        decoder = LeanDecoder.build(model, 4)
        assert decoder.load_cache(out.past_key_values, 1, capacity=3)
        decoder.step(torch.tensor([7]), torch.tensor([2]), torch.ones(1, 3, dtype=torch.long))
        with pytest.raises(RuntimeError, match="KV cache full"):
            decoder.step(torch.tensor([8]), torch.tensor([3]), torch.ones(1, 4, dtype=torch.long))
