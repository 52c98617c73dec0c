"""Offline teacher logits: run a distillation config's teacher over its data once and store its top-k log-probs
(plus the tail mass) per completion token, for ``DistillModule``'s ``teacher_logits:`` (``srlm_pl.kd.topk_store``
describes the format).

The config is the training config itself (``configs/distill_topk_tiny.yaml``): its ``data`` section (sources,
template, max length, length policy), its student's tokenizer, its ``model.init_args.teacher`` and ``temperature``
are used, and the store goes to its ``model.init_args.teacher_logits`` unless ``--out`` says otherwise, so the
training run finds exactly the rows it was built from. Arguments after ``--`` are passed to the config parser
(``-- --model.init_args.teacher.name_or_path PATH``).

    python tools/make_teacher_logits.py --config configs/distill_topk_tiny.yaml -k 64
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]


def parse_args(argv: list[str] | None = None) -> tuple[argparse.Namespace, list[str]]:
    argv = sys.argv[1:] if argv is None else argv
    extra: list[str] = []
    if "--" in argv:
        at = argv.index("--")
        argv, extra = argv[:at], argv[at + 1 :]
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--config", required=True, help="a DistillModule training config (YAML)")
    p.add_argument("--out", default=None, help="store folder (default: the config's model.init_args.teacher_logits)")
    p.add_argument("-k", "--k", type=int, default=64, help="teacher tokens stored per position")
    p.add_argument("--splits", default="train,val", help="data splits to store (those the config sets)")
    p.add_argument("--logprob-dtype", default="float16", choices=["float16", "float32"],
                   help="dtype of the stored log-probs (float16: a quarter smaller store, see topk_store)")
    p.add_argument("--batch-size", type=int, default=8, help="teacher forward batch size")
    p.add_argument("--shard-tokens", type=int, default=1 << 20, help="completion tokens per shard")
    p.add_argument("--device", default="auto", help="'auto' (cuda when available), 'cpu', 'cuda', 'cuda:1', ...")
    return p.parse_args(argv), extra


def build(config: str, extra: list[str], *, out: str | None, k: int, splits: tuple[str, ...],
          logprob_dtype: str = "float16", batch_size: int = 8, shard_tokens: int = 1 << 20,
          device: str = "auto") -> Any:
    """Parse the config, load its teacher and write the store; returns it opened (``TopKStore``)."""
    import torch

    from srlm_pl.cli import main
    from srlm_pl.kd.teacher import check_vocabulary, head_rows, load_teacher
    from srlm_pl.kd.topk_store import teacher_record
    from srlm_pl.kd.topk_writer import write_store

    cli = main(["--config", config, *extra], run=False)
    module, dm = cli.model, cli.datamodule
    if module.teacher_spec is None:
        raise SystemExit(f"error: {config} sets no model.init_args.teacher: the store needs the teacher to run")
    out = out or module.teacher_logits
    if out is None:
        raise SystemExit("error: pass --out or set model.init_args.teacher_logits in the config")
    dev = torch.device("cuda" if device == "auto" and torch.cuda.is_available() else
                       ("cpu" if device == "auto" else device))
    teacher, tokenizer = load_teacher(module.teacher_spec, dev)
    teacher = teacher.to(dev).eval()
    vocab = check_vocabulary(dm.tokenizer, tokenizer, head_rows(teacher), head_rows(teacher))
    return write_store(teacher, dm.tokenizer, dm, out, k=k, teacher=teacher_record(module.teacher_spec),
                       splits=splits, temperature=module.temperature, logprob_dtype=logprob_dtype,
                       batch_size=batch_size, shard_tokens=shard_tokens, vocab_size=vocab)


def main(argv: list[str] | None = None) -> None:
    args, extra = parse_args(argv)
    store = build(args.config, extra, out=args.out, k=args.k, splits=tuple(args.splits.split(",")),
                  logprob_dtype=args.logprob_dtype, batch_size=args.batch_size, shard_tokens=args.shard_tokens,
                  device=args.device)
    summary = {"store": str(store.path), "k": store.key.k, "bytes": store.size_bytes(),
               "splits": {s: store.n_tokens(s) for s in store.splits}}
    tokens = sum(summary["splits"].values())
    summary["mb_per_1m_tokens"] = round(store.size_bytes() / max(tokens, 1), 2)
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
