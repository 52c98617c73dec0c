"""``bench.py step --algo sft|kd|grpo``: step time and memory of srlm_pl's trainer on the algorithm's workloads,
each variant in a fresh process; with ``--vs-trl`` also TRL on the workloads of ``../shared/bench/trl_anchor``,
the two alternating in one session, with the ratio srlm_pl / TRL (``vs_trl``, of tokens/s for SFT and of s/step for
KD and GRPO) and of peak memory (``peak_rss_vs_trl``).

Every flag belongs to one or more algorithms (``--help`` lists them by group); a flag given for an algorithm it does
not apply to is an error. The workloads and what each algorithm measures are in ``step_sft``, ``step_kd`` and
``step_grpo``.
"""

from __future__ import annotations

import argparse
import json
import sys
from types import ModuleType, SimpleNamespace
from typing import Any

from benchlib import common, step_grpo, step_kd, step_sft
from benchlib.case import Case, Row

ALGOS: dict[str, ModuleType] = {"sft": step_sft, "kd": step_kd, "grpo": step_grpo}
COMMON = {"workloads", "vs_trl", "threads", "json"}


def _flag(group: argparse._ArgumentGroup, *names: str, **kw: Any) -> None:
    group.add_argument(*names, default=None, **kw)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--algo", choices=sorted(ALGOS), required=True)
    p.add_argument("--workloads", nargs="+", default=None, help="sft: " + " ".join(step_sft.WORKLOADS) + "; kd: "
                   + " ".join(step_kd.WORKLOADS) + "; grpo: " + " ".join(step_grpo.WORKLOADS)
                   + " (default: the cheap ones available; with --vs-trl the TRL anchor's)")
    p.add_argument("--vs-trl", action="store_true", help="also run TRL on the anchor workloads, alternating")
    p.add_argument("--threads", type=int, default=0, help="torch threads in each worker (0: torch's default)")
    p.add_argument("--json", help="also write the rows here")
    g = p.add_argument_group("every algorithm (defaults per algorithm)")
    _flag(g, "--steps", type=int, help="timed steps (sft 30, kd 2 for loss/pair, 9 for on-policy/mixed, 5 for "
          "random-*, grpo 9)")
    _flag(g, "--warmup", type=int, help="untimed steps first (sft 5, kd 1, grpo 1)")
    _flag(g, "--device", help="cpu (default) or cuda")
    _flag(g, "--chunk", type=int, help="loss_chunk_size: LM-head positions per chunk (sft, grpo 1024; kd 64)")
    g = p.add_argument_group("sft")
    _flag(g, "--packed_steps", type=int, help="timed steps with packing (TRL's anchor: 10)")
    _flag(g, "--packed_warmup", type=int, help="untimed steps with packing (2)")
    _flag(g, "--rows", type=int, help="training rows (512)")
    _flag(g, "--max_length", type=int, help="tokens per row (512)")
    _flag(g, "--bf16", type=int, help="bf16 autocast (1) or fp32 (0)")
    _flag(g, "--loss", choices=["fused", "generic", "naive"], help="fused LM-head cross-entropy (default), the "
          "generic checkpointed chunks, or the naive full-logits loss")
    _flag(g, "--grad_ckpt", type=int, help="gradient checkpointing (0; TRL's default is on)")
    _flag(g, "--packing", nargs="+", type=int, help="packing off and/or on (0 1)")
    g = p.add_argument_group("sft and kd")
    _flag(g, "--batch", type=int, help="sequences per step (sft 8, kd 4; kd on-policy/mixed keep the anchor's 4)")
    g = p.add_argument_group("kd")
    _flag(g, "--seq", type=int, help="tokens per sequence (512)")
    _flag(g, "--prompt", type=int, help="prompt tokens per sequence, not in the loss (128)")
    _flag(g, "--vocab", type=int, help="head rows of the loss workload (151936)")
    _flag(g, "--vocab-tokens", type=int, help="tokenizer size the logits are sliced to (151665)")
    _flag(g, "--student-hidden", type=int, help="student width of the loss workload (896)")
    _flag(g, "--teacher-hidden", type=int, help="teacher width of the loss workload (1536)")
    _flag(g, "--chunks", help="chunk sizes of the chunked variant, comma-separated (1024,256)")
    _flag(g, "--variants", help="loss workload variants (naive_full,naive_gathered,chunked)")
    _flag(g, "--beta", type=float, help="generalized JSD beta (0.5)")
    _flag(g, "--alpha", type=float, help="CE weight (0.5)")
    _flag(g, "--precision", choices=["bf16-mixed", "fp32"], help="fp32 weights with or without bf16 autocast")
    _flag(g, "--pair-dir", help="SmolLM2-135M-Instruct HF folder of the pair workload")
    _flag(g, "--skip-pair", action="store_true", help="leave out the pair workload")
    _flag(g, "--skip-loss", action="store_true", help="leave out the loss workload")
    _flag(g, "--max-gib", type=float, help="memory budget per variant (default 60%% of available)")
    _flag(g, "--teacher_dtype", help="on-policy/mixed teacher weights: bfloat16 (default) or float32")
    _flag(g, "--k", type=int, help="offline-topk: teacher tokens stored per position (64)")
    g = p.add_argument_group("grpo")
    _flag(g, "--prompts", type=int, help="prompts per step (4)")
    _flag(g, "--group", type=int, help="completions per prompt (4)")
    _flag(g, "--new_tokens", type=int, help="completion budget (128)")
    _flag(g, "--prompt_len", type=int, help="prompt ids of the random-* workloads (128)")
    _flag(g, "--no_share_prompt", action="store_true", help="log-prob forward over prompt + completion per row")
    _flag(g, "--no_lean", action="store_true", help="decode with the HF forward and cache (SRLM_LEAN_DECODE=0)")
    _flag(g, "--no_fused", action="store_true", help="generic chunked log-probs (SRLM_FUSED_CE=0)")
    _flag(g, "--backend", nargs="+", choices=["hf", "vllm", "vllm-compiled"],
          help="generation engine(s) of the rollouts (hf); vllm: in-process, enforce_eager (vllm-compiled: compiled), "
          "the model's dtype, weights pushed after every step. Several: one row each, TRL run once and every row's "
          "vs_trl against that run")


