"""SFT step: non-padding tokens/s, padding waste and peak memory through the real path (``SFTDataModule`` +
``SFTModule`` + Lightning ``Trainer``), packing off and on; TRL's ``SFTTrainer`` on the anchor workloads.

Workloads (each variant in a fresh process):

- ``tiny-builtin``: the ``tiny`` preset on built-in word problems (no downloads, no shared data);
- ``tiny-gsm8k``: the ``tiny`` preset on GSM8K train rows (needs ../shared/data);
- ``tinyqwen``: TRL anchor (a): a random-init Qwen2 h256/L4 with the Qwen2.5 vocabulary (151,936 rows);
- ``smollm2``: TRL anchor (b): SmolLM2-135M-Instruct;
- ``random-0.5b``, ``random-smoke``: random weights and random ids of ``--batch`` x ``--max_length`` (a quarter of
  each row prompt), any ``--device``; no packing.

The anchor workloads copy ``../shared/bench/trl_anchor/sft_bench.py``: GSM8K train[:512] as plain
``"Question: q\\nAnswer:"`` -> ``" " + answer``, max length 512 (truncate), batch 8, bf16 autocast with fp32
master weights, AdamW lr 2e-5, completion-only loss, timed from the end of the last warm-up step (data loading
counts). No gradient checkpointing unless ``--grad_ckpt 1`` (TRL's default turns it on).
"""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

from benchlib import common, synthetic
from benchlib.case import Case, Row
from benchlib.fit import fit, setup_worker

FLAGS: dict[str, Any] = {"steps": 30, "warmup": 5, "packed_steps": 10, "packed_warmup": 2, "rows": 512, "batch": 8,
                         "max_length": 512, "chunk": 1024, "bf16": 1, "loss": "fused", "grad_ckpt": 0,
                         "packing": [0, 1], "device": "cpu"}
WORKLOADS = ("tiny-builtin", "tiny-gsm8k", "tinyqwen", "smollm2", *synthetic.WORKLOADS)
TRL_WORKLOADS = ("tinyqwen", "smollm2")
NEEDS_ASSETS = ("tinyqwen", "smollm2")
METRIC = "nonpad_tokens_per_s"
COLUMNS = ["workload", "packing", "impl", "loss", "grad_ckpt", "s_per_step", "nonpad_tokens_per_s", "padding_waste",
           "peak_rss_gib", "peak_gpu_gib", "vs_trl", "peak_rss_vs_trl"]
TINYQWEN = {"hidden_size": 256, "num_layers": 4, "num_heads": 4, "num_kv_heads": 2, "intermediate_size": 688,
            "max_position_embeddings": 32768, "tie_word_embeddings": True, "vocab_size": 151936}


def default_workloads(a: SimpleNamespace) -> list[str]:
    if a.vs_trl:
        return list(TRL_WORKLOADS)
    return ["tiny-builtin", "tiny-gsm8k"] if common.has_gsm8k() else ["tiny-builtin"]


def cases(a: SimpleNamespace) -> list[Case]:
    out = []
    for workload in a.workloads:
        for packing in ([0] if workload in synthetic.WORKLOADS else a.packing):
            steps, warmup = (a.packed_steps, a.packed_warmup) if packing else (a.steps, a.warmup)
            cfg = {**{k: getattr(a, k) for k in FLAGS}, "workload": workload, "pack": packing, "steps": steps,
                   "warmup": warmup, "threads": a.threads}
            env = {"SRLM_FUSED_CE": "0" if a.loss == "generic" else "1"}
            label = {"workload": workload, "packing": bool(packing)}
            trl = _trl(workload, packing, steps, warmup) if workload in TRL_WORKLOADS else None
            out.append(Case(label, lambda cfg=cfg, env=env: common.run_worker("sft", cfg, env), trl,
                            {"loss": a.loss, "grad_ckpt": bool(a.grad_ckpt)}))
    return out


def _trl(workload: str, packing: int, steps: int, warmup: int) -> Any:
    def run() -> Row:
        out = common.run_trl("sft_bench.py", "--model", workload, "--packing", str(packing), "--warmup", str(warmup),
                             "--steps", str(steps))
        return {"s_per_step": out["s_per_step"], "nonpad_tokens_per_s": out["nonpad_tokens_per_s"],
                "nonpad_tokens_per_step": out["nonpad_tokens_per_step"], "peak_rss_gib": out["peak_rss_gib"],
                "steps": steps, "warmup": warmup, "loss": "TRL default", "grad_ckpt": True}
    return run


