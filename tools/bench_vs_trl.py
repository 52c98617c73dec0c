"""srlm_pl vs Hugging Face TRL on the workloads of ``../shared/bench/trl_anchor`` (same model, rows, prompt
format, batch, lengths, steps, bf16 autocast), alternating the two in one session; one table with both
figures and the ratio.

- SFT (``tools/bench_sft.py``): GSM8K train[:512], max length 512, batch 8, non-padding tokens/s; tiny Qwen2
  h256/L4 with the Qwen2.5 vocabulary and SmolLM2-135M-Instruct; packing off and on. Target: >= 1.3x TRL.
- Distillation (this file): SmolLM2-135M-Instruct teacher, student = its first 2 layers, batch 4, 10 steps;
  on-policy (TRL ``DistillationTrainer``: beta 1, 128 new tokens, lr 1e-6) and GKD-style mixed (TRL
  ``GKDTrainer``: lambda 0.5, beta 0.5, sampling temperature 0.9, max length 256, lr 2e-5). s/step and peak
  RSS. Targets: <= 0.8x and <= 0.7x TRL.
- GRPO (``tools/bench_grpo.py``): SmolLM2-135M-Instruct, 4 prompts x 4 completions, 128 new tokens, beta 0,
  10 steps. s/step split, completion length. Target: <= 0.6x TRL.

    python tools/bench_vs_trl.py --only sft distill grpo      # needs `pip install -e .[bench]` (trl, math-verify)
    python tools/bench_vs_trl.py --only distill --no-trl      # srlm_pl only
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench_common as bc  # noqa: E402

INSTRUCTION = ("Solve the following math problem. Reason step by step, and end your response with "
               "'The answer is N' where N is the final number.")


def distill_worker(a: argparse.Namespace) -> None:
    import lightning as L
    import torch
    from lightning.pytorch.callbacks import Callback

    from srlm_pl.data.datamodules import SFTDataModule
    from srlm_pl.data.sources import DataSource
    from srlm_pl.data.templates import PromptTemplate
    from srlm_pl.models.loading import ModelSpec
    from srlm_pl.modules.distill import DistillModule
    from srlm_pl.optim import AdamW, WarmupConstant

    class Timer(Callback):
        def __init__(self) -> None:
            self.begin: float | None = None
            self.steps: list[float] = []

        def on_train_batch_start(self, *args: Any) -> None:
            self.begin = time.perf_counter()

        def on_train_batch_end(self, *args: Any) -> None:
            self.steps.append(time.perf_counter() - self.begin)

    torch.manual_seed(0)
    student = ModelSpec(name_or_path=str(bc.SMOLLM2), num_layers=2)
    teacher = ModelSpec(name_or_path=str(bc.SMOLLM2), dtype=a.teacher_dtype)
    on_policy = a.mode == "distill"
    template = (PromptTemplate(instruction=INSTRUCTION, user_template="{instruction}\n\nProblem: {question}")
                if on_policy else PromptTemplate(answer_format="keep", strip_calculator=False))
    dm = SFTDataModule(train=DataSource(path=str(bc.DATA / "gsm8k"), split="train", limit=512), template=template,
                       tokenizer=student, batch_size=4, max_length=256, length_policy="drop", seed=42)
    lr = 1e-6 if on_policy else 2e-5
    module = DistillModule(policy=student, teacher=teacher, lmbda=1.0 if on_policy else 0.5,
                           beta=1.0 if on_policy else 0.5, temperature=1.0, max_new_tokens=128,
                           sampling_temperature=1.0 if on_policy else 0.9, loss_chunk_size=a.chunk, seed=42,
                           optimizer=lambda p: AdamW(p, lr=lr, fused=True),
                           scheduler=lambda o, n: WarmupConstant(o, n))
    timer = Timer()
    trainer = L.Trainer(accelerator="cpu", devices=1, precision="bf16-mixed", max_steps=a.steps, logger=False,
                        enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                        callbacks=[timer], num_sanity_val_steps=0)
    trainer.fit(module, datamodule=dm)
    steady = timer.steps[1:]
    print(json.dumps({"impl": "srlm_pl", "bench": f"distill-{a.mode}", "s_per_step": sum(steady) / len(steady),
                      "s_per_step_all": sum(timer.steps) / len(timer.steps), "peak_rss_gib": bc.peak_rss_gib(),
                      "teacher_dtype": a.teacher_dtype, "chunk": a.chunk,
                      "on_policy_steps": int(module._sources.get("student", 0))}))


def distill(mode: str, impl: str, a: argparse.Namespace) -> dict[str, Any]:
    if impl == "trl":
        out = bc.run_trl("distill_bench.py", "--trainer", mode, "--steps", str(a.steps), "--batch", "4",
                         "--max_length", "256")
        return {"impl": "TRL", "bench": f"distill-{mode}", "s_per_step": out["s_per_step_excl_first"],
                "s_per_step_all": out["s_per_step_all"], "peak_rss_gib": out["peak_rss_gib"]}
    cmd = [sys.executable, __file__, "--distill_worker", "--mode", mode, "--steps", str(a.steps),
           "--teacher_dtype", a.teacher_dtype, "--chunk", str(a.chunk)]
    return bc.run_json(cmd)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--only", nargs="+", default=["sft", "distill", "grpo"])
    ap.add_argument("--no-trl", dest="trl", action="store_false")
    ap.add_argument("--steps", type=int, default=10, help="distillation steps")
    ap.add_argument("--teacher_dtype", default="bfloat16",
                    help="frozen teacher weights: bfloat16 (its matmuls are bf16 under autocast anyway) or float32")
    ap.add_argument("--chunk", type=int, default=64,
                    help="loss_chunk_size (64 measured faster and leaner than 256 on this CPU)")
    ap.add_argument("--out", default="bench_vs_trl.json")
    ap.add_argument("--distill_worker", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--mode", help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.distill_worker:
        distill_worker(a)
        return
    if not bc.ensure_assets():
        sys.exit("needs SmolLM2-135M-Instruct and the Qwen2.5 tokenizer (see tools/bench_common.py)")
    impls = ["trl", "srlm_pl"] if a.trl else ["srlm_pl"]
    rows: list[dict[str, Any]] = []

    def record(r: dict[str, Any]) -> None:
        rows.append(r)
        print(json.dumps(r), flush=True)
        Path(a.out).write_text(json.dumps(rows, indent=2))

    if "sft" in a.only:
        import bench_sft

        sft_args = bench_sft.default_args()
        for i, (workload, packing) in enumerate([(w, p) for w in ("tinyqwen", "smollm2") for p in (0, 1)]):
            order = impls if i % 2 == 0 else impls[::-1]
            got = {impl: bench_sft.measure(workload, packing, sft_args, impl) for impl in order}
            for impl in impls:
                r = {**got[impl], "bench": f"sft-{workload}-pack{packing}", "metric": "nonpad_tokens_per_s",
                     "value": got[impl]["nonpad_tokens_per_s"]}
                if impl == "srlm_pl" and "trl" in got:
                    r["ratio"] = r["value"] / got["trl"]["nonpad_tokens_per_s"]
                record(r)
    if "distill" in a.only:
        for i, mode in enumerate(("distill", "gkd")):
            order = impls if i % 2 == 0 else impls[::-1]
            got = {impl: distill(mode, impl, a) for impl in order}
            for impl in impls:
                r = {**got[impl], "metric": "s_per_step", "value": got[impl]["s_per_step"]}
                if impl == "srlm_pl" and "trl" in got:
                    r["ratio"] = r["value"] / got["trl"]["s_per_step"]
                    r["rss_ratio"] = r["peak_rss_gib"] / got["trl"]["peak_rss_gib"]
                record(r)
    if "grpo" in a.only:
        import bench_grpo

        grpo_args = bench_grpo.default_args()
        got = {impl: bench_grpo.measure("smollm2", impl, grpo_args) for impl in impls[::-1]}
        for impl in impls:
            r = {**got[impl], "bench": "grpo-smollm2", "metric": "s_per_step", "value": got[impl]["s_per_step"]}
            if impl == "srlm_pl" and "trl" in got:
                r["ratio"] = r["value"] / got["trl"]["s_per_step"]
            record(r)
    print(bc.table(rows, ["bench", "impl", "metric", "value", "ratio", "peak_rss_gib", "rss_ratio"]))
    print(json.dumps({"bench": "vs_trl", "rows": rows}))


if __name__ == "__main__":
    main()
