"""Before/after of the generation optimisations that GRPO and on-policy distillation rely on, in one process:

1. sampling a token from ``[rows, vocab]`` probabilities: ``torch.multinomial``, the exponential race
   (``argmax(p / E)``, E ~ Exp(1); srlm_pl's earlier sampler) and the inverse CDF that ``srlm_pl.generation.engine``
   uses now (one uniform per row, float64 cumulative sums); all three are exact categorical draws;
2. greedy decoding, SmolLM2-135M-Instruct under bf16 autocast with fp32 weights, GSM8K-length prompts:
   ``use_cache=False`` (recompute the whole sequence every step), the HF forward with its KV cache
   (``lean=False``), the lean decoder with plain bf16 weights (no oneDNN prepacking) and the default
   (``fast_decode.LeanDecoder``: weights cast once and prepacked, q/k/v and gate/up fused, a static bf16 KV
   cache); the tokens of each path against the HF-cache path are reported (bf16 rounding
   differs between paths, so they can part after a near-tie; the float32 tests assert equality);
3. sampled decoding (T = 1, 4 prompts x G 4 unless changed: the GRPO benchmark's shape), HF cache vs lean.

    python tools/bench_generation.py                  # needs /tmp/probe/smollm2_hf (tools/bench_common.py)
    python tools/bench_generation.py --rows 16 --new_tokens 64 --json /tmp/bench/generation.json
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench_common as bc  # noqa: E402

from srlm_pl.generation.engine import categorical  # noqa: E402


def best_of(fn: Any, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        begin = time.perf_counter()
        fn()
        times.append(time.perf_counter() - begin)
    return min(times)


def bench_sampling(rows: int, vocab: int, repeats: int) -> list[dict[str, Any]]:
    g = torch.Generator().manual_seed(0)
    probs = torch.randn(rows, vocab, generator=g).softmax(-1)

    def multinomial() -> Tensor:
        return torch.multinomial(probs, 1, generator=g).squeeze(-1)

    def race() -> Tensor:
        return (probs / torch.empty_like(probs).exponential_(1.0, generator=g)).argmax(-1)

    def inverse_cdf() -> Tensor:
        return categorical(probs, g)

    base = best_of(multinomial, repeats)
    out = [{"bench": f"sample [{rows}, {vocab}]", "variant": "torch.multinomial", "ms": base * 1e3, "ratio": 1.0}]
    for name, fn in (("exponential race", race), ("inverse CDF (default)", inverse_cdf)):
        t = best_of(fn, repeats)
        out.append({"bench": f"sample [{rows}, {vocab}]", "variant": name, "ms": t * 1e3, "ratio": t / base})
    return out


def _prompts(tokenizer: Any, n: int) -> list[list[int]]:
    path = bc.DATA / "gsm8k" / "train.jsonl"
    questions = ([json.loads(line)["question"] for line in path.open()][:n] if path.is_file()
                 else [f"Tom has {i} apples and buys 7 more. How many?" for i in range(n)])
    return [tokenizer.apply_chat_template([{"role": "user", "content": q}], add_generation_prompt=True,
                                          tokenize=True, return_dict=False) for q in questions]


def bench_decode(rows: int, new_tokens: int, prompts_sampled: int, group: int, skip_recompute: bool,
                 repeats: int) -> list[dict[str, Any]]:
    from srlm_pl.generation.engine import SamplingConfig, fast_decode, generate
    from srlm_pl.models.loading import ModelSpec, load_model, load_tokenizer

    spec = ModelSpec(name_or_path=str(bc.SMOLLM2))
    tokenizer = load_tokenizer(spec)
    model = load_model(spec, tokenizer, trainable=True)  # fp32 weights that require grad, as in training
    eos, pad = [tokenizer.eos_token_id], tokenizer.pad_token_id
    out_rows: list[dict[str, Any]] = []

    def timed(prompts: list[list[int]], config: SamplingConfig, seeds: bool, unpacked: bool = False,
              **kw: Any) -> tuple[float, Any]:
        fast_decode._MKLDNN_OK = False if unpacked else None  # None: probe oneDNN's packed linear again
        best, out = float("inf"), None
        for _ in range(repeats):
            gens = [torch.Generator().manual_seed(i) for i in range(len(prompts))] if seeds else None
            with torch.autocast("cpu", dtype=torch.bfloat16, cache_enabled=False):  # as Lightning's bf16-mixed
                generate(model, prompts[:2], SamplingConfig(max_new_tokens=4, temperature=0.0), eos_token_ids=eos,
                         pad_token_id=pad, **kw)  # warm-up
                begin = time.perf_counter()
                out = generate(model, prompts, config, eos_token_ids=eos, pad_token_id=pad, generator=gens, **kw)
                best = min(best, time.perf_counter() - begin)
        return best, out

    greedy = SamplingConfig(max_new_tokens=new_tokens, temperature=0.0)
    variants = [("HF forward + KV cache (lean=False)", {"lean": False}),
                ("lean decoder, unpacked weights", {"lean": True, "unpacked": True}),
                ("lean decoder (default)", {"lean": True})]
    if not skip_recompute:
        variants.insert(0, ("recompute (use_cache=False)", {"use_cache": False}))
    bench = f"greedy decode SmolLM2 {rows} x {new_tokens} new"
    results = {name: timed(_prompts(tokenizer, rows), greedy, False, **kw) for name, kw in variants}
    base_name = "HF forward + KV cache (lean=False)"
    base_s, base_out = results[base_name]
    for name, (s, out) in results.items():
        tokens = int(out.completion_mask.sum())
        same = (out.completion_ids.shape == base_out.completion_ids.shape
                and float((out.completion_ids == base_out.completion_ids).float().mean()))
        out_rows.append({"bench": bench, "variant": name, "s": s, "tokens_per_s": tokens / s, "ratio": s / base_s,
                         "tokens_equal_to_hf_cache": same})
    sampled = SamplingConfig(max_new_tokens=new_tokens, temperature=1.0, num_samples=group)
    bench = f"sampled decode SmolLM2 {prompts_sampled} prompts x G {group} x {new_tokens} new, T 1"
    prompts = _prompts(tokenizer, prompts_sampled)
    results = {name: timed(prompts, sampled, True, **kw) for name, kw in (variants[0], variants[-1])}
    base_s = results[base_name][0]
    for name, (s, out) in results.items():
        out_rows.append({"bench": bench, "variant": name, "s": s, "tokens_per_s": int(out.completion_mask.sum()) / s,
                         "ratio": s / base_s, "mean_length": float(out.lengths.float().mean())})
    return out_rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", type=int, default=16, help="sequences (prompts x completions)")
    ap.add_argument("--vocab", type=int, default=49152, help="vocabulary of the sampling benchmark (SmolLM2)")
    ap.add_argument("--new_tokens", type=int, default=64)
    ap.add_argument("--repeats", type=int, default=20, help="sampling micro-benchmark repeats (best of)")
    ap.add_argument("--decode_repeats", type=int, default=1, help="decode runs per variant (best of)")
    ap.add_argument("--prompts", type=int, default=4, help="prompts of the sampled decode")
    ap.add_argument("--group", type=int, default=4, help="completions per prompt of the sampled decode")
    ap.add_argument("--skip_recompute", action="store_true", help="leave out the use_cache=False variant")
    ap.add_argument("--skip_decode", action="store_true")
    ap.add_argument("--json", help="also write the rows here")
    a = ap.parse_args()
    rows = bench_sampling(a.rows, a.vocab, a.repeats) + bench_sampling(a.rows, 151936, a.repeats)
    if not a.skip_decode:
        if not bc.ensure_assets():
            sys.exit("needs SmolLM2-135M-Instruct (see tools/bench_common.py) or --skip_decode")
        rows += bench_decode(a.rows, a.new_tokens, a.prompts, a.group, a.skip_recompute, a.decode_repeats)
    print(bc.table(rows, ["bench", "variant", "ms", "s", "tokens_per_s", "ratio", "tokens_equal_to_hf_cache",
                          "mean_length"]))
    if a.json:
        Path(a.json).write_text(json.dumps(rows, indent=2))
    print(json.dumps({"bench": "generation", "rows": rows}))


if __name__ == "__main__":
    main()
