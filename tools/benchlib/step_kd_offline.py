"""KD workload ``offline-topk``: ``DistillModule`` with ``teacher_logits:`` (the teacher's top-``--k`` log-probs and
tail log-mass read from a store) against the same module running its teacher online, on the SmolLM2 pair of the
``mixed`` / ``on-policy`` workloads (teacher SmolLM2-135M-Instruct in ``--teacher_dtype``, student its first 2
layers), off-policy (``lmbda: 0``), forward KL (``beta: 0``; over the top-k + tail buckets offline, over the whole
vocabulary online), GSM8K train rows (``--batch`` x (``--warmup`` + ``--steps``) of them, the anchor's template and
max length 256), ``--precision``, loss chunk ``--chunk``.

Three fresh processes in one session: the store is built first (its build time, size and tokens are reported:
``store_mb_per_1m_tokens`` = bytes per completion token), then the online and the offline run, each timed from the
start to the end of a step (``s_per_step``, warm-up steps excluded) with the whole process's peak resident set size
(``peak_rss_gib``, which includes loading's transient copies: the high-water mark read just before it is reset, and
the one after training, whichever is larger), the peak above the process's size before the fit (``peak_extra_gib``),
the peak up to the reset (``load_peak_rss_gib``: loading included) and the peak of the training steps alone
(``train_peak_rss_gib``: the high-water mark is reset once the models are loaded; weights, optimizer state,
activations, the store's pages). The reset (``clear_refs``) also resets ``getrusage``'s ``ru_maxrss``, so neither
alone gives the whole-process peak afterwards. On CUDA ``peak_gpu_gib`` is ``max_memory_allocated``. The row gives
the offline figures and ``time_vs_online``, ``train_peak_vs_online``, ``peak_rss_vs_online``,
``peak_extra_vs_online`` (offline divided by online).
"""

from __future__ import annotations

import shutil
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from benchlib import common
from benchlib.case import Case, Row
from benchlib.fit import fit

WORKLOAD = "offline-topk"
COLUMNS = ["online_s_per_step", "time_vs_online", "median_time_vs_online", "train_peak_rss_gib",
           "online_train_peak_rss_gib", "train_peak_vs_online", "peak_rss_vs_online", "store_mb_per_1m_tokens", "k"]


def case(cfg: dict[str, Any]) -> Case:
    return Case({"workload": WORKLOAD, "variant": f"top{cfg['k']} store vs online", "chunk": cfg["chunk"],
                 "batch": cfg["batch"]}, lambda: compare(cfg))


def compare(cfg: dict[str, Any]) -> Row:
    """Build the store, then run online and offline in fresh processes; the offline row with the ratios."""
    import os

    folder = Path(tempfile.mkdtemp(prefix="srlm_topk_bench_"))
    load_before = os.getloadavg()
    try:
        store = common.run_worker("kd", {**cfg, "variant": "build", "store": str(folder / "store")})
        online = common.run_worker("kd", {**cfg, "variant": "online"})
        offline = common.run_worker("kd", {**cfg, "variant": "offline", "store": str(folder / "store")})
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    keys = ("s_per_step", "s_per_step_median", "step_times", "peak_rss_gib", "peak_extra_gib", "train_peak_rss_gib",
            "rss_train_start_gib", "load_peak_rss_gib")
    row = {**offline, **{f"online_{k}": online[k] for k in keys},
           **{f"store_{k}": v for k, v in store.items()}, "k": cfg["k"]}
    row["loadavg_1_5_15_before_after"] = [list(load_before), list(os.getloadavg())]
    row["time_vs_online"] = offline["s_per_step"] / online["s_per_step"]
    row["median_time_vs_online"] = offline["s_per_step_median"] / online["s_per_step_median"]
    row["peak_rss_vs_online"] = offline["peak_rss_gib"] / online["peak_rss_gib"]
    row["peak_extra_vs_online"] = offline["peak_extra_gib"] / online["peak_extra_gib"]
    row["train_peak_vs_online"] = offline["train_peak_rss_gib"] / online["train_peak_rss_gib"]
    row["store_mb_per_1m_tokens"] = store["bytes"] / store["tokens"]  # bytes per token = MB per 1M tokens
    return row


