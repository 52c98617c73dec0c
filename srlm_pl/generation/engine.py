"""Batched sampling from causal LMs with a KV cache (no Lightning, no optimizer code).

``generate`` left-pads the prompts, prefills each *distinct* prompt once (position ids = cumsum(mask) - 1,
clamped at 0; ``logits_to_keep=1`` when the model's forward accepts it) and repeats the KV cache
``num_samples`` (G) times along the batch with ``Cache.batch_repeat_interleave`` (transformers >= 4.56), so
the N = B * G rows are grouped per prompt: rows ``i*G .. i*G+G-1`` belong to prompt ``i``, as GRPO expects.
It then decodes one token per step with the cache, a growing attention mask and per-row position ids.

Sampling follows the usual HF / vLLM order: logits / temperature -> top-k -> top-p (nucleus: the smallest set
of most-likely tokens whose probability mass reaches ``top_p``) -> an exact categorical draw (inverse CDF, one
uniform per row) with the caller's generator (same seed, same device and same inputs -> same samples).
``temperature == 0`` is greedy argmax.

Decoding steps run through ``fast_decode.LeanDecoder`` when it supports the model (Llama-family decoders,
plain or LoRA; ``lean=False`` or an unsupported model uses the HF forward with its own cache).

A row stops at the first token in ``eos_token_ids`` (the EOS token is kept and masked 1) or when the decoded
tail of its completion contains one of ``stop_strings`` (the token that completed the string is kept; text
post-processing is the caller's business). Finished rows receive ``pad_token_id`` with mask 0. The loop ends
when every row has finished (all-reduced across ranks with ``sync_ranks=True`` so FSDP ranks run the same
number of forward passes) or after ``max_new_tokens`` steps; rows still running then are ``truncated``.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import torch
import torch.distributed as dist
from torch import Tensor, nn

from srlm_pl.generation.fast_decode import LeanDecoder
from srlm_pl.models.forward import contiguous_head_input, forward_params, output_cache, positions


@dataclass
class SamplingConfig:
    """Sampling options. ``temperature=0`` is greedy; ``top_k=0`` and ``top_p=1`` disable those filters."""

    max_new_tokens: int = 256
    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = 0
    stop_strings: list[str] = field(default_factory=list)
    num_samples: int = 1  # completions per prompt (G in GRPO)

    def __post_init__(self) -> None:
        if self.max_new_tokens < 1:
            raise ValueError(f"max_new_tokens must be >= 1, got {self.max_new_tokens}")
        if self.temperature < 0:
            raise ValueError(f"temperature must be >= 0 (0 = greedy), got {self.temperature}")
        if not 0.0 < self.top_p <= 1.0:
            raise ValueError(f"top_p must be in (0, 1], got {self.top_p}")
        if self.top_k < 0:
            raise ValueError(f"top_k must be >= 0 (0 = off), got {self.top_k}")
        if self.num_samples < 1:
            raise ValueError(f"num_samples must be >= 1, got {self.num_samples}")
        if any(not isinstance(s, str) or not s for s in self.stop_strings):
            raise ValueError(f"stop_strings must be non-empty strings, got {self.stop_strings!r}")


class GenerationOutput(NamedTuple):
    prompt_ids: Tensor  # [N, P] left-padded, prompt i repeated in rows i*G .. i*G+G-1
    prompt_mask: Tensor  # [N, P] long, 1 for real prompt tokens
    completion_ids: Tensor  # [N, C] right-padded with pad_token_id; includes the EOS token when produced
    completion_mask: Tensor  # [N, C] long, 1 for real completion tokens (incl. EOS), 0 after the stop
    lengths: Tensor  # [N] long, completion_mask.sum(-1)
    truncated: Tensor  # [N] bool, hit max_new_tokens without EOS / stop string
    stopped_by_string: Tensor  # [N] bool, stopped because a stop string appeared
    logprobs: Tensor | None = None  # [N, C] float32, the sampler's log-prob of each completion token (vLLM only)


def decode_completions(tokenizer: Any, out: GenerationOutput) -> list[str]:
    """The text of each generated row: its first ``out.lengths[i]`` completion tokens, special tokens skipped."""
    return [tokenizer.decode(ids[:n], skip_special_tokens=True)
            for ids, n in zip(out.completion_ids.tolist(), out.lengths.tolist(), strict=True)]


def left_pad(prompts: Sequence[Sequence[int]], pad_token_id: int, device: torch.device | str = "cpu"):
    """Left-pad token lists -> ``(ids[B, P], mask[B, P])`` (long tensors)."""
    width = max(len(p) for p in prompts)
    ids = torch.full((len(prompts), width), pad_token_id, dtype=torch.long)
    mask = torch.zeros((len(prompts), width), dtype=torch.long)
    for i, p in enumerate(prompts):
        if len(p):
            ids[i, width - len(p) :] = torch.as_tensor(list(p), dtype=torch.long)
            mask[i, width - len(p) :] = 1
    return ids.to(device), mask.to(device)


def top_k_filter(logits: Tensor, top_k: int) -> Tensor:
    """Set all but the ``top_k`` largest logits per row to -inf (ties at the k-th value are kept)."""
    if top_k <= 0 or top_k >= logits.shape[-1]:
        return logits
    kth = torch.topk(logits, top_k, dim=-1).values[..., -1:]  # [N, 1]
    return logits.masked_fill(logits < kth, float("-inf"))


def top_p_filter(logits: Tensor, top_p: float) -> Tensor:
    """Keep the nucleus: the most likely tokens whose cumulative probability *before* them is < ``top_p``.

    That is the smallest prefix of the descending-probability order with mass >= ``top_p``; the most likely
    token is always kept. Others are set to -inf.
    """
    if top_p >= 1.0:
        return logits
    sorted_p, order = logits.softmax(-1).sort(dim=-1, descending=True)  # [N, V]
    remove_sorted = (sorted_p.cumsum(-1) - sorted_p) >= top_p  # [N, V]
    remove = remove_sorted.scatter(-1, order, remove_sorted)
    return logits.masked_fill(remove, float("-inf"))


Generators = torch.Generator | Sequence[torch.Generator] | None


def sample_next_token(logits: Tensor, config: SamplingConfig, generator: Generators = None) -> Tensor:
    """Next token per row from ``logits[N, V]`` -> ``[N]`` (greedy when ``config.temperature == 0``).

    ``generator`` may be one generator for the whole batch, or one per prompt (a sequence of B generators
    for N = B * G rows): each group of G rows then draws from its own stream, so a prompt's samples do not
    depend on which other prompts share the batch (or the process).
    """
    if config.temperature == 0:
        return logits.argmax(-1)
    scores = logits.float() / config.temperature
    scores = top_p_filter(top_k_filter(scores, config.top_k), config.top_p)
    probs = scores.softmax(-1)
    if generator is None or isinstance(generator, torch.Generator):
        return categorical(probs, generator)
    group = probs.shape[0] // len(generator)
    return torch.cat([categorical(probs[i * group: (i + 1) * group], g) for i, g in enumerate(generator)])


def categorical(probs: Tensor, generator: torch.Generator | None) -> Tensor:
    """One exact categorical draw per row from ``probs[N, V]`` by inverse CDF: the first token whose float64
    cumulative mass exceeds ``u * total`` with one ``u ~ U[0, 1)`` per row. Tokens of zero probability are never
    drawn (their cumulative mass equals their predecessor's). One uniform per row instead of the exponential
    race's V exponentials (``tools/bench.py generation`` compares them; figures in docs/performance.md)."""
    cdf = probs.double().cumsum(-1)  # [N, V]
    u = torch.rand((probs.shape[0], 1), generator=generator, dtype=torch.float64, device=probs.device)
    index = torch.searchsorted(cdf, u * cdf[:, -1:], right=True)  # [N, 1]
    return index.squeeze(-1).clamp_(max=probs.shape[-1] - 1)


def _any_running(running: Tensor, sync_ranks: bool) -> bool:
    """True while some row (on any rank, when syncing) is still generating."""
    flag = running.any().to(torch.int32)
    if sync_ranks and dist.is_available() and dist.is_initialized():
        device = running.device if dist.get_backend() == "nccl" else torch.device("cpu")
        flag = flag.to(device)
        dist.all_reduce(flag, op=dist.ReduceOp.MAX)
    return bool(flag.item())


def _stop_string_hits(
    completion: Tensor, running: Tensor, decode: Callable[[list[int]], str], stops: list[str], window: int
) -> Tensor:
    """Rows (among the running ones) whose decoded completion tail contains a stop string -> bool[N]."""
    hits = torch.zeros_like(running)
    rows = running.nonzero().flatten()
    if rows.numel() == 0:
        return hits
    tails = completion[rows, -window:].tolist()
    found = [any(s in decode(ids) for s in stops) for ids in tails]
    hits[rows] = torch.tensor(found, dtype=torch.bool, device=running.device)
    return hits


@torch.no_grad()
def generate(
    model: nn.Module,
    prompts: list[list[int]],
    config: SamplingConfig,
    *,
    eos_token_ids: Sequence[int],
    pad_token_id: int,
    decode: Callable[[list[int]], str] | None = None,
    generator: Generators = None,
    use_cache: bool = True,
    sync_ranks: bool = False,
    stop_string_window: int | None = None,
    lean: bool = True,
) -> GenerationOutput:
    """Sample ``config.num_samples`` completions for each prompt (see the module docstring).

    ``model`` is an HF causal LM or a peft ``PeftModel`` (called with input_ids, attention_mask, position_ids,
    use_cache and the KV cache as ``cache=`` when the HF forward has that parameter, as in transformers 5.x,
    else ``past_key_values=``); it is put in eval mode for the call and every submodule's train/eval flag is
    restored afterwards. Runs under ``torch.no_grad`` (not inference mode: outputs may enter autograd later).
    ``decode`` is required with ``stop_strings``; it is applied to the last ``stop_string_window`` tokens of
    each running completion (default: longest stop string length + 8 tokens). ``generator`` must live on the
    model's device. ``use_cache=False`` recomputes the full sequence every step (reference path for tests).
    ``lean=False`` decodes with the model's own forward and cache instead of ``fast_decode.LeanDecoder``.
    ``completion_ids`` is trimmed to the longest completion.
    """
    if not prompts or any(len(p) == 0 for p in prompts):
        raise ValueError("prompts must be a non-empty list of non-empty token lists")
    if config.stop_strings and decode is None:
        raise ValueError("stop_strings require a decode function")
    device = next(model.parameters()).device
    gens = [] if generator is None else [generator] if isinstance(generator, torch.Generator) else list(generator)
    if any(g.device.type != device.type for g in gens):
        raise ValueError(f"generator is on {gens[0].device}, the model on {device}")
    if generator is not None and not isinstance(generator, torch.Generator) and len(gens) != len(prompts):
        raise ValueError(f"{len(gens)} generators for {len(prompts)} prompts: pass one per prompt or a single one")
    if stop_string_window is None:
        stop_string_window = max((len(s) for s in config.stop_strings), default=0) + 8
    modes = {m: m.training for m in model.modules()}
    model.eval()
    try:
        with _cached_autocast(device.type, model):
            return _generate(
                model, prompts, config, eos_token_ids, pad_token_id, decode, generator, use_cache, sync_ranks,
                stop_string_window, device, lean,
            )  # fmt: skip
    finally:
        for module, training in modes.items():
            module.training = training


@contextlib.contextmanager
def _cached_autocast(device_type: str, model: nn.Module) -> Iterator[None]:
    """Under an active autocast, decode with autocast's weight-cast cache on (and clear it afterwards).

    Lightning's mixed-precision plugin runs autocast with ``cache_enabled=False``, which re-casts every fp32
    weight to bf16 at every op of every decoding step; with the cache each weight is cast once per call.
    Autocast only caches leaf tensors that require grad, so frozen fp32 weights (a teacher, an evaluated
    model) are flagged ``requires_grad`` for the duration: decoding runs under ``no_grad``, so no graph or
    gradient is ever made, and the flags are restored afterwards.
    """
    if not torch.is_autocast_enabled(device_type):
        yield
        return
    frozen = [p for p in model.parameters() if not p.requires_grad and p.dtype == torch.float32]
    for p in frozen:
        p.requires_grad_(True)
    try:
        with torch.autocast(device_type, dtype=torch.get_autocast_dtype(device_type), cache_enabled=True):
            yield
    finally:
        torch.clear_autocast_cache()
        for p in frozen:
            p.requires_grad_(False)


def _prefill(model: nn.Module, prompt_ids: Tensor, prompt_mask: Tensor, ids_n: Tensor, mask_n: Tensor, *,
             group: int, max_new: int, keep: dict[str, Any], use_cache: bool,
             lean: bool) -> tuple[Tensor, Any, LeanDecoder | None]:
    """The prompts' forward: last-position logits ``[N, V]`` for the ``N = B * group`` rows, the KV cache the
    decode loop continues (``None`` without a cache or when the lean decoder holds it), and the lean decoder.

    With a cache, each distinct prompt runs once and its cache is repeated ``group`` times (in the lean decoder's
    buffers, or by the cache's own ``batch_repeat_interleave``; otherwise the repeated prompts are prefilled)."""
    cache: Any = None
    decoder: LeanDecoder | None = None
    if use_cache:
        with contiguous_head_input(model):
            out = model(
                input_ids=prompt_ids, attention_mask=prompt_mask, position_ids=positions(prompt_mask),
                use_cache=True, **keep,
            )  # fmt: skip
        cache, logits = output_cache(out), out.logits[:, -1]  # [B, V]
        if lean:
            torch.clear_autocast_cache()  # drop the prefill's bf16 weight casts before the decoder makes its own
            decoder = LeanDecoder.build(model, ids_n.shape[0])
        if decoder is not None and decoder.load_cache(cache, group, prompt_ids.shape[1] + max_new):
            cache = None  # decoding continues in the lean decoder's buffers (prompt caches repeated G times)
            logits = logits.repeat_interleave(group, 0)  # [N, V]
        elif group > 1 and hasattr(cache, "batch_repeat_interleave"):
            decoder = None
            cache.batch_repeat_interleave(group)
            logits = logits.repeat_interleave(group, 0)  # [N, V]
        elif group > 1:  # cache type without batch expansion: prefill the repeated prompts instead
            decoder = None
            out = model(
                input_ids=ids_n,
                attention_mask=mask_n,
                position_ids=positions(mask_n),
                use_cache=True,
                **keep,
            )
            cache, logits = output_cache(out), out.logits[:, -1]
        else:
            decoder = None
    else:
        out = model(
            input_ids=ids_n, attention_mask=mask_n, position_ids=positions(mask_n), use_cache=False, **keep
        )
        logits = out.logits[:, -1]  # [N, V]
    return logits, cache, decoder


def _hf_step(model: nn.Module, token: Tensor, next_pos: Tensor, attn: Tensor, cache: Any, full: Tensor | None, *,
             cache_kw: str, keep: dict[str, Any]) -> tuple[Tensor, Any]:
    """One decoding step through the model's own forward: the new token against the KV cache, or (``full``, no
    cache) the whole sequence again. Returns the next logits ``[N, V]`` and the cache."""
    if full is None:
        out = model(input_ids=token[:, None], attention_mask=attn, position_ids=next_pos[:, None], use_cache=True,
                    **{cache_kw: cache})
        return out.logits[:, -1], output_cache(out)
    out = model(input_ids=full, attention_mask=attn, position_ids=positions(attn), use_cache=False, **keep)
    return out.logits[:, -1], cache


def _generate(
    model: nn.Module,
    prompts: list[list[int]],
    config: SamplingConfig,
    eos_token_ids: Sequence[int],
    pad_token_id: int,
    decode: Callable[[list[int]], str] | None,
    generator: Generators,
    use_cache: bool,
    sync_ranks: bool,
    window: int,
    device: torch.device,
    lean: bool = False,
) -> GenerationOutput:
    """Prefill, then the decode loop (sample, mark EOS and stop strings, step the lean decoder or the HF forward).

    Kept long: the loop's state (tokens, masks, running rows, positions) is shared by every line of it."""
    group, max_new = config.num_samples, config.max_new_tokens
    params = forward_params(model)
    keep: dict[str, Any] = {"logits_to_keep": 1} if "logits_to_keep" in params else {}
    cache_kw = "cache" if "cache" in params else "past_key_values"  # transformers 5.x renamed the kwarg
    prompt_ids, prompt_mask = left_pad(prompts, pad_token_id, device)  # [B, P]
    ids_n = prompt_ids.repeat_interleave(group, 0)  # [N, P]
    mask_n = prompt_mask.repeat_interleave(group, 0)  # [N, P]
    n_rows = ids_n.shape[0]
    eos = torch.tensor(list(eos_token_ids), dtype=torch.long, device=device)
    completion = torch.full((n_rows, max_new), pad_token_id, dtype=torch.long, device=device)  # [N, max_new]
    comp_mask = torch.zeros((n_rows, max_new), dtype=torch.long, device=device)  # [N, max_new]
    running = torch.ones(n_rows, dtype=torch.bool, device=device)
    by_string = torch.zeros(n_rows, dtype=torch.bool, device=device)
    next_pos = mask_n.sum(-1)  # [N] position id of the next token
    attn = mask_n  # [N, P + t]
    logits, cache, decoder = _prefill(model, prompt_ids, prompt_mask, ids_n, mask_n, group=group, max_new=max_new,
                                      keep=keep, use_cache=use_cache, lean=lean)

    for step in range(max_new):
        token = sample_next_token(logits, config, generator)  # [N]
        token = torch.where(running, token, pad_token_id)
        completion[:, step] = token
        comp_mask[:, step] = running.long()
        running = running & ~torch.isin(token, eos)
        if config.stop_strings:
            assert decode is not None
            hits = _stop_string_hits(completion[:, : step + 1], running, decode, config.stop_strings, window)
            by_string |= hits
            running = running & ~hits
        if step == max_new - 1 or not _any_running(running, sync_ranks):
            break
        attn = torch.cat([attn, attn.new_ones(n_rows, 1)], dim=1)
        if decoder is not None:
            logits = decoder.step(token, next_pos, attn)
        else:
            full = None if use_cache else torch.cat([ids_n, completion[:, : step + 1]], dim=1)  # [N, P + t]
            logits, cache = _hf_step(model, token, next_pos, attn, cache, full, cache_kw=cache_kw, keep=keep)
        next_pos = next_pos + 1

    lengths = comp_mask.sum(-1)  # [N]
    width = int(lengths.max())
    return GenerationOutput(
        prompt_ids=ids_n,
        prompt_mask=mask_n,
        completion_ids=completion[:, :width],
        completion_mask=comp_mask[:, :width],
        lengths=lengths,
        truncated=running,
        stopped_by_string=by_string,
    )
