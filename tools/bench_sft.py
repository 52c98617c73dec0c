"""SFT throughput: non-padding tokens/s and padding waste, packing off and on, and (``--trl``) TRL's
``SFTTrainer`` on the same workload in the same session.

Workloads (each variant runs in a fresh subprocess: its own peak RSS, no warm caches shared):

- ``tiny-builtin``: the ``tiny`` preset on built-in word problems (no downloads, no shared data);
- ``tiny-gsm8k``: the ``tiny`` preset on GSM8K train rows 0-511 (needs ../shared/data);
- ``tinyqwen``: TRL anchor (a): random-init Qwen2 h256/L4 with the Qwen2.5 vocabulary (151,936 rows);
- ``smollm2``: TRL anchor (b): SmolLM2-135M-Instruct.

The anchor workloads copy ``../shared/bench/trl_anchor/sft_bench.py``: GSM8K train[:512] as plain
``"Question: q\\nAnswer:"`` -> ``" " + answer`` (calculator annotations kept), max length 512 (truncate),
batch 8, bf16 autocast with fp32 master weights, AdamW lr 2e-5, completion-only loss; timing excludes
``--warmup`` steps. srlm_pl runs through its real path: ``SFTDataModule`` + ``SFTModule`` + Lightning
``Trainer(precision="bf16-mixed")``; no gradient checkpointing (TRL's default turns it on).

    python tools/bench_sft.py                                  # tiny preset rows (+ GSM8K rows if present)
    python tools/bench_sft.py --workloads tinyqwen smollm2 --trl   # head-to-head with TRL (slow: TRL ~12-40 s/step)
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

TINYQWEN = {"hidden_size": 256, "num_layers": 4, "num_heads": 4, "num_kv_heads": 2, "intermediate_size": 688,
            "max_position_embeddings": 32768, "tie_word_embeddings": True, "vocab_size": 151936}


def _spec(workload: str) -> Any:
    from srlm_pl.models.loading import ModelSpec, TinyConfig

    if workload.startswith("tiny-"):
        return ModelSpec()
    if workload == "tinyqwen":
        return ModelSpec(tokenizer=str(bc.QWEN_TOK), tiny=TinyConfig(**TINYQWEN))
    return ModelSpec(name_or_path=str(bc.SMOLLM2))


def _source(workload: str, rows: int) -> Any:
    from srlm_pl.data.sources import BuiltinProblems, DataSource

    if workload == "tiny-builtin":
        return DataSource(builtin=BuiltinProblems(level=3, num_problems=rows, seed=1))
    return DataSource(path=str(bc.DATA / "gsm8k"), split="train", limit=rows)


def step_timer() -> Any:
    """A Lightning callback recording wall time, non-padding and total tokens of every training step."""
    from lightning.pytorch.callbacks import Callback

    class StepTimer(Callback):
        def __init__(self) -> None:
            self.times: list[float] = []
            self.tokens: list[int] = []
            self.cells: list[int] = []

        def on_train_batch_end(self, trainer: Any, module: Any, outputs: Any, batch: dict, batch_idx: int) -> None:
            self.times.append(time.perf_counter())
            self.tokens.append(int(batch["num_tokens"]))
            self.cells.append(int(batch["input_ids"].numel()))

    return StepTimer()


def NaiveLossSFT() -> Any:  # noqa: N802 (a class factory: lightning is imported lazily)
    """The "before" of the loss optimisation: Hugging Face's own loss from full ``[B, T, V]`` logits."""
    from srlm_pl.modules.sft import SFTModule

    class Naive(SFTModule):
        def completion_nll(self, batch: dict) -> tuple[Any, Any]:
            out = self.model(input_ids=batch["input_ids"], attention_mask=batch.get("attention_mask"),
                             position_ids=batch.get("position_ids"), use_cache=False)
            logits = out.logits[:, :-1].float()
            labels = batch["labels"][:, 1:]
            import torch.nn.functional as F

            loss_sum = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), labels.reshape(-1), reduction="sum")
            return loss_sum, (labels != -100).sum()

    return Naive


def worker(a: argparse.Namespace) -> None:
    import lightning as L
    import torch

    from srlm_pl.data.datamodules import SFTDataModule
    from srlm_pl.data.templates import PromptTemplate
    from srlm_pl.modules.sft import SFTModule
    from srlm_pl.optim import AdamW

    torch.manual_seed(0)
    plain = PromptTemplate(style="plain", answer_format="keep", strip_calculator=False)
    template = PromptTemplate() if a.workload == "tiny-builtin" else plain
    spec = _spec(a.workload)
    spec.gradient_checkpointing = bool(a.grad_ckpt)
    dm = SFTDataModule(train=_source(a.workload, a.rows), template=template, tokenizer=spec, batch_size=a.batch,
                       max_length=a.max_length, length_policy="truncate", packing=bool(a.pack), seed=42)
    module_cls = NaiveLossSFT() if a.naive else SFTModule
    module = module_cls(policy=spec, loss_chunk_size=a.chunk, optimizer=lambda p: AdamW(p, lr=2e-5, fused=True))
    timer = step_timer()
    trainer = L.Trainer(accelerator="cpu", devices=1, precision="bf16-mixed" if a.bf16 else "32-true",
                        max_steps=a.warmup + a.steps, logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False, callbacks=[timer],
                        num_sanity_val_steps=0)
    t0 = time.perf_counter()
    trainer.fit(module, datamodule=dm)
    w, s = a.warmup, a.steps
    wall = timer.times[w + s - 1] - timer.times[w - 1]
    tokens, cells = sum(timer.tokens[w: w + s]), sum(timer.cells[w: w + s])
    print(json.dumps({
        "impl": "srlm_pl", "workload": a.workload, "packing": bool(a.pack), "s_per_step": wall / s,
        "nonpad_tokens_per_s": tokens / wall, "nonpad_tokens_per_step": tokens / s,
        "padding_waste": 1 - tokens / cells, "peak_rss_gib": bc.peak_rss_gib(), "steps": s, "warmup": w,
        "params_M": sum(p.numel() for p in module.model.parameters()) / 1e6, "chunk": a.chunk,
        "fit_wall_s": time.perf_counter() - t0}))


