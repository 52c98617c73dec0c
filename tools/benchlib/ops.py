"""``bench.py ops``: the fused LM-head kernels with a trainable vs a frozen head (``ops_fused_head``) and the LM head
on a strided vs contiguous last-position input (``ops_head_input``); ``ratio`` is the second variant's time over the
first's, both measured in this process."""

from __future__ import annotations

import argparse

from benchlib import common

PARTS = ("fused-head", "head-input")
COLUMNS = ["bench", "variant", "trainable_head_ms", "frozen_head_ms", "strided_ms", "contiguous_ms", "ratio",
           "strided_peak_mib", "contiguous_peak_mib"]


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--parts", nargs="+", choices=PARTS, default=list(PARTS))
    p.add_argument("--rows", type=int, default=2048, help="fused head: completion positions")
    p.add_argument("--hidden", type=int, default=576, help="fused head: width (SmolLM2)")
    p.add_argument("--vocab", type=int, default=49152, help="fused head: head rows (SmolLM2)")
    p.add_argument("--batch", type=int, default=4, help="head input: rows")
    p.add_argument("--seq", type=int, default=288, help="head input: tokens per row (KD batches reach ~288)")
    p.add_argument("--repeats", type=int, default=None, help="best of (fused head 3, head input 5)")
    p.add_argument("--json", help="also write the result here")


def run(a: argparse.Namespace) -> None:
    import torch

    rows, result = [], {"bench": "ops", "torch": torch.__version__}
    if "fused-head" in a.parts:
        from benchlib.ops_fused_head import bench_fused_head

        rows += bench_fused_head(a.rows, a.hidden, a.vocab, a.repeats or 3)
        result["fused_head"] = {"rows": a.rows, "hidden": a.hidden, "vocab": a.vocab}
    if "head-input" in a.parts:
        from benchlib.ops_head_input import bench_head_input

        model, got = bench_head_input(a.batch, a.seq, a.repeats or 5)
        rows += got
        result["head_input"] = {"model": model, "batch": a.batch, "seq": a.seq}
    print(f"bf16 autocast, torch {torch.__version__}")
    print(common.table(rows, COLUMNS))
    common.emit({**result, "rows": rows}, a.json)
