"""GRPO: seconds per step split into generation / scoring / training, completion tokens/s, and (``--trl``) TRL's
``GRPOTrainer`` on the same workload in the same session; ``--learn`` runs a learning experiment with held-out
accuracy before and after.

Speed workloads (each in a fresh subprocess, through the real path: ``PromptDataModule`` + ``GRPOModule`` +
Lightning ``Trainer(precision="bf16-mixed")``):

- ``tiny``: the ``tiny`` preset on built-in problems (no downloads);
- ``smollm2``: the TRL anchor's GRPO workload (``../shared/bench/trl_anchor/grpo_run.py``): SmolLM2-135M-
  Instruct, GSM8K train prompts in its chat template with the anchor's instruction, 4 prompts x 4
  completions, 128 new tokens, temperature 1.0, top-k/top-p off, beta 0, DAPO loss, lr 1e-6, 10 steps
  (the first excluded from the means), math-answer reward. To do the same work as TRL, zero-variance groups
  are kept and all-zero-variance steps are trained (``drop_zero_variance: false``,
  ``skip_zero_gradient_steps: false``); srlm_pl's defaults would skip those steps entirely.

    python tools/bench_grpo.py                           # tiny (+ smollm2 when its assets exist)
    python tools/bench_grpo.py --workloads smollm2 --trl  # head-to-head with TRL
    python tools/bench_grpo.py --learn --minutes 20      # SmolLM2 learning run on built-in problems
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench_common as bc  # noqa: E402

INSTRUCTION = ("Solve the following math problem. Reason step by step, and end your response with "
               "'The answer is N' where N is the final number.")


def _metrics(log_dir: Path) -> list[dict[str, float]]:
    rows = []
    for path in log_dir.rglob("metrics.csv"):
        with path.open() as f:
            rows += [{k: float(v) for k, v in r.items() if v not in ("", None)} for r in csv.DictReader(f)]
    return rows


def _mean(xs: list[float]) -> float | None:
    return sum(xs) / len(xs) if xs else None


def worker(a: argparse.Namespace) -> None:
    import lightning as L
    import torch
    from lightning.pytorch.loggers import CSVLogger

    from srlm_pl.data.datamodules import PromptDataModule
    from srlm_pl.data.sources import BuiltinProblems, DataSource
    from srlm_pl.data.templates import PromptTemplate
    from srlm_pl.models.loading import ModelSpec
    from srlm_pl.modules.grpo import GRPOModule
    from srlm_pl.optim import AdamW, WarmupConstant
    from srlm_pl.verifiers.rewards import AccuracyReward

    torch.manual_seed(0)
    if a.workload == "tiny":
        spec, source = ModelSpec(), DataSource(builtin=BuiltinProblems(level=1, num_problems=2000, seed=5))
        template = PromptTemplate()
    else:
        spec = ModelSpec(name_or_path=str(bc.SMOLLM2))
        source = DataSource(path=str(bc.DATA / "gsm8k"), split="train")
        template = PromptTemplate(instruction=INSTRUCTION, user_template="{instruction}\n\nProblem: {question}")
    dm = PromptDataModule(train=source, template=template, tokenizer=spec, batch_size=a.prompts, max_length=512,
                          seed=42)
    module = GRPOModule(policy=spec, rewards=[AccuracyReward()], num_generations=a.group,
                        max_new_tokens=a.new_tokens, temperature=1.0, beta=0.0, loss_aggregation="dapo",
                        drop_zero_variance=False, skip_zero_gradient_steps=False, loss_chunk_size=a.chunk,
                        share_prompt_forward=not a.no_share_prompt,
                        optimizer=lambda p: AdamW(p, lr=1e-6, fused=True),
                        scheduler=lambda o, n: WarmupConstant(o, n))
    with tempfile.TemporaryDirectory() as tmp:
        trainer = L.Trainer(accelerator="cpu", devices=1, precision="bf16-mixed", max_steps=a.steps,
                            logger=CSVLogger(tmp, name="bench"), log_every_n_steps=1, enable_checkpointing=False,
                            enable_progress_bar=False, enable_model_summary=False, num_sanity_val_steps=0)
        t0 = time.perf_counter()
        trainer.fit(module, datamodule=dm)
        wall = time.perf_counter() - t0
        rows = [r for r in _metrics(Path(tmp)) if "time/step_s" in r]
    steady = rows[1:] if len(rows) > 1 else rows  # the first step includes warm-up
    gen = [r["time/generation_s"] for r in steady]
    lens = [r["completion/len_mean"] for r in rows]
    tokens = [r["completion/len_mean"] * a.prompts * a.group for r in steady]
    print(json.dumps({
        "impl": "srlm_pl", "workload": a.workload, "steps_done": len(rows),
        "s_per_step": _mean([r["time/step_s"] for r in steady]), "generation_s": _mean(gen),
        "scoring_s": _mean([r["time/scoring_s"] for r in steady]),
        "training_s": _mean([r["time/training_s"] for r in steady]),
        "completion_tokens_per_s_generation": sum(tokens) / sum(gen) if gen else None,
        "completion_len_mean": _mean(lens), "completion_len_max": max(r["completion/len_max"] for r in rows),
        "truncated_frac": _mean([r["completion/truncated_frac"] for r in rows]),
        "reward_mean": _mean([r["reward/mean"] for r in rows]), "peak_rss_gib": bc.peak_rss_gib(),
        "fit_wall_s": wall}))


def measure(workload: str, impl: str, a: argparse.Namespace) -> dict[str, Any]:
    if impl == "trl":
        out = bc.run_trl("grpo_run.py", "--dataset", "gsm8k", "--max_steps", str(a.steps))
        return {"impl": "TRL", "workload": workload, "steps_done": out["steps_done"],
                "s_per_step": out["s_per_step_excl_first"], "generation_s": out["generate_s_per_step_excl_first"],
                "scoring_s": out["reward_s_per_step_excl_first"], "training_s": out["train_s_per_step_excl_first"],
                "completion_tokens_per_s_generation": out["completion_tokens_per_s_generate"],
                "completion_len_mean": out["completion_tokens_per_step"] / (a.prompts * a.group),
                "truncated_frac": out["clipped_ratio_mean"], "reward_mean": out["reward_mean"],
                "peak_rss_gib": out["peak_rss_gib"]}
    cmd = [sys.executable, __file__, "--worker", "--workload", workload, "--steps", str(a.steps),
           "--prompts", str(a.prompts), "--group", str(a.group), "--new_tokens", str(a.new_tokens),
           "--chunk", str(a.chunk), *(["--no_share_prompt"] if a.no_share_prompt else [])]
    env = {"SRLM_LEAN_DECODE": "0" if a.no_lean else "1", "SRLM_FUSED_CE": "0" if a.no_fused else "1"}
    row = bc.run_json(cmd, env=env)
    row["variant"] = ",".join(k for k in ("no_lean", "no_fused", "no_share_prompt") if getattr(a, k)) or "default"
    return row


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--workloads", nargs="+", default=None, help="tiny smollm2")
    ap.add_argument("--trl", action="store_true", help="also run TRL's GRPOTrainer (anchor script)")
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--prompts", type=int, default=4)
    ap.add_argument("--group", type=int, default=4)
    ap.add_argument("--new_tokens", type=int, default=128)
    ap.add_argument("--chunk", type=int, default=1024)
    ap.add_argument("--no_share_prompt", action="store_true",
                    help="training forward over prompt + completion per row (the before of share_prompt_forward)")
    ap.add_argument("--no_lean", action="store_true",
                    help="decode with the HF forward and cache (SRLM_LEAN_DECODE=0; the before of the lean decoder)")
    ap.add_argument("--no_fused", action="store_true",
                    help="generic chunked log-probs (SRLM_FUSED_CE=0; the before of the fused LM-head log-probs)")
    ap.add_argument("--learn", action="store_true", help="run the SmolLM2 learning experiment instead")
    ap.add_argument("--minutes", type=float, default=20.0, help="learning run time budget")
    ap.add_argument("--lr", type=float, default=2e-5, help="learning run learning rate")
    ap.add_argument("--json", help="also write the rows here")
    ap.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--workload", help=argparse.SUPPRESS)
    return ap


def default_args() -> argparse.Namespace:
    return build_parser().parse_args([])


def main() -> None:
    a = build_parser().parse_args()
    if a.worker:
        worker(a)
        return
    if a.learn:
        from bench_grpo_learn import learn

        learn(a)
        return
    workloads = a.workloads or (["tiny", "smollm2"] if bc.ensure_assets() and (bc.DATA / "gsm8k").is_dir()
                                else ["tiny"])
    rows = []
    for i, workload in enumerate(workloads):
        impls = ["trl", "srlm_pl"] if a.trl and workload == "smollm2" else ["srlm_pl"]
        if i % 2:
            impls.reverse()
        got = {impl: measure(workload, impl, a) for impl in impls}
        for impl, r in got.items():
            if impl == "srlm_pl" and "trl" in got:
                r["s_per_step_vs_trl"] = r["s_per_step"] / got["trl"]["s_per_step"]
            rows.append(r)
            print(json.dumps(r), flush=True)
    print(bc.table(rows, ["workload", "impl", "variant", "s_per_step", "generation_s", "scoring_s", "training_s",
                          "completion_tokens_per_s_generation", "completion_len_mean", "truncated_frac",
                          "peak_rss_gib", "s_per_step_vs_trl"]))
    if a.json:
        Path(a.json).write_text(json.dumps(rows, indent=2))
    print(json.dumps({"bench": "grpo", "rows": rows}))


if __name__ == "__main__":
    main()