def measure(workload: str, packing: int, a: argparse.Namespace, impl: str) -> dict[str, Any]:
    steps, warmup = (a.steps, a.warmup) if not packing else (a.packed_steps, a.packed_warmup)
    if impl == "trl":
        model = "tinyqwen" if workload == "tinyqwen" else "smollm2"
        out = bc.run_trl("sft_bench.py", "--model", model, "--packing", str(packing), "--warmup", str(warmup),
                         "--steps", str(steps))
        return {"impl": "TRL", "workload": workload, "packing": bool(packing), "s_per_step": out["s_per_step"],
                "nonpad_tokens_per_s": out["nonpad_tokens_per_s"], "peak_rss_gib": out["peak_rss_gib"],
                "nonpad_tokens_per_step": out["nonpad_tokens_per_step"], "steps": steps, "warmup": warmup}
    cmd = [sys.executable, __file__, "--worker", "--workload", workload, "--pack", str(packing),
           "--steps", str(steps), "--warmup", str(warmup), "--rows", str(a.rows), "--batch", str(a.batch),
           "--max_length", str(a.max_length), "--chunk", str(a.chunk), "--bf16", str(a.bf16),
           "--grad_ckpt", str(a.grad_ckpt)] + (["--naive"] if a.loss == "naive" else [])
    out = bc.run_json(cmd, env={"SRLM_FUSED_CE": "0" if a.loss == "generic" else "1"})
    out["loss"], out["grad_ckpt"] = a.loss, bool(a.grad_ckpt)
    return out


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--workloads", nargs="+", default=None,
                    help="tiny-builtin tiny-gsm8k tinyqwen smollm2 (default: the tiny ones available)")
    ap.add_argument("--trl", action="store_true", help="also run TRL's SFTTrainer (anchor script), alternating")
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--warmup", type=int, default=5)
    ap.add_argument("--packed_steps", type=int, default=10, help="timed steps with packing (TRL's anchor: 10)")
    ap.add_argument("--packed_warmup", type=int, default=2)
    ap.add_argument("--rows", type=int, default=512)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--max_length", type=int, default=512)
    ap.add_argument("--chunk", type=int, default=1024, help="loss_chunk_size (LM-head positions per chunk)")
    ap.add_argument("--bf16", type=int, default=1)
    ap.add_argument("--loss", choices=["fused", "generic", "naive"], default="fused",
                    help="fused LM-head cross-entropy (default), the generic checkpointed chunks, or the naive "
                         "full-logits loss (the 'before' of the optimisation)")
    ap.add_argument("--grad_ckpt", type=int, default=0, help="gradient checkpointing (TRL's default is on)")
    ap.add_argument("--packing", nargs="+", type=int, default=[0, 1])
    ap.add_argument("--json", help="also write the rows here")
    ap.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--workload", help=argparse.SUPPRESS)
    ap.add_argument("--pack", type=int, default=0, help=argparse.SUPPRESS)
    ap.add_argument("--naive", action="store_true", help=argparse.SUPPRESS)
    return ap


def default_args() -> argparse.Namespace:
    return build_parser().parse_args([])


def main() -> None:
    a = build_parser().parse_args()
    if a.worker:
        worker(a)
        return
    has_gsm8k = (bc.DATA / "gsm8k" / "train.jsonl").is_file()
    workloads = a.workloads or (["tiny-builtin", "tiny-gsm8k"] if has_gsm8k else ["tiny-builtin"])
    if any(w in ("tinyqwen", "smollm2") for w in workloads) and not bc.ensure_assets():
        sys.exit("tinyqwen/smollm2 need the offline assets (see tools/bench_common.py)")
    rows = []
    for workload in workloads:
        for packing in a.packing:
            impls = ["trl", "srlm_pl"] if a.trl and workload in ("tinyqwen", "smollm2") else ["srlm_pl"]
            if len(rows) % 2:  # alternate which implementation goes first
                impls.reverse()
            got = {impl: measure(workload, packing, a, impl) for impl in impls}
            for impl, r in got.items():
                if impl == "srlm_pl" and "trl" in got:
                    r["vs_trl"] = r["nonpad_tokens_per_s"] / got["trl"]["nonpad_tokens_per_s"]
                rows.append(r)
                print(json.dumps(r), flush=True)
    print(bc.table(rows, ["workload", "packing", "impl", "loss", "grad_ckpt", "s_per_step", "nonpad_tokens_per_s",
                          "padding_waste", "peak_rss_gib", "vs_trl"]))
    if a.json:
        Path(a.json).write_text(json.dumps(rows, indent=2))
    print(json.dumps({"bench": "sft", "rows": rows}))


if __name__ == "__main__":
    main()