def _specs(cfg: SimpleNamespace) -> tuple[Any, Any]:
    from srlm_pl.models import ModelSpec

    return (ModelSpec(name_or_path=str(common.SMOLLM2), num_layers=2),
            ModelSpec(name_or_path=str(common.SMOLLM2), dtype=cfg.teacher_dtype))


def _data(student: Any, cfg: SimpleNamespace) -> Any:
    from srlm_pl.data.datamodules import SFTDataModule
    from srlm_pl.data.sources import DataSource
    from srlm_pl.data.templates import PromptTemplate

    rows = cfg.batch * (cfg.warmup + cfg.steps)
    return SFTDataModule(train=DataSource(path=str(common.DATA / "gsm8k"), split="train", limit=rows),
                         template=PromptTemplate(answer_format="keep", strip_calculator=False), tokenizer=student,
                         batch_size=cfg.batch, max_length=256, length_policy="drop", seed=42)


def worker(cfg: SimpleNamespace) -> Row:
    """One process: ``build`` the store, or fit ``online`` / ``offline`` for warmup + steps steps."""
    student, teacher = _specs(cfg)
    data = _data(student, cfg)
    if cfg.variant == "build":
        return _build(cfg, teacher, data)
    from srlm_pl.modules.distill import DistillModule
    from srlm_pl.optim import AdamW, WarmupConstant

    store = {"teacher_logits": cfg.store} if cfg.variant == "offline" else {}
    module = DistillModule(policy=student, teacher=teacher, lmbda=0.0, beta=0.0, alpha=0.0, temperature=1.0,
                           loss_chunk_size=cfg.chunk, seed=42, optimizer=lambda p: AdamW(p, lr=2e-5, fused=True),
                           scheduler=lambda o, n: WarmupConstant(o, n), **store)
    data.setup("fit")
    before = common.rss_gib()
    window = train_peak_callback()
    timer, wall = fit(module, data, steps=cfg.warmup + cfg.steps, device=cfg.device, precision=cfg.precision,
                      callbacks=(window,))
    peak = window.process_peak()
    row = {**timer.clock.summary(cfg.warmup), "peak_rss_gib": peak, "peak_extra_gib": peak - before,
           "load_peak_rss_gib": window.before_reset,
           "rss_before_gib": before, "train_peak_rss_gib": window.peak(), "rss_train_start_gib": window.start,
           "fit_wall_s": wall, "teacher_loaded": module._teacher.model is not None}
    if cfg.device.startswith("cuda"):
        row["peak_gpu_gib"] = common.peak_memory_gib(cfg.device)
    return row


def _vm_hwm_gib() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 2**20
    return float("nan")


def train_peak_callback() -> Any:
    """A Lightning callback that resets this process's peak resident set size when training starts
    (``/proc/self/clear_refs``, Linux), after the models are loaded, so that ``peak()`` (``VmHWM``) is the peak of
    the training steps alone, without loading's transient copies; ``process_peak()`` is the whole process's peak
    (the high-water mark recorded just before the reset, or the one since, whichever is larger)."""
    import lightning as L

    class TrainPeak(L.Callback):
        start = float("nan")
        before_reset = 0.0

        def on_train_start(self, trainer: Any, module: Any) -> None:
            self.before_reset = max(_vm_hwm_gib(), common.peak_rss_gib())  # the reset clears both
            Path("/proc/self/clear_refs").write_text("5")
            self.start = common.rss_gib()

        def peak(self) -> float:
            return _vm_hwm_gib()

        def process_peak(self) -> float:
            return max(self.before_reset, _vm_hwm_gib(), common.peak_rss_gib())

    return TrainPeak()


def _build(cfg: SimpleNamespace, teacher_spec: Any, data: Any) -> Row:
    import torch

    from srlm_pl.kd.teacher import load_teacher
    from srlm_pl.kd.topk_store import teacher_record
    from srlm_pl.kd.topk_writer import write_store

    device = torch.device(cfg.device)
    t0 = time.perf_counter()
    teacher, _ = load_teacher(teacher_spec, device)
    store = write_store(teacher.to(device).eval(), data.tokenizer, data, cfg.store, k=cfg.k,
                        teacher=teacher_record(teacher_spec), splits=("train",), batch_size=cfg.batch)
    return {"build_s": time.perf_counter() - t0, "bytes": store.size_bytes(), "tokens": store.n_tokens("train")}
