"""One engine interface over two backends: ``hf`` (``engine.generate`` on the model itself) and ``vllm``.

``build_engine(config, model, tokenizer)`` returns an engine whose ``generate(prompts, sampling, seeds=...)`` keeps
``engine.generate``'s contract (rows ``i*G .. i*G+G-1`` belong to prompt ``i``; EOS kept and masked 1; the token that
completes a stop string kept; ``truncated``; right-padded completions) and whose ``load_weights(model)`` gives it
the policy's current weights (a no-op for ``hf``, which decodes the module itself).

Seeds: ``None`` (unseeded), one int (``hf``: one stream for the batch, as before; ``vllm``: one seed per prompt
derived from it and the prompt's index) or one int per prompt (a prompt's samples then depend on its seed only,
not on the other prompts of the batch, on both backends).
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Sequence
from typing import Any, Protocol

import torch
from torch import nn

from srlm_pl.generation.config import GenerationConfig
from srlm_pl.generation.engine import GenerationOutput, SamplingConfig, generate
from srlm_pl.models.forward import eos_token_ids

Seeds = int | Sequence[int] | None
log = logging.getLogger(__name__)


class Engine(Protocol):
    name: str

    def generate(self, prompts: list[list[int]], config: SamplingConfig, *, seeds: Seeds = None,
                 logprobs: bool = False, sync_ranks: bool = False) -> GenerationOutput: ...

    def load_weights(self, model: nn.Module) -> float: ...


def derived_seed(seed: int, index: int) -> int:
    """A 63-bit seed for prompt ``index`` of a batch seeded with ``seed``."""
    digest = hashlib.sha256(f"{seed}|{index}".encode()).digest()
    return int.from_bytes(digest[:8], "little") & (2**63 - 1)


class HFEngine:
    """Decodes with the model's own forward and KV cache (``srlm_pl.generation.engine.generate``)."""

    name = "hf"

    def __init__(self, model: nn.Module, tokenizer: Any) -> None:
        self.model, self.tokenizer = model, tokenizer

    def generate(self, prompts: list[list[int]], config: SamplingConfig, *, seeds: Seeds = None,
                 logprobs: bool = False, sync_ranks: bool = False) -> GenerationOutput:
        """``logprobs`` is ignored: the sampler is the training model, whose log-probs the caller computes."""
        device = next(self.model.parameters()).device
        generator: Any = None
        if isinstance(seeds, int):
            generator = torch.Generator(device=device).manual_seed(seeds)
        elif seeds is not None:
            generator = [torch.Generator(device=device).manual_seed(int(s)) for s in seeds]
        return generate(self.model, prompts, config, eos_token_ids=eos_token_ids(self.tokenizer, self.model),
                        pad_token_id=self.tokenizer.pad_token_id, decode=self.tokenizer.decode, generator=generator,
                        sync_ranks=sync_ranks)

    def load_weights(self, model: nn.Module) -> float:
        self.model = model
        return 0.0


def build_engine(config: GenerationConfig | None, model: nn.Module, tokenizer: Any, *,
                 key: str = "model.init_args.generation") -> Engine:
    """The engine ``config.backend`` names, holding ``model``'s current weights. ``auto`` falls back to ``hf`` with a
    warning when vLLM is not installed or cannot load the architecture; ``vllm`` raises then, naming the fix."""
    config = config or GenerationConfig()
    if config.backend == "hf":
        return HFEngine(model, tokenizer)
    from srlm_pl.generation.vllm_engine import VLLMEngine, VLLMUnavailable

    try:
        return VLLMEngine(model, tokenizer, config, key=key)
    except VLLMUnavailable as err:
        if config.backend == "vllm":
            raise
        log.warning("%s.backend auto: generating with hf (%s)", key, err)
        return HFEngine(model, tokenizer)
