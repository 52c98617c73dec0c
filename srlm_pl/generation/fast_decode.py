"""A lean one-token decode step for Llama-family decoders (Llama, Qwen2, Mistral), used by ``generation.py``.

Hugging Face's forward is written for every case (masks built per call, a cache object that grows by
concatenation, autocast re-casting activations and fp32 keys at every op); at batch 16 on a CPU that overhead
is as large as the matrix products themselves. ``LeanDecoder`` does the same arithmetic with:

- the weights cast once per ``generate`` call to the compute dtype (the autocast dtype under autocast, else the
  model's), with q/k/v and gate/up fused into one matrix each (two products per layer fewer);
- a KV cache preallocated for prompt + ``max_new_tokens`` in the compute dtype, written in place;
- attention as two batched products read in place from the cache (keys stored transposed; grouped-query heads
  without repeating K/V), the softmax in float32, padding masked by the caller's attention mask, over buckets
  of ``SLOT_BUCKET`` slots: attending over exactly ``t + 1`` slots made a new matmul shape at every step, and
  oneDNN's primitive cache then kept ~1.1 MB more heap per decoded token (110 MB after 100 steps of a
  2-layer SmolLM2 student; 10 MB with buckets);
- the residual stream and RMSNorm in float32 when the weights are float32 (as HF under autocast).

The prompt is still prefilled by the model's own forward and its cache copied in, so prefill numerics are HF's.
Rotary embeddings come from the model's own ``rotary_emb`` module (any rope type it implements).

``LeanDecoder.build`` returns ``None`` (the caller then uses the HF forward) for anything it does not reproduce
exactly: other architectures, sliding-window layers, non-SiLU activations,
quantised or sharded (DTensor / FSDP) weights, hooks on the modules, and peft models other than LoRA on
``nn.Linear`` layers (LoRA deltas are merged into the cast copies: adapters are constant during decoding).
``tests/generation/test_fast_decode.py`` checks logits against the HF forward in float32 and tokens under sampling.
``SRLM_LEAN_DECODE=0`` in the environment switches it off (benchmarks use it to measure the HF path).
"""

from __future__ import annotations

import os
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

SUPPORTED = {"llama", "qwen2", "mistral"}
SLOT_BUCKET = 64  # attention width granularity (cache slots)


def _base_model(model: nn.Module) -> nn.Module:
    return model.get_base_model() if hasattr(model, "get_base_model") else model


def _has_foreign_hooks(module: nn.Module) -> bool:
    """Forward hooks other than transformers' output-capturing ones (installed by the first forward with
    ``output_hidden_states=True`` and inert unless a capture is active, which a decode step never asks for)."""
    if hasattr(module, "_hf_hook"):  # accelerate (device_map, offload) wraps forward instead of registering a hook
        return True
    hooks = [*module._forward_hooks.values(), *module._forward_pre_hooks.values()]
    return any(getattr(h, "__module__", "") != "transformers.utils.output_capturing" for h in hooks)


def _global_hooks() -> bool:
    """Hooks registered for every module (``torch.nn.modules.module.register_module_forward_hook``)."""
    from torch.nn.modules import module as torch_module

    return bool(torch_module._global_forward_hooks or torch_module._global_forward_pre_hooks)


def _linear_weight(linear: nn.Module, dtype: torch.dtype) -> tuple[Tensor, Tensor | None] | None:
    """``(weight, bias)`` of a plain or LoRA-wrapped linear layer in ``dtype``, LoRA deltas (and ``lora_bias``
    terms) merged in float32; None if the layer is anything else (quantised, sharded, another adapter type, a
    LoRA variant whose forward is not ``x W_base^T + scale * B A x``)."""
    delta = bias_delta = None
    if hasattr(linear, "base_layer") and hasattr(linear, "get_delta_weight"):  # peft LoRA layer
        active = [n for n in getattr(linear, "active_adapters", []) if n in linear.lora_A]
        variants = {**getattr(linear, "lora_variant", {}), **getattr(linear, "lora_magnitude_vector", {})}
        if getattr(linear, "merged", False) or any(n in variants for n in active):
            return None  # merged weights (already in base) would double count; DoRA, aLoRA, ... are not plain deltas
        if not getattr(linear, "disable_adapters", False):
            for name in active:
                d = linear.get_delta_weight(name).float()
                delta = d if delta is None else delta + d
                b = getattr(linear.lora_B[name], "bias", None)  # LoraConfig(lora_bias=True)
                if b is not None:
                    b = b.detach().float() * linear.scaling[name]
                    bias_delta = b if bias_delta is None else bias_delta + b
        linear = linear.base_layer
    if type(linear) is not nn.Linear or type(linear.weight) not in (nn.Parameter, Tensor):
        return None  # quantised (bitsandbytes subclasses nn.Linear) or sharded weights
    w = linear.weight.detach()
    if delta is not None:  # in float32: a bf16 base would round most small deltas away
        w = w.float() + delta
    bias = linear.bias.detach() if linear.bias is not None else None
    if bias_delta is not None:
        bias = bias_delta if bias is None else bias.float() + bias_delta
    return w.to(dtype), bias.to(dtype) if bias is not None else None


