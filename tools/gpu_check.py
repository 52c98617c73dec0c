"""GPU check: bf16 throughput and model FLOPs utilisation of srlm_pl's SFT, KD and GRPO steps, measured by the step
benchmark (``tools/bench.py step``, workload ``random-0.5b``: the real modules under a Lightning ``Trainer``).

Models are random-weight Qwen2.5-0.5B-shaped policies (hidden 896, 24 layers, 14 heads, 2 KV heads, MLP 4864, vocab
151,936, tied embeddings) and, for KD, a Qwen2.5-1.5B-shaped frozen teacher (hidden 1536, 28 layers, 12 heads, 2 KV
heads, MLP 8960); fp32 master weights with bf16 autocast (``bf16-mixed``), AdamW (fused). Shapes: SFT 8 x 2048
tokens, KD 8 x 1024, GRPO 16 prompts of 128 ids x G 8 x 256 new tokens (``--smoke``: a few-second version).

MFU = model FLOPs / (time x peak bf16 dense FLOP/s); model FLOPs per token = 6 N (training; 2 N for a frozen forward)
+ the attention term 12 L d T (4 L d T forward only), N = non-embedding parameters plus the LM head. GRPO training
FLOPs count every row's prompt and completion. Peak: ``PEAK_BF16`` by device name.

    python tools/gpu_check.py --out results.json             # the real sizes (GPU)
    python tools/gpu_check.py --smoke --out /tmp/smoke.json  # tiny sizes, any device (a test of the script)
"""

from __future__ import annotations

import argparse
import json
import platform
from typing import Any

from benchlib import step, synthetic

PEAK_BF16 = {"H100": 989e12, "H200": 989e12, "A100": 312e12}
# name -> (workload, SFT batch x seq, KD batch x seq, GRPO prompts, group, prompt length, new tokens)
SIZES = {"full": ("random-0.5b", (8, 2048), (8, 1024), (16, 8, 128, 256)),
         "smoke": ("random-smoke", (2, 64), (2, 64), (2, 2, 16, 8))}
CHUNK = "2048"


def config(workload: str, role: str) -> Any:
    from transformers import Qwen2Config

    policy, teacher, vocab = synthetic.WORKLOADS[workload]
    s = synthetic.SHAPES[policy if role == "policy" else teacher]
    return Qwen2Config(vocab_size=vocab, hidden_size=s["hidden_size"], num_hidden_layers=s["num_layers"],
                       num_attention_heads=s["num_heads"], num_key_value_heads=s["num_kv_heads"],
                       intermediate_size=s["intermediate_size"], tie_word_embeddings=True)


def matmul_params(cfg: Any) -> int:
    """Parameters in matmuls per token: all but the embedding lookup (a tied head counts once, as the head)."""
    import torch
    from transformers import Qwen2ForCausalLM

    with torch.device("meta"):
        model = Qwen2ForCausalLM(cfg)
    total = sum(p.numel() for p in model.parameters())
    emb = model.get_input_embeddings().weight.numel()
    return total - emb + (emb if cfg.tie_word_embeddings else 0)


def flops_per_token(cfg: Any, seq: int, train: bool) -> float:
    dense = (6 if train else 2) * matmul_params(cfg)
    return float(dense + (12 if train else 4) * cfg.num_hidden_layers * cfg.hidden_size * seq)


def peak_flops() -> tuple[str, float | None]:
    import torch

    if not torch.cuda.is_available():
        return platform.processor() or "cpu", None
    name = torch.cuda.get_device_name()
    return name, next((v for k, v in PEAK_BF16.items() if k in name), None)


