"""``bench.py longseq``: SFT at long rows (1K / 2K / 4K / 8K tokens per packed row) in one session, each length in a
fresh process so that peaks do not mix.

Model: the ``tiny`` preset (h128, 4 layers) with the real Qwen2.5 vocabulary (151,936-row tied embedding / LM head,
``common.QWEN_TOK``), float32, AdamW. Path: ``SFTModule`` under a Lightning ``Trainer`` (forward, backward,
optimizer step), one packed row per step built by ``PackedCollator`` from examples of 600-1,000 random tokens with a
100-token prompt (content does not change memory or time), packing + chunked fused loss + gradient checkpointing +
``attn_implementation: sdpa_packed`` unless the flags say otherwise.

Memory, two ways:

- RSS (``/proc/self/status`` ``VmHWM``): what the OS charges. ``peak_rss_gib`` is the whole process's high-water mark;
  the mark is reset after the warm-up steps (``/proc/self/clear_refs``), so ``step_peak_gib`` is the timed steps'
  own peak and ``step_extra_mib`` that peak above the RSS at the reset (the model, optimizer state and allocator
  caches already resident). RSS includes freed memory the allocator keeps, so it is coarse.
- Tensors (``benchlib.backward_memory`` on one more step of the same kind): bytes saved for backward, held from
  forward to backward, and the peak of live tensors over forward and backward: allocator-independent.

Every ``*_per_token`` figure is divided by the row's tokens; ``*_vs_first`` is its ratio to the first length's (same
attention); ``*_vs_first_attn`` compares each ``--attn`` with the first one at the same length.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from benchlib import common
from benchlib.backward_memory import measure
from benchlib.fit import fit, setup_worker

Row = dict[str, Any]
QWEN_VOCAB = 151936
COLUMNS = ["attn", "tokens", "s_per_step", "tokens_per_s", "peak_rss_gib", "peak_rss_kib_per_token", "step_extra_mib",
           "step_extra_kib_per_token", "saved_mib", "peak_tensor_mib", "saved_bytes_per_token", "saved_vs_first",
           "held_bytes_per_token", "held_vs_first", "peak_bytes_per_token", "peak_vs_first",
           "peak_rss_per_token_vs_first", "peak_rss_vs_first_attn", "s_per_step_vs_first_attn"]


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--lengths", type=int, nargs="+", default=[1024, 2048, 4096, 8192], help="tokens per row")
    p.add_argument("--steps", type=int, default=2, help="timed steps per length")
    p.add_argument("--warmup", type=int, default=1, help="untimed steps first (optimizer state allocated)")
    p.add_argument("--chunk", type=int, default=1024, help="loss_chunk_size")
    p.add_argument("--attn", nargs="+", default=["sdpa_packed"],
                   help="attn_implementation(s), each at every length (sdpa: transformers' dense block mask)")
    p.add_argument("--grad_ckpt", type=int, default=1, help="gradient checkpointing (1) or not (0)")
    p.add_argument("--bf16", type=int, default=0, help="bf16-mixed (1) or 32-true (0)")
    p.add_argument("--threads", type=int, default=1, help="torch threads per worker (0: torch's default)")
    p.add_argument("--json", help="also write the result here")


def packed_row(width: int, vocab: int, seed: int = 0) -> dict[str, Any]:
    """One packed row of exactly ``width`` tokens through ``PackedCollator``: examples of 600-1,000 random tokens (the
    paper's traces are ~900) with a 100-token prompt each."""
    import torch

    from srlm_pl.data.collate import PackedCollator

    gen = torch.Generator().manual_seed(seed)
    examples, left = [], width
    while left:
        n = min(left, int(torch.randint(600, 1001, (1,), generator=gen)))
        ids = torch.randint(0, vocab, (n,), generator=gen).tolist()
        examples.append({"input_ids": ids, "prompt_len": min(100, n - 1)})
        left -= n
    return PackedCollator(pad_token_id=0, max_length=width)([examples])


def run(args: argparse.Namespace) -> None:
    if not common.ensure_assets():
        sys.exit(f"needs the Qwen2.5 tokenizer at {common.QWEN_TOK} (see ../shared/bench/assets.py)")
    rows = []
    for attn in args.attn:
        for tokens in args.lengths:
            cfg = {k: getattr(args, k) for k in ("steps", "warmup", "chunk", "grad_ckpt", "bf16", "threads")}
            rows.append(common.run_json([sys.executable, str(common.BENCH), "longseq-worker",
                                         json.dumps({**cfg, "attn": attn, "tokens": tokens})]))
            print(json.dumps(rows[-1]), file=sys.stderr)
    for r in rows:
        _ratios(r, next(f for f in rows if f["attn"] == r["attn"]), next(f for f in rows if f["tokens"] == r["tokens"]))
    print(common.table(rows, COLUMNS))
    settings = {k: getattr(args, k) for k in ("lengths", "steps", "warmup", "chunk", "attn", "grad_ckpt", "bf16",
                                              "threads")}
    common.emit({"benchmark": "longseq", "settings": settings, "rows": rows}, args.json)


def _ratios(r: Row, first: Row, baseline: Row) -> None:
    """Per-token ratios to the first length of the same attention, sizes, and peak RSS against the first attention
    at the same length."""
    for key in ("saved", "held", "peak"):
        r[f"{key}_vs_first"] = r[f"{key}_bytes_per_token"] / first[f"{key}_bytes_per_token"]
    r["saved_mib"] = r["saved_bytes_per_token"] * r["tokens"] / 2**20
    r["peak_tensor_mib"] = r["peak_bytes_per_token"] * r["tokens"] / 2**20
    r["peak_rss_per_token_vs_first"] = r["peak_rss_kib_per_token"] / first["peak_rss_kib_per_token"]
    r["peak_rss_vs_first_attn"] = r["peak_rss_gib"] / baseline["peak_rss_gib"]
    r["s_per_step_vs_first_attn"] = r["s_per_step"] / baseline["s_per_step"]


def _window() -> Any:
    """A callback resetting the RSS high-water mark after the warm-up steps (``clear_refs``)."""
    import lightning as L

    class Window(L.Callback):
        def __init__(self, warmup: int) -> None:
            self.warmup, self.base = warmup, float("nan")

        def on_train_batch_end(self, trainer: Any, module: Any, outputs: Any, batch: Any, batch_idx: int) -> None:
            if batch_idx == self.warmup - 1:
                self.process_peak = max(_vm_hwm_gib(), common.peak_rss_gib())
                Path("/proc/self/clear_refs").write_text("5")
                self.base = common.rss_gib()

    return Window


def worker(config: str) -> None:
    """One length in this process: fit ``warmup + steps`` steps, then one measured step; prints the row as JSON."""
    import torch

    from srlm_pl.models import ModelSpec, TinyConfig
    from srlm_pl.modules.sft import SFTModule
    from srlm_pl.optim import AdamW

    cfg = SimpleNamespace(**json.loads(config))
    setup_worker(cfg)
    tiny = TinyConfig(vocab_size=QWEN_VOCAB, max_position_embeddings=max(cfg.tokens, 2048))
    spec = ModelSpec(tokenizer=str(common.QWEN_TOK), tiny=tiny, attn_implementation=cfg.attn,
                     gradient_checkpointing=bool(cfg.grad_ckpt))
    module = SFTModule(policy=spec, loss_chunk_size=cfg.chunk, optimizer=lambda p: AdamW(p, lr=2e-5))
    batches = [packed_row(cfg.tokens, 151643, seed) for seed in range(cfg.warmup + cfg.steps + 1)]
    window = _window()(cfg.warmup)
    loader = torch.utils.data.DataLoader(batches[:-1], batch_size=None)
    timer, wall = fit(module, loader, steps=cfg.warmup + cfg.steps, precision="bf16-mixed" if cfg.bf16 else "32-true",
                      callbacks=(window,))
    step_peak = _vm_hwm_gib()
    row = {**timer.clock.summary(cfg.warmup, span="interval"), "tokens": cfg.tokens, "fit_wall_s": wall}
    module.model.train()
    mem = measure(lambda: module.completion_nll(batches[-1])[0], module.model.parameters(), len(module.tokenizer))
    peak = max(window.process_peak, _vm_hwm_gib(), common.peak_rss_gib())
    row.update({"tokens_per_s": cfg.tokens / row["s_per_step"], "peak_rss_gib": peak,
                "peak_rss_kib_per_token": peak * 2**20 / cfg.tokens, "step_peak_gib": step_peak,
                "rss_at_reset_gib": window.base, "step_extra_mib": (step_peak - window.base) * 1024,
                "step_extra_kib_per_token": (step_peak - window.base) * 2**20 / cfg.tokens,
                **mem.per_token(cfg.tokens), "vocab_rows": mem.vocab_rows, "attn": cfg.attn,
                "grad_ckpt": bool(cfg.grad_ckpt), "chunk": cfg.chunk, "threads": cfg.threads,
                "params_M": sum(p.numel() for p in module.model.parameters()) / 1e6})
    print(json.dumps(row))


def _vm_hwm_gib() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 2**20
    return float("nan")