class _Linear:
    """A frozen linear map for decoding; on CPU its weight is pre-packed for oneDNN for the decode batch size
    (bit-identical to ``F.linear``; ``tools/bench.py generation`` measures the speed-up)."""

    __slots__ = ("weight", "bias", "packed")

    def __init__(self, weight: Tensor, bias: Tensor | None, rows: int) -> None:
        self.weight, self.bias, self.packed = weight, bias, None
        if weight.device.type == "cpu" and weight.dtype == torch.bfloat16 and _mkldnn_linear_ok():
            self.packed = torch.ops.mkldnn._reorder_linear_weight(weight, rows)
            self.weight = None  # only the packed copy is used: do not hold both

    def __call__(self, x: Tensor) -> Tensor:
        if self.packed is not None:
            return torch.ops.mkldnn._linear_pointwise(x, self.packed, self.bias, "none", [], "")
        assert self.weight is not None
        return F.linear(x, self.weight, self.bias)


_MKLDNN_OK: bool | None = None


def _mkldnn_linear_ok() -> bool:
    """Whether this torch build has oneDNN's packed-weight linear (checked once against ``F.linear``)."""
    global _MKLDNN_OK
    if _MKLDNN_OK is None:
        try:
            w, x = torch.randn(8, 16).bfloat16(), torch.randn(3, 16).bfloat16()
            packed = torch.ops.mkldnn._reorder_linear_weight(w, 3)
            y = torch.ops.mkldnn._linear_pointwise(x, packed, None, "none", [], "")
            _MKLDNN_OK = bool(torch.equal(y, F.linear(x, w)))
        except (AttributeError, RuntimeError, NotImplementedError):
            _MKLDNN_OK = False
    return _MKLDNN_OK


class _Layer:
    __slots__ = ("ln1", "ln2", "eps1", "eps2", "qkv", "o", "gate_up", "down")

    def __init__(self, **kw: Any) -> None:
        for k, v in kw.items():
            setattr(self, k, v)


