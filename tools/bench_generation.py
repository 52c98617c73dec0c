"""Before/after of the generation optimisations that GRPO and on-policy distillation rely on, in one process:

1. sampling a token: ``torch.multinomial`` against the exponential race (``argmax(p / E)``, E ~ Exp(1)) that
   ``srlm_pl.generation`` uses, on ``[rows, vocab]`` probabilities (both are exact categorical draws);
2. decoding: ``generate(..., use_cache=False)`` (recompute the whole sequence every step) against the default
   (prefill once, one KV cache for the batch, one new token per step), SmolLM2-135M-Instruct under bf16
   autocast with fp32 weights, GSM8K-length prompts; both are greedy so they must produce the same tokens.

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

    base = best_of(multinomial, repeats)
    new = best_of(race, repeats)
    return [{"bench": f"sample [{rows}, {vocab}]", "variant": "torch.multinomial", "ms": base * 1e3, "ratio": 1.0},
            {"bench": f"sample [{rows}, {vocab}]", "variant": "exponential race", "ms": new * 1e3,
             "ratio": new / base}]


def bench_decode(rows: int, new_tokens: int) -> list[dict[str, Any]]:
    from srlm_pl.generation import SamplingConfig, generate
    from srlm_pl.models import ModelSpec, load_model, load_tokenizer

    spec = ModelSpec(name_or_path=str(bc.SMOLLM2))
    tokenizer = load_tokenizer(spec)
    model = load_model(spec, tokenizer, trainable=False)
    questions = [json.loads(line)["question"] for line in (bc.DATA / "gsm8k" / "train.jsonl").open()][:rows] \
        if (bc.DATA / "gsm8k" / "train.jsonl").is_file() else [f"Tom has {i} apples and buys 7 more. How many?"
                                                               for i in range(rows)]
    prompts = [tokenizer.apply_chat_template([{"role": "user", "content": q}], add_generation_prompt=True,
                                             tokenize=True, return_dict=False) for q in questions]
    config = SamplingConfig(max_new_tokens=new_tokens, temperature=0.0)
    eos = [tokenizer.eos_token_id]
    out: dict[bool, Any] = {}
    seconds: dict[bool, float] = {}
    for use_cache in (False, True):
        with torch.autocast("cpu", dtype=torch.bfloat16):
            generate(model, prompts[:2], SamplingConfig(max_new_tokens=4, temperature=0.0), eos_token_ids=eos,
                     pad_token_id=tokenizer.pad_token_id, use_cache=use_cache)  # warm-up
            begin = time.perf_counter()
            out[use_cache] = generate(model, prompts, config, eos_token_ids=eos, pad_token_id=tokenizer.pad_token_id,
                                      use_cache=use_cache)
            seconds[use_cache] = time.perf_counter() - begin
    same = torch.equal(out[True].completion_ids, out[False].completion_ids)
    tokens = int(out[True].completion_mask.sum())
    bench = f"greedy decode SmolLM2 {rows} x {new_tokens} new"
    return [{"bench": bench, "variant": "recompute (use_cache=False)", "s": seconds[False],
             "tokens_per_s": tokens / seconds[False], "ratio": 1.0, "same_tokens": same},
            {"bench": bench, "variant": "KV cache (default)", "s": seconds[True],
             "tokens_per_s": tokens / seconds[True], "ratio": seconds[True] / seconds[False], "same_tokens": same}]



def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", type=int, default=16, help="sequences (prompts x completions)")
    ap.add_argument("--vocab", type=int, default=49152, help="vocabulary of the sampling benchmark (SmolLM2)")
    ap.add_argument("--new_tokens", type=int, default=64)
    ap.add_argument("--repeats", type=int, default=20)
    ap.add_argument("--skip_decode", action="store_true")
    ap.add_argument("--json", help="also write the rows here")
    a = ap.parse_args()
    rows = bench_sampling(a.rows, a.vocab, a.repeats) + bench_sampling(a.rows, 151936, a.repeats)
    if not a.skip_decode:
        if not bc.ensure_assets():
            sys.exit("needs SmolLM2-135M-Instruct (see tools/bench_common.py) or --skip_decode")
        rows += bench_decode(a.rows, a.new_tokens)
    print(bc.table(rows, ["bench", "variant", "ms", "s", "tokens_per_s", "ratio", "same_tokens"]))
    if a.json:
        Path(a.json).write_text(json.dumps(rows, indent=2))
    print(json.dumps({"bench": "generation", "rows": rows}))


if __name__ == "__main__":
    main()
