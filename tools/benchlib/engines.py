"""``bench.py engines``: the generation engines on SmolLM2-135M-Instruct in one process, in bf16: the ``hf`` backend
with the lean decoder (today's default), the ``hf`` backend with the model's own forward and cache (the fallback,
``SRLM_LEAN_DECODE=0``) and the ``vllm`` backend (in-process engine; ``enforce_eager`` unless ``--vllm_compiled``).

Shapes: ``grpo`` = the GRPO step's rollout (``--prompts`` GSM8K train questions x G ``--group``, ``--grpo_tokens`` new
tokens, temperature 1, a seed per prompt) and ``eval`` = evaluation (``--eval_prompts`` GSM8K test questions, greedy,
``--eval_tokens`` new tokens), both in the chat template with the anchor's instruction, stopping at EOS. Each variant
runs one untimed warm-up, then ``--repeats`` timed runs; the table shows the median. The vLLM engine's start-up is
timed on its own (``load_s``) and never counted in a run. ``ratio`` is tokens/s over the lean decoder's; greedy runs
also report the share of prompts whose completion equals the lean decoder's.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from typing import Any

from benchlib import common

COLUMNS = ["shape", "variant", "s", "tokens", "tokens_per_s", "ratio", "same_as_lean", "load_s"]
INSTRUCTION = ("Solve the following math problem. Reason step by step, and end your response with "
               "'The answer is N' where N is the final number.")


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--prompts", type=int, default=4, help="grpo shape: prompts")
    p.add_argument("--group", type=int, default=4, help="grpo shape: completions per prompt")
    p.add_argument("--grpo_tokens", type=int, default=128)
    p.add_argument("--eval_prompts", type=int, default=64)
    p.add_argument("--eval_tokens", type=int, default=256)
    p.add_argument("--repeats", type=int, default=3, help="timed runs per variant (median)")
    p.add_argument("--vllm_compiled", action="store_true", help="also the compiled vLLM engine (loads ~1 min)")
    p.add_argument("--skip_hf", action="store_true", help="leave out the HF forward entirely")
    p.add_argument("--skip_hf_eval", action="store_true", help="leave out the HF forward on the eval shape (on 2 CPU "
                   "cores one run of 64 x 256 took over 10 minutes)")
    p.add_argument("--json", help="also write the result here")


def _prompts(tokenizer: Any, split: str, n: int) -> list[list[int]]:
    rows = [json.loads(line) for line in (common.DATA / "gsm8k" / f"{split}.jsonl").read_text().splitlines()[:n]]
    texts = [tokenizer.apply_chat_template([{"role": "user", "content": f"{INSTRUCTION}\n\nProblem: {r['question']}"}],
                                           tokenize=False, add_generation_prompt=True) for r in rows]
    return [tokenizer(t, add_special_tokens=False)["input_ids"] for t in texts]


def _timed(engine: Any, prompts: list[list[int]], config: Any, seeds: Any, repeats: int,
           autocast: bool) -> tuple[float, int, Any]:
    import torch

    times, out = [], None
    for i in range(repeats + 1):
        begin = time.perf_counter()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
            out = engine.generate(prompts, config, seeds=seeds)
        if i:  # the first run warms up
            times.append(time.perf_counter() - begin)
    return statistics.median(times), int(out.lengths.sum()), out


def run(a: argparse.Namespace) -> None:
    import torch

    from srlm_pl.generation.backends import HFEngine, build_engine
    from srlm_pl.generation.config import GenerationConfig
    from srlm_pl.generation.engine import SamplingConfig
    from srlm_pl.models.loading import ModelSpec, load_model, load_tokenizer

    if not common.ensure_assets() or not common.has_gsm8k():
        raise SystemExit("needs SmolLM2 (python ../shared/bench/assets.py /tmp/probe) and ../shared/data/gsm8k")
    spec = ModelSpec(name_or_path=str(common.SMOLLM2))
    tok = load_tokenizer(spec)
    model = load_model(spec, tok, trainable=False)  # fp32 weights, bf16 autocast (as training and evaluation)
    shapes = {"grpo": (_prompts(tok, "train", a.prompts), SamplingConfig(max_new_tokens=a.grpo_tokens, temperature=1.0,
                                                                        num_samples=a.group), list(range(a.prompts))),
              "eval": (_prompts(tok, "test", a.eval_prompts), SamplingConfig(max_new_tokens=a.eval_tokens,
                                                                             temperature=0.0), None)}
    hf = HFEngine(model, tok)
    variants: list[tuple[str, Any, bool, float | None]] = [("lean decoder (hf backend, default)", hf, True, None),
                                                           ("hf forward + cache (SRLM_LEAN_DECODE=0)", hf, True, None)]
    variants += [(f"vllm ({'compiled' if c else 'enforce_eager'})", None, False, None)
                 for c in ([False, True] if a.vllm_compiled else [False])]
    rows: list[dict[str, Any]] = []
    lean: dict[str, tuple[float, list[list[int]]]] = {}
    for name, engine, autocast, load in variants:  # vLLM starts only after the hf runs: its threads stay out of them
        if engine is None:
            begin = time.perf_counter()
            engine = build_engine(GenerationConfig(backend="vllm", dtype="bfloat16",
                                                   enforce_eager="enforce_eager" in name), model, tok, key="bench")
            load = time.perf_counter() - begin
        os.environ["SRLM_LEAN_DECODE"] = "0" if name.startswith("hf forward") else "1"
        for shape, (prompts, config, seeds) in shapes.items():
            if name.startswith("hf forward") and (a.skip_hf or (a.skip_hf_eval and shape == "eval")):
                continue
            seconds, tokens, out = _timed(engine, prompts, config, seeds, a.repeats, autocast)
            completions = [ids[:n] for ids, n in zip(out.completion_ids.tolist(), out.lengths.tolist(), strict=True)]
            lean.setdefault(shape, (tokens / seconds, completions))
            row = {"shape": shape, "variant": name, "s": seconds, "tokens": tokens, "tokens_per_s": tokens / seconds,
                   "ratio": tokens / seconds / lean[shape][0], "load_s": load}
            if config.temperature == 0:
                same = sum(x == y for x, y in zip(completions, lean[shape][1], strict=True))
                row["same_as_lean"] = same / len(prompts)
            rows.append(row)
            print(json.dumps(row), flush=True)
        if hasattr(engine, "close"):
            engine.close()
    rows.sort(key=lambda r: r["shape"] != "grpo")
    print(common.table(rows, COLUMNS))
    common.emit({"bench": "engines", "model": str(common.SMOLLM2), "threads": torch.get_num_threads(),
                 "repeats": a.repeats, "rows": rows}, a.json)
