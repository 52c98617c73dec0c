"""GPU check: bf16 throughput and model FLOPs utilisation of srlm_pl's SFT, KD and GRPO steps.

Models are built from their configs with random weights (no hub): a Qwen2.5-0.5B-shaped policy
(hidden 896, 24 layers, 14 heads, 2 KV heads, MLP 4864, vocab 151,936, tied embeddings) and, for KD, a
Qwen2.5-1.5B-shaped teacher (hidden 1536, 28 layers, 12 heads, 2 KV heads, MLP 8960). Every step uses the
framework's own code path: hidden states through the model's forward without full logits
(``modules.base.hidden_states``), chunked LM-head losses (``losses``), KV-cache generation
(``generation``) and completion log-probs (``logprobs``). Precision: fp32 master weights with bf16 autocast
(Lightning's ``bf16-mixed``); AdamW (fused).

MFU = model FLOPs / (time × peak bf16 dense FLOP/s), model FLOPs per token = 6·N (training; 2·N for a
frozen forward) + the attention term 12·L·d·T (6·L·d·T for forward only), N = non-embedding parameters
plus the LM head. Peak: 989 TFLOP/s for H100/H200 SXM (dense bf16).

    python tools/gpu_check.py --out results.json           # the real sizes (GPU)
    python tools/gpu_check.py --smoke --out /tmp/smoke.json  # tiny sizes, any device (a test of the script)
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from collections.abc import Callable
from typing import Any

import torch
from transformers import Qwen2Config, Qwen2ForCausalLM

from srlm_pl.generation.engine import SamplingConfig, generate
from srlm_pl.losses import grpo_policy_loss
from srlm_pl.models.forward import hidden_states
from srlm_pl.ops import chunked_cross_entropy, chunked_kd_loss
from srlm_pl.rl.logprobs import completion_logprobs

VOCAB = 151_936
SHAPES = {
    "qwen2.5-0.5b": dict(hidden_size=896, num_hidden_layers=24, num_attention_heads=14, num_key_value_heads=2,
                         intermediate_size=4864, tie_word_embeddings=True),
    "qwen2.5-1.5b": dict(hidden_size=1536, num_hidden_layers=28, num_attention_heads=12, num_key_value_heads=2,
                         intermediate_size=8960, tie_word_embeddings=True),
    "smoke-policy": dict(hidden_size=64, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                         intermediate_size=128, tie_word_embeddings=True),
    "smoke-teacher": dict(hidden_size=96, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                          intermediate_size=192, tie_word_embeddings=True),
}
PEAK_BF16 = {"H100": 989e12, "H200": 989e12, "A100": 312e12}


def build(shape: str, vocab: int, device: torch.device) -> Qwen2ForCausalLM:
    cfg = Qwen2Config(vocab_size=vocab, max_position_embeddings=4096, **SHAPES[shape])
    cfg._attn_implementation = "sdpa"
    torch.manual_seed(0)
    return Qwen2ForCausalLM(cfg).to(device)


def matmul_params(model: Qwen2ForCausalLM) -> int:
    """Parameters that take part in matmuls per token: everything but the embedding lookup (the tied head
    counts once, as the LM head)."""
    emb = model.get_input_embeddings().weight.numel()
    total = sum(p.numel() for p in model.parameters())
    return total - emb + model.get_output_embeddings().weight.numel() if model.config.tie_word_embeddings else \
        total - emb


def flops_per_token(model: Qwen2ForCausalLM, seq: int, train: bool) -> float:
    c = model.config
    dense = (6 if train else 2) * matmul_params(model)
    attn = (12 if train else 4) * c.num_hidden_layers * c.hidden_size * seq
    return float(dense + attn)


def timed(fn: Callable[[], Any], device: torch.device, warmup: int, iters: int) -> float:
    for _ in range(warmup):
        fn()
    sync(device)
    t0 = time.perf_counter()
    for _ in range(iters):
        fn()
    sync(device)
    return (time.perf_counter() - t0) / iters


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def peak_flops() -> float | None:
    if not torch.cuda.is_available():
        return None
    name = torch.cuda.get_device_name()
    return next((v for k, v in PEAK_BF16.items() if k in name), None)


def batch(b: int, t: int, vocab: int, device: torch.device, prompt: int) -> dict[str, torch.Tensor]:
    ids = torch.randint(0, vocab, (b, t), device=device)
    labels = ids.clone()
    labels[:, :prompt] = -100
    return {"input_ids": ids, "attention_mask": torch.ones_like(ids), "labels": labels}


def sft_step_fn(model, opt, data, chunk):  # noqa: ANN001
    head = model.get_output_embeddings()

    def step() -> None:
        with torch.autocast(data["input_ids"].device.type, dtype=torch.bfloat16):
            h = hidden_states(model, data)
            mask = data["labels"][:, 1:] != -100
            loss_sum, n = chunked_cross_entropy(h[:, :-1][mask], head, data["labels"][:, 1:][mask], chunk_size=chunk)
            (loss_sum / n).backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
    return step


def kd_step_fn(student, teacher, opt, data, chunk):  # noqa: ANN001
    def step() -> None:
        with torch.autocast(data["input_ids"].device.type, dtype=torch.bfloat16):
            mask = data["labels"][:, 1:] != -100
            with torch.no_grad():
                th = hidden_states(teacher, data)[:, :-1][mask]
            sh = hidden_states(student, data)[:, :-1][mask]
            loss, _ = chunked_kd_loss(sh, th, student.get_output_embeddings(), teacher.get_output_embeddings(),
                                      data["labels"][:, 1:][mask], beta=0.5, temperature=1.0, alpha=0.0,
                                      chunk_size=chunk)
            loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
    return step


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", required=True)
    ap.add_argument("--smoke", action="store_true", help="tiny shapes and sizes: checks the script itself")
    ap.add_argument("--iters", type=int, default=5)
    a = ap.parse_args()
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    policy_shape, teacher_shape = ("smoke-policy", "smoke-teacher") if a.smoke else ("qwen2.5-0.5b", "qwen2.5-1.5b")
    vocab = 1000 if a.smoke else VOCAB
    sft_b, sft_t = (2, 64) if a.smoke else (8, 2048)
    kd_b, kd_t = (2, 64) if a.smoke else (8, 1024)
    g_prompts, g_group, g_prompt_len, g_new = (2, 2, 16, 8) if a.smoke else (16, 8, 128, 256)
    chunk = 2048
    peak = peak_flops()
    res: dict[str, Any] = {"device": torch.cuda.get_device_name() if device.type == "cuda" else platform.processor(),
                           "torch": torch.__version__, "precision": "fp32 weights + bf16 autocast",
                           "peak_bf16_flops": peak, "smoke": a.smoke}

    policy = build(policy_shape, vocab, device)
    res["policy_params"] = sum(p.numel() for p in policy.parameters())
    opt = torch.optim.AdamW(policy.parameters(), lr=1e-5, fused=device.type == "cuda")
    data = batch(sft_b, sft_t, vocab, device, prompt=sft_t // 4)
    s = timed(sft_step_fn(policy, opt, data, chunk), device, warmup=2, iters=a.iters)
    tokens = sft_b * sft_t
    flops = flops_per_token(policy, sft_t, train=True) * tokens
    res["sft"] = {"batch": sft_b, "seq": sft_t, "s_per_step": s, "tokens_per_s": tokens / s,
                  "tflops": flops / s / 1e12, "mfu": flops / s / peak if peak else None,
                  "peak_mem_gib": torch.cuda.max_memory_allocated() / 2**30 if device.type == "cuda" else None}
    print("sft", res["sft"], flush=True)

    teacher = build(teacher_shape, vocab, device).eval().requires_grad_(False)
    res["teacher_params"] = sum(p.numel() for p in teacher.parameters())
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    data = batch(kd_b, kd_t, vocab, device, prompt=kd_t // 4)
    s = timed(kd_step_fn(policy, teacher, opt, data, chunk), device, warmup=2, iters=a.iters)
    tokens = kd_b * kd_t
    flops = (flops_per_token(policy, kd_t, train=True) + flops_per_token(teacher, kd_t, train=False)) * tokens
    res["kd"] = {"batch": kd_b, "seq": kd_t, "s_per_step": s, "tokens_per_s": tokens / s,
                 "tflops": flops / s / 1e12, "mfu": flops / s / peak if peak else None,
                 "peak_mem_gib": torch.cuda.max_memory_allocated() / 2**30 if device.type == "cuda" else None}
    print("kd", res["kd"], flush=True)
    del teacher
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()

    prompts = torch.randint(0, vocab, (g_prompts, g_prompt_len)).tolist()
    cfg = SamplingConfig(max_new_tokens=g_new, temperature=1.0, num_samples=g_group)
    gen = torch.Generator(device=device).manual_seed(0)

    def rollout():  # noqa: ANN202
        with torch.autocast(device.type, dtype=torch.bfloat16):
            return generate(policy, prompts, cfg, eos_token_ids=[], pad_token_id=0, generator=gen)

    rollout()  # warm-up
    sync(device)
    t0 = time.perf_counter()
    out = rollout()
    sync(device)
    t_gen = time.perf_counter() - t0
    new_tokens = int(out.lengths.sum())

    rows, micro = out.prompt_ids.shape[0], 32  # gradient accumulation over micro-batches of 32 sequences
    adv = torch.randn(rows, device=device)
    total_tokens = float(out.completion_mask.sum())

    def train() -> None:
        for lo in range(0, rows, micro):
            sl = slice(lo, lo + micro)
            with torch.autocast(device.type, dtype=torch.bfloat16):
                logp, _ = completion_logprobs(policy, out.prompt_ids[sl], out.prompt_mask[sl],
                                              out.completion_ids[sl], out.completion_mask[sl], chunk_size=chunk)
                loss, _ = grpo_policy_loss(logp, adv[sl], out.completion_mask[sl], aggregation="dapo",
                                           num_global_tokens=total_tokens)
                loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    t_train = timed(train, device, warmup=1, iters=max(1, a.iters // 2))
    seq = g_prompt_len + g_new
    train_flops = flops_per_token(policy, seq, train=True) * out.prompt_ids.shape[0] * seq
    res["grpo"] = {"prompts": g_prompts, "group": g_group, "prompt_len": g_prompt_len, "new_tokens": g_new,
                   "generation_s": t_gen, "generation_tokens_per_s": new_tokens / t_gen,
                   "train_s": t_train, "train_tokens_per_s": out.prompt_ids.shape[0] * seq / t_train,
                   "train_mfu": train_flops / t_train / peak if peak else None,
                   "step_s": t_gen + t_train, "micro_batch_rows": micro,
                   "peak_mem_gib": torch.cuda.max_memory_allocated() / 2**30 if device.type == "cuda" else None}
    print("grpo", res["grpo"], flush=True)
    with open(a.out, "w") as f:
        json.dump(res, f, indent=2)
    print(json.dumps(res))


if __name__ == "__main__":
    main()