def _spec(workload: str, grad_ckpt: bool) -> Any:
    from srlm_pl.models import ModelSpec, TinyConfig

    if workload in synthetic.WORKLOADS:
        spec = synthetic.model_spec(workload)
    elif workload == "tinyqwen":
        spec = ModelSpec(tokenizer=str(common.QWEN_TOK), tiny=TinyConfig(**TINYQWEN))
    elif workload == "smollm2":
        spec = ModelSpec(name_or_path=str(common.SMOLLM2))
    else:
        spec = ModelSpec()
    spec.gradient_checkpointing = grad_ckpt
    return spec


def _data(cfg: SimpleNamespace, spec: Any) -> Any:
    from srlm_pl.data.datamodules import SFTDataModule
    from srlm_pl.data.sources import BuiltinProblems, DataSource
    from srlm_pl.data.templates import PromptTemplate

    if cfg.workload in synthetic.WORKLOADS:
        batches = synthetic.lm_batches(cfg.warmup + cfg.steps, cfg.batch, cfg.max_length, cfg.max_length // 4,
                                       synthetic.token_count(cfg.workload))
        return synthetic.loader(batches)
    if cfg.workload == "tiny-builtin":
        source, template = DataSource(builtin=BuiltinProblems(level=3, num_problems=cfg.rows, seed=1)), PromptTemplate()
    else:
        source = DataSource(path=str(common.DATA / "gsm8k"), split="train", limit=cfg.rows)
        template = PromptTemplate(style="plain", answer_format="keep", strip_calculator=False)
    return SFTDataModule(train=source, template=template, tokenizer=spec, batch_size=cfg.batch,
                         max_length=cfg.max_length, length_policy="truncate", packing=bool(cfg.pack), seed=42)


def naive_loss_module() -> Any:
    """The "before" of the loss optimisation: the cross-entropy of full ``[B, T, V]`` logits."""
    import torch.nn.functional as F

    from srlm_pl.modules.sft import SFTModule

    class NaiveLossSFT(SFTModule):
        def completion_nll(self, batch: dict) -> tuple[Any, Any]:
            out = self.model(input_ids=batch["input_ids"], attention_mask=batch.get("attention_mask"),
                             position_ids=batch.get("position_ids"), use_cache=False)
            logits, labels = out.logits[:, :-1].float(), batch["labels"][:, 1:]
            loss_sum = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), labels.reshape(-1), reduction="sum")
            return loss_sum, (labels != -100).sum()

    return NaiveLossSFT


def worker(cfg: SimpleNamespace) -> Row:
    from srlm_pl.modules.sft import SFTModule
    from srlm_pl.optim import AdamW

    setup_worker(cfg)
    spec = _spec(cfg.workload, bool(cfg.grad_ckpt))
    data = _data(cfg, spec)
    module_cls = naive_loss_module() if cfg.loss == "naive" else SFTModule
    module = module_cls(policy=spec, loss_chunk_size=cfg.chunk, optimizer=lambda p: AdamW(p, lr=2e-5, fused=True))
    timer, wall = fit(module, data, steps=cfg.warmup + cfg.steps, device=cfg.device,
                      precision="bf16-mixed" if cfg.bf16 else "32-true")
    row = timer.clock.summary(cfg.warmup, span="interval")
    tokens, cells = sum(timer.tokens[cfg.warmup:]), sum(timer.cells[cfg.warmup:])
    wall_timed = row["s_per_step"] * row["steps"]
    row.update({"nonpad_tokens_per_s": tokens / wall_timed, "nonpad_tokens_per_step": tokens / row["steps"],
                "padding_waste": 1 - tokens / cells, "peak_rss_gib": common.peak_rss_gib(),
                "params_M": sum(p.numel() for p in module.model.parameters()) / 1e6, "chunk": cfg.chunk,
                "batch": cfg.batch, "max_length": cfg.max_length, "fit_wall_s": wall, "device": cfg.device})
    if cfg.device.startswith("cuda"):
        row["peak_gpu_gib"] = common.peak_memory_gib(cfg.device)
    return row
