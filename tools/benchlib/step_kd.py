"""Distillation step: the KD loss against the naive full-vocabulary loss (workloads ``loss`` and ``pair``, see
``step_kd_loss``), the TRL anchor's distillation workloads through the real path (``on-policy``, ``mixed``) and
random-weight models on any device (``random-0.5b``, ``random-smoke``).

- ``on-policy`` / ``mixed``: ``DistillModule`` + Lightning ``Trainer(precision="bf16-mixed")``, SmolLM2-135M-Instruct
  teacher (``--teacher_dtype``), student = its first 2 layers, GSM8K train rows, batch 4, max length 256, loss chunk
  ``--chunk``: on-policy as TRL's ``DistillationTrainer`` (beta 1, 128 new tokens, lr 1e-6) and mixed as its
  ``GKDTrainer`` (lambda 0.5, beta 0.5, sampling temperature 0.9, lr 2e-5). A step is timed from its start to its end.
- ``offline-topk``: ``DistillModule`` reading the teacher's top-``--k`` log-probs from a store (``teacher_logits:``)
  against the same module with the teacher online, SmolLM2 pair, off-policy; ratios and the store's size per 1M
  tokens (``step_kd_offline``).
- ``random-*``: a Qwen2.5-0.5B-shaped student and a Qwen2.5-1.5B-shaped frozen teacher, random ids of ``--batch`` x
  ``--seq`` (``--prompt`` of them not in the loss), dataset completions only, ``--beta``, ``--alpha``, ``--chunk``.

Memory of ``loss``/``pair``: each variant runs in a fresh process; on CPU the peak resident set size, on CUDA
``max_memory_allocated``; ``peak_extra_gib`` = peak - the memory after the inputs and models are built. A naive
variant is skipped, not run, when a ``B = 1`` run extrapolates past ``--max-gib`` (default 60% of the memory
available at start), so the benchmark never pushes a shared machine into swap or the OOM killer.
"""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import Any

from benchlib import common, step_kd_offline, synthetic
from benchlib.case import Case, Row
from benchlib.fit import fit, setup_worker
from benchlib.step_kd_loss import PAIR_VARIANTS, VARIANTS, loss_step, pair_step
from benchlib.timing import time_loop

FLAGS: dict[str, Any] = {"steps": None, "warmup": 1, "batch": 4, "seq": 512, "prompt": 128, "vocab": 151936,
                         "vocab_tokens": 151665, "student_hidden": 896, "teacher_hidden": 1536,
                         "chunks": "1024,256", "variants": ",".join(VARIANTS), "chunk": 64, "beta": 0.5, "alpha": 0.5,
                         "precision": "bf16-mixed", "device": "cpu", "pair_dir": str(common.SMOLLM2),
                         "skip_pair": False, "skip_loss": False, "max_gib": None, "teacher_dtype": "bfloat16", "k": 64}
WORKLOADS = ("loss", "pair", "on-policy", "mixed", step_kd_offline.WORKLOAD, *synthetic.WORKLOADS)
TRL_WORKLOADS = ("on-policy", "mixed")
NEEDS_ASSETS = ("on-policy", "mixed", step_kd_offline.WORKLOAD)
METRIC = "s_per_step"
COLUMNS = ["workload", "variant", "chunk", "batch", "impl", "s_per_step", "peak_rss_gib", "peak_gib",
           "peak_extra_gib", "peak_gpu_gib", "vs_trl", "peak_rss_vs_trl", *step_kd_offline.COLUMNS, "skipped", "error"]
# default timed steps (random-*: 5)
STEPS = {"loss": 2, "pair": 2, "on-policy": 9, "mixed": 9, step_kd_offline.WORKLOAD: 6}
ANCHOR_BATCH = 4  # on-policy / mixed: the anchor's batch 4 x max length 256, whatever --batch and --seq say
INSTRUCTION = ("Solve the following math problem. Reason step by step, and end your response with "
               "'The answer is N' where N is the final number.")


def default_workloads(a: SimpleNamespace) -> list[str]:
    if a.vs_trl:
        return list(TRL_WORKLOADS)
    out = [] if a.skip_loss else ["loss"]
    if not a.skip_pair and (Path(a.pair_dir) / "config.json").is_file():
        out.append("pair")
    elif not a.skip_pair:
        print(f"workload pair skipped: {a.pair_dir} holds no model (build it with ../shared/bench/assets.py)")
    return out


def cases(a: SimpleNamespace) -> list[Case]:
    if a.max_gib is None:
        import psutil

        a.max_gib = 0.6 * psutil.virtual_memory().available / common.GIB
    chunks = [int(c) for c in str(a.chunks).replace(",", " ").split()]
    out = []
    for workload in a.workloads:
        cfg = {**{k: getattr(a, k) for k in FLAGS}, "workload": workload, "threads": a.threads,
               "steps": a.steps or STEPS.get(workload, 5)}
        if workload in ("loss", "pair"):
            variants = a.variants.split(",") if workload == "loss" else list(PAIR_VARIANTS)
            for variant in variants:
                for chunk in chunks if variant == "chunked" else chunks[:1]:
                    c = {**cfg, "variant": variant, "chunk": chunk}
                    out.append(Case({"workload": workload, "variant": variant,
                                     "chunk": chunk if variant == "chunked" else None, "batch": a.batch},
                                    lambda c=c: _probed(c)))
            continue
        if workload == step_kd_offline.WORKLOAD:
            out.append(step_kd_offline.case(cfg))
            continue
        trl = _trl(workload, cfg["warmup"] + cfg["steps"]) if workload in TRL_WORKLOADS else None
        out.append(Case({"workload": workload, "chunk": a.chunk}, lambda c=cfg: common.run_worker("kd", c), trl))
    return out