def step_row(argv: list[str]) -> dict[str, Any]:
    row = step.measure(step.parse(argv))["rows"][0]
    if "error" in row:
        raise RuntimeError(f"step {' '.join(argv)}: {row['error']}")
    return row


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", required=True)
    ap.add_argument("--smoke", action="store_true", help="tiny shapes and sizes: checks the script itself")
    ap.add_argument("--iters", type=int, default=5, help="timed SFT and KD steps (GRPO: half, at least 1)")
    a = ap.parse_args()
    import torch

    workload, (sft_b, sft_t), (kd_b, kd_t), (prompts, group, prompt_len, new) = SIZES["smoke" if a.smoke else "full"]
    device = "cuda" if torch.cuda.is_available() else "cpu"
    name, peak = peak_flops()
    policy, teacher = config(workload, "policy"), config(workload, "teacher")
    shared = ["--workloads", workload, "--device", device, "--chunk", CHUNK]
    res: dict[str, Any] = {"device": name, "torch": torch.__version__, "precision": "fp32 weights + bf16 autocast",
                           "peak_bf16_flops": peak, "smoke": a.smoke, "workload": workload,
                           "policy_matmul_params": matmul_params(policy),
                           "teacher_matmul_params": matmul_params(teacher)}

    def mfu(flops: float, seconds: float) -> float | None:
        return flops / seconds / peak if peak else None

    row = step_row(["--algo", "sft", *shared, "--batch", str(sft_b), "--max_length", str(sft_t),
                    "--steps", str(a.iters), "--warmup", "2"])
    flops = flops_per_token(policy, sft_t, train=True) * sft_b * sft_t
    res["sft"] = {"batch": sft_b, "seq": sft_t, "s_per_step": row["s_per_step"],
                  "tokens_per_s": sft_b * sft_t / row["s_per_step"], "tflops": flops / row["s_per_step"] / 1e12,
                  "mfu": mfu(flops, row["s_per_step"]), "peak_mem_gib": row.get("peak_gpu_gib"), "row": row}
    print("sft", {k: v for k, v in res["sft"].items() if k != "row"}, flush=True)

    row = step_row(["--algo", "kd", *shared, "--batch", str(kd_b), "--seq", str(kd_t), "--prompt", str(kd_t // 4),
                    "--alpha", "0", "--beta", "0.5", "--steps", str(a.iters), "--warmup", "2"])
    flops = (flops_per_token(policy, kd_t, True) + flops_per_token(teacher, kd_t, False)) * kd_b * kd_t
    res["kd"] = {"batch": kd_b, "seq": kd_t, "s_per_step": row["s_per_step"],
                 "tokens_per_s": kd_b * kd_t / row["s_per_step"], "tflops": flops / row["s_per_step"] / 1e12,
                 "mfu": mfu(flops, row["s_per_step"]), "peak_mem_gib": row.get("peak_gpu_gib"), "row": row}
    print("kd", {k: v for k, v in res["kd"].items() if k != "row"}, flush=True)

    row = step_row(["--algo", "grpo", *shared, "--prompts", str(prompts), "--group", str(group),
                    "--prompt_len", str(prompt_len), "--new_tokens", str(new), "--steps", str(max(1, a.iters // 2)),
                    "--warmup", "1"])
    seq, rows = prompt_len + new, prompts * group
    train_flops = flops_per_token(policy, seq, train=True) * rows * seq
    res["grpo"] = {"prompts": prompts, "group": group, "prompt_len": prompt_len, "new_tokens": new,
                   "generation_s": row["generation_s"],
                   "generation_tokens_per_s": row["completion_tokens_per_s_generation"],
                   "train_s": row["training_s"], "train_tokens_per_s": rows * seq / row["training_s"],
                   "train_mfu": mfu(train_flops, row["training_s"]), "step_s": row["s_per_step"],
                   "peak_mem_gib": row.get("peak_gpu_gib"), "row": row}
    print("grpo", {k: v for k, v in res["grpo"].items() if k != "row"}, flush=True)
    with open(a.out, "w") as f:
        json.dump(res, f, indent=2)
    print(json.dumps(res))


if __name__ == "__main__":
    main()
