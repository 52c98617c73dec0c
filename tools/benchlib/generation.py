"""``bench.py generation``: before/after of the generation optimisations that GRPO and on-policy distillation rely
on, in one process; ``ratio`` is each variant's time over the baseline's (the first row of its group).

1. sampling a token from ``[rows, vocab]`` probabilities (``--vocab`` and Qwen2.5's 151,936): ``torch.multinomial``,
   the exponential race (``argmax(p / E)``, E ~ Exp(1)) and the inverse CDF that ``srlm_pl.generation`` uses (one
   uniform per row, float64 cumulative sums); all three are exact categorical draws;
2. greedy decoding of ``--rows`` GSM8K-length prompts by SmolLM2-135M-Instruct under bf16 autocast with fp32 weights:
   ``use_cache=False`` (unless ``--skip_recompute``), the HF forward with its KV cache (``lean=False``, the baseline),
   the lean decoder with plain bf16 weights and the default lean decoder (weights cast once and prepacked); the
   share of tokens equal to the HF-cache path is reported (bf16 rounding differs between paths);
3. sampled decoding (T = 1, ``--prompts`` x G ``--group``), HF cache vs lean.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable
from typing import Any

from benchlib import common

COLUMNS = ["bench", "variant", "ms", "s", "tokens_per_s", "ratio", "tokens_equal_to_hf_cache", "mean_length"]
BASELINE = "HF forward + KV cache (lean=False)"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--rows", type=int, default=16, help="sequences (sampling rows; greedy prompts)")
    p.add_argument("--vocab", type=int, default=49152, help="vocabulary of the sampling benchmark (SmolLM2)")
    p.add_argument("--new_tokens", type=int, default=64)
    p.add_argument("--repeats", type=int, default=20, help="sampling micro-benchmark repeats (best of)")
    p.add_argument("--decode_repeats", type=int, default=1, help="decode runs per variant (best of)")
    p.add_argument("--prompts", type=int, default=4, help="prompts of the sampled decode")
    p.add_argument("--group", type=int, default=4, help="completions per prompt of the sampled decode")
    p.add_argument("--skip_recompute", action="store_true", help="leave out the use_cache=False variant")
    p.add_argument("--skip_decode", action="store_true", help="only the sampling micro-benchmark (no model)")
    p.add_argument("--json", help="also write the result here")


def best_of(fn: Callable[[], Any], repeats: int) -> float:
    times = []
    for _ in range(repeats):
        begin = time.perf_counter()
        fn()
        times.append(time.perf_counter() - begin)
    return min(times)


def bench_sampling(rows: int, vocab: int, repeats: int) -> list[dict[str, Any]]:
    import torch

    from srlm_pl.generation import categorical

    g = torch.Generator().manual_seed(0)
    probs = torch.randn(rows, vocab, generator=g).softmax(-1)
    variants = {"torch.multinomial": lambda: torch.multinomial(probs, 1, generator=g).squeeze(-1),
                "exponential race": lambda: (probs / torch.empty_like(probs).exponential_(1.0, generator=g)).argmax(-1),
                "inverse CDF (default)": lambda: categorical(probs, g)}
    times = {name: best_of(fn, repeats) for name, fn in variants.items()}
    base = times["torch.multinomial"]
    return [{"bench": f"sample [{rows}, {vocab}]", "variant": name, "ms": t * 1e3, "ratio": t / base}
            for name, t in times.items()]


def _prompts(tokenizer: Any, n: int) -> list[list[int]]:
    path = common.DATA / "gsm8k" / "train.jsonl"
    questions = ([json.loads(line)["question"] for line in path.open()][:n] if path.is_file()
                 else [f"Tom has {i} apples and buys 7 more. How many?" for i in range(n)])
    return [tokenizer.apply_chat_template([{"role": "user", "content": q}], add_generation_prompt=True,
                                          tokenize=True, return_dict=False) for q in questions]


def bench_decode(a: argparse.Namespace) -> list[dict[str, Any]]:
    import torch

    from srlm_pl.generation import SamplingConfig, fast_decode, generate
    from srlm_pl.models import ModelSpec, load_model, load_tokenizer

    spec = ModelSpec(name_or_path=str(common.SMOLLM2))
    tokenizer = load_tokenizer(spec)
    model = load_model(spec, tokenizer, trainable=True)  # fp32 weights that require grad, as in training
    eos, pad = [tokenizer.eos_token_id], tokenizer.pad_token_id

    def timed(prompts: list[list[int]], config: Any, seeds: bool, unpacked: bool = False, **kw: Any) -> Any:
        fast_decode._MKLDNN_OK = False if unpacked else None  # None: probe oneDNN's packed linear again
        best, out = float("inf"), None
        for _ in range(a.decode_repeats):
            gens = [torch.Generator().manual_seed(i) for i in range(len(prompts))] if seeds else None
            with torch.autocast("cpu", dtype=torch.bfloat16, cache_enabled=False):  # as Lightning's bf16-mixed
                generate(model, prompts[:2], SamplingConfig(max_new_tokens=4, temperature=0.0), eos_token_ids=eos,
                         pad_token_id=pad, **kw)  # warm-up
                begin = time.perf_counter()
                out = generate(model, prompts, config, eos_token_ids=eos, pad_token_id=pad, generator=gens, **kw)
                best = min(best, time.perf_counter() - begin)
        return best, out

    variants = [(BASELINE, {"lean": False}), ("lean decoder, unpacked weights", {"lean": True, "unpacked": True}),
                ("lean decoder (default)", {"lean": True})]
    if not a.skip_recompute:
        variants.insert(0, ("recompute (use_cache=False)", {"use_cache": False}))
    greedy = SamplingConfig(max_new_tokens=a.new_tokens, temperature=0.0)
    prompts = _prompts(tokenizer, a.rows)
    results = {name: timed(prompts, greedy, False, **kw) for name, kw in variants}
    base_s, base_out = results[BASELINE]
    rows = []
    for name, (s, out) in results.items():
        same = (out.completion_ids.shape == base_out.completion_ids.shape
                and float((out.completion_ids == base_out.completion_ids).float().mean()))
        rows.append({"bench": f"greedy decode SmolLM2 {a.rows} x {a.new_tokens} new", "variant": name, "s": s,
                     "tokens_per_s": int(out.completion_mask.sum()) / s, "ratio": s / base_s,
                     "tokens_equal_to_hf_cache": same})
    sampled = SamplingConfig(max_new_tokens=a.new_tokens, temperature=1.0, num_samples=a.group)
    prompts = _prompts(tokenizer, a.prompts)
    results = {name: timed(prompts, sampled, True, **kw) for name, kw in (variants[-3], variants[-1])}
    base_s = results[BASELINE][0]
    for name, (s, out) in results.items():
        rows.append({"bench": f"sampled decode SmolLM2 {a.prompts} prompts x G {a.group} x {a.new_tokens} new, T 1",
                     "variant": name, "s": s, "tokens_per_s": int(out.completion_mask.sum()) / s,
                     "ratio": s / base_s, "mean_length": float(out.lengths.float().mean())})
    return rows


def run(a: argparse.Namespace) -> None:
    rows = bench_sampling(a.rows, a.vocab, a.repeats) + bench_sampling(a.rows, 151936, a.repeats)
    if not a.skip_decode:
        if not common.ensure_assets():
            sys.exit("decoding needs SmolLM2-135M-Instruct (python ../shared/bench/assets.py /tmp/probe) or "
                     "--skip_decode")
        rows += bench_decode(a)
    print(common.table(rows, COLUMNS))
    common.emit({"bench": "generation", "rows": rows}, a.json)