def resolve(args: argparse.Namespace) -> SimpleNamespace:
    """The algorithm's settings: its defaults, overridden by the flags given; other algorithms' flags refused."""
    algo = ALGOS[args.algo]
    given = {k for k, v in vars(args).items() if v is not None and k not in COMMON | {"algo", "func", "command"}}
    foreign = sorted(given - set(algo.FLAGS))
    if foreign:
        sys.exit(f"--algo {args.algo} does not take " + ", ".join("--" + k for k in foreign))
    a = SimpleNamespace(**{**algo.FLAGS, **{k: getattr(args, k) for k in given}},
                        **{k: getattr(args, k) for k in COMMON}, algo=args.algo)
    a.workloads = a.workloads or algo.default_workloads(a)
    unknown = [w for w in a.workloads if w not in algo.WORKLOADS]
    if unknown:
        sys.exit(f"--algo {args.algo} has no workload {', '.join(unknown)} (it has {', '.join(algo.WORKLOADS)})")
    if any(w in algo.NEEDS_ASSETS for w in a.workloads) and not common.ensure_assets():
        sys.exit(f"{', '.join(algo.NEEDS_ASSETS)} need SmolLM2-135M-Instruct and the Qwen2.5 tokenizer: "
                 "python ../shared/bench/assets.py /tmp/probe (see docs/performance.md)")
    return a


def parse(argv: list[str]) -> SimpleNamespace:
    """Resolved settings from ``step`` flags, for callers other than ``bench.py`` (``gpu_check.py``)."""
    p = argparse.ArgumentParser(prog="bench.py step")
    add_arguments(p)
    return resolve(p.parse_args(argv))


def _measure(run: Any) -> Row:
    try:
        return run()
    except Exception as err:  # one failed variant (out of memory, a missing dependency) must not end the session
        lines = str(err).strip().splitlines() or [""]
        return {"error": f"{type(err).__name__}: {lines[-1][:300]}"}


def run_cases(algo: ModuleType, cases: list[Case], vs_trl: bool) -> list[Row]:
    """Measure every case, srlm_pl and (with ``vs_trl``) TRL, alternating which goes first."""
    rows: list[Row] = []
    for i, case in enumerate(cases):
        impls = ["srlm_pl", "TRL"] if vs_trl and case.trl is not None else ["srlm_pl"]
        if i % 2:
            impls.reverse()
        got = {impl: {**case.label, "impl": impl, **(case.extra if impl == "srlm_pl" else {}),
                      **_measure(case.run if impl == "srlm_pl" else case.trl)} for impl in impls}
        ours, trl = got["srlm_pl"], got.get("TRL")
        if trl is not None and ours.get(algo.METRIC) and trl.get(algo.METRIC):
            ours["vs_trl"] = ours[algo.METRIC] / trl[algo.METRIC]
            if ours.get("peak_rss_gib") and trl.get("peak_rss_gib"):
                ours["peak_rss_vs_trl"] = ours["peak_rss_gib"] / trl["peak_rss_gib"]
        for impl in sorted(got, key=lambda k: k != "TRL"):
            rows.append(got[impl])
            print(json.dumps(got[impl]), flush=True)
    return rows


def measure(a: SimpleNamespace) -> dict[str, Any]:
    """Run the step benchmark for resolved settings ``a``; returns the result (also used by ``gpu_check.py``)."""
    algo = ALGOS[a.algo]
    rows = run_cases(algo, algo.cases(a), a.vs_trl)
    return {"bench": f"step-{a.algo}", "metric": algo.METRIC, "rows": rows,
            "config": {k: getattr(a, k) for k in (*algo.FLAGS, "workloads", "vs_trl", "threads")}}


def run(args: argparse.Namespace) -> None:
    a = resolve(args)
    result = measure(a)
    print(common.table(result["rows"], ALGOS[a.algo].COLUMNS))
    common.emit(result, a.json)


def worker(algo: str, config: str) -> None:
    """One measurement, in this fresh process; prints its row as the last JSON line."""
    print(json.dumps(ALGOS[algo].worker(SimpleNamespace(**json.loads(config)))))