class LeanDecoder:
    """Decode state for one ``generate`` call: cast weights, a static KV cache, one ``step`` per token."""

    def __init__(self, model: nn.Module, layers: list[_Layer], embed: Tensor, norm: Tensor, norm_eps: float,
                 head: _Linear, rotary: nn.Module, dims: tuple[int, int, int], scaling: float,
                 cdtype: torch.dtype, rdtype: torch.dtype) -> None:
        self.model, self.layers, self.embed, self.norm, self.norm_eps = model, layers, embed, norm, norm_eps
        self.head, self.rotary, self.scaling = head, rotary, scaling
        self.n_heads, self.n_kv, self.head_dim = dims
        self.cdtype, self.rdtype = cdtype, rdtype  # compute (matmul) dtype, residual-stream dtype
        self.k: list[Tensor] = []
        self.v: list[Tensor] = []
        self.length = 0

    # -- construction ------------------------------------------------------------------------------------
    @classmethod
    def build(cls, model: nn.Module, rows: int) -> LeanDecoder | None:
        """A decoder for ``model`` under the current autocast state, decoding ``rows`` sequences at a time, or
        ``None`` if the model is not supported."""
        if os.environ.get("SRLM_LEAN_DECODE", "1") == "0":  # benchmarks switch it off to measure the HF path
            return None
        base = _base_model(model)
        config = getattr(base, "config", None)
        inner = getattr(base, "model", None)
        if config is None or inner is None or getattr(config, "model_type", None) not in SUPPORTED:
            return None
        if getattr(config, "hidden_act", None) != "silu":
            return None
        if getattr(config, "pretraining_tp", 1) != 1:
            return None
        layer_types = getattr(config, "layer_types", None) or []
        if any(t != "full_attention" for t in layer_types) or (
                config.model_type == "mistral" and getattr(config, "sliding_window", None)):
            return None
        if _global_hooks() or any(_has_foreign_hooks(m) for m in base.modules()):
            return None  # accelerate offload, FSDP, user hooks: the HF forward honours them, we would not
        if type(base.get_input_embeddings()) is not nn.Embedding:
            return None
        params = list(base.parameters())
        if not params or any(type(p) is not nn.Parameter for p in params):
            return None  # DTensor (FSDP2) or quantised parameters
        device = params[0].device
        pdtype = base.get_input_embeddings().weight.dtype
        if torch.is_autocast_enabled(device.type):
            cdtype = torch.get_autocast_dtype(device.type)
        else:
            cdtype = pdtype
        rdtype = torch.float32 if pdtype == torch.float32 else pdtype
        layers = []
        for layer in inner.layers[: config.num_hidden_layers]:
            attn, mlp = layer.self_attn, layer.mlp
            parts = [_linear_weight(m, cdtype) for m in
                     (attn.q_proj, attn.k_proj, attn.v_proj, attn.o_proj, mlp.gate_proj, mlp.up_proj, mlp.down_proj)]
            if any(p is None for p in parts):
                return None
            (wq, bq), (wk, bk), (wv, bv), (wo, bo), (wg, bg), (wu, bu), (wd, bd) = parts
            bqkv, bgu = _joint_bias([bq, bk, bv], [wq, wk, wv]), _joint_bias([bg, bu], [wg, wu])
            layers.append(_Layer(ln1=layer.input_layernorm.weight.detach(), eps1=layer.input_layernorm.variance_epsilon,
                                 ln2=layer.post_attention_layernorm.weight.detach(),
                                 eps2=layer.post_attention_layernorm.variance_epsilon,
                                 qkv=_Linear(torch.cat([wq, wk, wv]), bqkv, rows), o=_Linear(wo, bo, rows),
                                 gate_up=_Linear(torch.cat([wg, wu]), bgu, rows), down=_Linear(wd, bd, rows)))
        head_parts = _linear_weight(base.get_output_embeddings(), cdtype)
        if head_parts is None or head_parts[1] is not None:
            return None
        attn0 = inner.layers[0].self_attn
        dims = (config.num_attention_heads, config.num_key_value_heads, attn0.head_dim)
        return cls(model, layers, base.get_input_embeddings().weight.detach(), inner.norm.weight.detach(),
                   inner.norm.variance_epsilon, _Linear(head_parts[0], None, rows), inner.rotary_emb, dims,
                   attn0.scaling, cdtype, rdtype)

    def load_cache(self, cache: Any, repeats: int, capacity: int) -> bool:
        """Copy an HF cache of the prefilled prompts ``[B, kv, P, d]`` into static buffers of ``capacity`` slots,
        each prompt repeated ``repeats`` times along the batch. Keys are stored transposed (``[N * kv, d, slots]``)
        and values as ``[N * kv, slots, d]``, so both attention products read the valid slots in place (no copy).
        False if the cache layout is not understood."""
        layers = getattr(cache, "layers", None)
        if layers is None or len(layers) < len(self.layers):
            return False
        self.k, self.v = [], []
        for cached in layers[: len(self.layers)]:
            keys, values = getattr(cached, "keys", None), getattr(cached, "values", None)
            if not isinstance(keys, Tensor) or keys.dim() != 4 or keys.shape[1] != self.n_kv:
                return False
            b, h, p, d = keys.shape
            # zeros, not empty: attention reads whole buckets of slots (masked), which must hold finite values
            k = keys.new_zeros((b * repeats * h, d, capacity), dtype=self.cdtype)  # [N kv, d, slots]
            v = keys.new_zeros((b * repeats * h, capacity, d), dtype=self.cdtype)  # [N kv, slots, d]
            k[:, :, :p] = keys.repeat_interleave(repeats, 0).reshape(-1, p, d).transpose(1, 2)
            v[:, :p] = values.repeat_interleave(repeats, 0).reshape(-1, p, d)
            self.k.append(k)
            self.v.append(v)
        self.length = p
        return True

    # -- the step ----------------------------------------------------------------------------------------
    def _rms(self, x: Tensor, weight: Tensor, eps: float) -> Tensor:
        h = x.float()
        h = h * torch.rsqrt(h.pow(2).mean(-1, keepdim=True) + eps)
        return weight * h.to(x.dtype)

    @torch.no_grad()
    def step(self, token: Tensor, position: Tensor, attention_mask: Tensor) -> Tensor:
        """Logits ``[N, V]`` (float32) for ``token[N]`` at ``position[N]``; ``attention_mask[N, length + 1]``
        marks the valid cache slots including this one. Writes this token's keys and values to the cache."""
        n, t = token.shape[0], self.length
        if t >= self.v[0].shape[1]:
            raise RuntimeError(f"KV cache full ({t} slots)")
        x = F.embedding(token, self.embed).to(self.rdtype)  # [N, H]
        cos, sin = self.rotary(x[:, None], position[:, None])  # [N, 1, d]
        cos, sin = cos.to(self.cdtype), sin.to(self.cdtype)  # [N, 1, d]
        hq, hk, d = self.n_heads, self.n_kv, self.head_dim
        group = hq // hk
        # attention runs over a bucket of SLOT_BUCKET slots (masked past t): one shape per bucket rather than per
        # step, so CPU matmul primitive caches do not grow by one entry per decoded token
        width = min(-(-(t + 1) // SLOT_BUCKET) * SLOT_BUCKET, self.v[0].shape[1])
        valid = torch.zeros((n, width), dtype=torch.bool, device=x.device)
        valid[:, : t + 1] = attention_mask[:, : t + 1] != 0
        bias = torch.zeros((n, width), dtype=torch.float32, device=x.device)
        bias = bias.masked_fill(~valid, float("-inf"))[:, None, None]  # [N, 1, 1, width]
        for i, layer in enumerate(self.layers):
            h = self._rms(x, layer.ln1, layer.eps1).to(self.cdtype)  # [N, H]
            q, k, v = layer.qkv(h).split([hq * d, hk * d, hk * d], dim=-1)  # [N, (hq + 2 hk) d]
            q = _rope(q.view(n, hq, d), cos, sin)  # [N, hq, d]
            k = _rope(k.view(n, hk, d), cos, sin)  # [N, hk, d]
            self.k[i][:, :, t] = k.reshape(n * hk, d)
            self.v[i][:, t] = v.reshape(n * hk, d)
            # grouped-query heads share their K/V head: [N kv, g, d] @ [N kv, d, t+1]
            scores = torch.bmm(q.view(n * hk, group, d), self.k[i][:, :, :width]).float()  # [N kv, g, width]
            scores = scores.mul_(self.scaling).view(n, hk, group, width).add_(bias)
            probs = scores.softmax(-1).to(self.cdtype).view(n * hk, group, width)
            attn = torch.bmm(probs, self.v[i][:, :width]).view(n, hq * d)  # [N, hq d]
            x = x + layer.o(attn).to(self.rdtype)
            h = self._rms(x, layer.ln2, layer.eps2).to(self.cdtype)
            gate, up = layer.gate_up(h).chunk(2, dim=-1)  # [N, I] each
            x = x + layer.down(F.silu(gate) * up).to(self.rdtype)
        self.length = t + 1
        h = self._rms(x, self.norm, self.norm_eps).to(self.cdtype)
        return self.head(h).float()  # [N, V]


def _joint_bias(biases: list[Tensor | None], weights: list[Tensor]) -> Tensor | None:
    """The bias of fused projections: the parts concatenated, a missing part as zeros; None if none has one."""
    if all(b is None for b in biases):
        return None
    return torch.cat([b if b is not None else w.new_zeros(w.shape[0]) for b, w in zip(biases, weights, strict=True)])


def _rope(x: Tensor, cos: Tensor, sin: Tensor) -> Tensor:
    """Rotary embedding on ``x[N, heads, d]`` with ``cos``/``sin`` ``[N, 1, d]`` (HF's rotate-half layout)."""
    half = x.shape[-1] // 2
    rotated = torch.cat([-x[..., half:], x[..., :half]], dim=-1)
    return x * cos + rotated * sin