def _probed(cfg: dict[str, Any]) -> Row:
    """The full-size run, unless a B = 1 run of a naive variant extrapolates past the memory budget."""
    if cfg["batch"] > 1 and cfg["variant"].startswith("naive"):
        probe = common.run_worker("kd", {**cfg, "batch": 1, "steps": 1, "warmup": 0})
        projected = probe["rss_before_gib"] + probe["peak_extra_gib"] * cfg["batch"]
        if projected > cfg["max_gib"]:
            return {"skipped": f"projected peak {projected:.1f} GiB (B=1 extra {probe['peak_extra_gib']:.2f} GiB x "
                               f"{cfg['batch']}) > --max-gib {cfg['max_gib']:.1f}", "probe_b1": probe}
    return common.run_worker("kd", cfg)


def _trl(workload: str, steps: int) -> Any:
    def run() -> Row:
        trainer = "distill" if workload == "on-policy" else "gkd"
        out = common.run_trl("distill_bench.py", "--trainer", trainer, "--steps", str(steps),
                             "--batch", str(ANCHOR_BATCH), "--max_length", "256")
        return {"s_per_step": out["s_per_step_excl_first"], "s_per_step_all": out["s_per_step_all"],
                "peak_rss_gib": out["peak_rss_gib"]}
    return run


def worker(cfg: SimpleNamespace) -> Row:
    setup_worker(cfg)
    if cfg.workload == step_kd_offline.WORKLOAD:
        return step_kd_offline.worker(cfg)
    if cfg.workload in ("loss", "pair"):
        return _loop_worker(cfg)
    return _fit_worker(cfg)


def _loop_worker(cfg: SimpleNamespace) -> Row:
    import torch

    step = (pair_step if cfg.workload == "pair" else loss_step)(cfg)
    cuda = cfg.device.startswith("cuda")
    if cuda:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    before = torch.cuda.memory_allocated() / common.GIB if cuda else common.rss_gib()
    clock, losses = time_loop(step, cfg.warmup, cfg.steps, cfg.device)
    peak = common.peak_memory_gib(cfg.device)
    return {**clock.summary(cfg.warmup), "batch": cfg.batch, "peak_gib": peak, "rss_before_gib": before,
            "peak_extra_gib": peak - before, "loss": losses[-1],
            "memory": "cuda max_memory_allocated" if cuda else "ru_maxrss of a fresh process"}


def _fit_worker(cfg: SimpleNamespace) -> Row:
    from srlm_pl.models import ModelSpec
    from srlm_pl.modules.distill import DistillModule
    from srlm_pl.optim import AdamW, WarmupConstant

    if cfg.workload in synthetic.WORKLOADS:
        student, teacher = synthetic.model_spec(cfg.workload), synthetic.model_spec(cfg.workload, "teacher")
        batches = synthetic.lm_batches(cfg.warmup + cfg.steps, cfg.batch, cfg.seq, cfg.prompt,
                                       synthetic.token_count(cfg.workload))
        data, lr, sampling_temperature = synthetic.loader(batches), 1e-5, 1.0
        algo = {"lmbda": 0.0, "beta": cfg.beta, "alpha": cfg.alpha}
    else:
        on_policy = cfg.workload == "on-policy"
        student = ModelSpec(name_or_path=str(common.SMOLLM2), num_layers=2)
        teacher = ModelSpec(name_or_path=str(common.SMOLLM2), dtype=cfg.teacher_dtype)
        data = _anchor_data(student, on_policy)
        algo = {"lmbda": 1.0, "beta": 1.0} if on_policy else {"lmbda": 0.5, "beta": 0.5}
        lr, sampling_temperature = (1e-6, 1.0) if on_policy else (2e-5, 0.9)
    module = DistillModule(policy=student, teacher=teacher, **algo, temperature=1.0, max_new_tokens=128,
                           sampling_temperature=sampling_temperature, loss_chunk_size=cfg.chunk, seed=42,
                           optimizer=lambda p: AdamW(p, lr=lr, fused=True),
                           scheduler=lambda o, n: WarmupConstant(o, n))
    timer, wall = fit(module, data, steps=cfg.warmup + cfg.steps, device=cfg.device)
    row = {**timer.clock.summary(cfg.warmup), "peak_rss_gib": common.peak_rss_gib(), "fit_wall_s": wall,
           "teacher_dtype": cfg.teacher_dtype, "chunk": cfg.chunk, "device": cfg.device,
           "batch": cfg.batch if cfg.workload in synthetic.WORKLOADS else ANCHOR_BATCH,
           "on_policy_steps": int(module._sources.get("student", 0))}
    if cfg.workload in synthetic.WORKLOADS:
        row["seq"] = cfg.seq
    if cfg.device.startswith("cuda"):
        row["peak_gpu_gib"] = common.peak_memory_gib(cfg.device)
    return row


def _anchor_data(student: Any, on_policy: bool) -> Any:
    from srlm_pl.data.datamodules import SFTDataModule
    from srlm_pl.data.sources import DataSource
    from srlm_pl.data.templates import PromptTemplate

    template = (PromptTemplate(instruction=INSTRUCTION, user_template="{instruction}\n\nProblem: {question}")
                if on_policy else PromptTemplate(answer_format="keep", strip_calculator=False))
    return SFTDataModule(train=DataSource(path=str(common.DATA / "gsm8k"), split="train", limit=512),
                         template=template, tokenizer=student, batch_size=ANCHOR_BATCH, max_length=256,
                         length_policy="drop",
                         seed=42)
