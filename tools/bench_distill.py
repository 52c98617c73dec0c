"""Step time and peak memory of the chunked KD loss against the naive full-vocabulary computation.

Part 1, the loss alone at the Qwen2.5 vocabulary (V = 151,936 head rows), B = 4, T = 512 (the first 128 tokens
of each row are prompt, the other 384 completion), student width 896 (Qwen2.5-0.5B), teacher width 1536
(Qwen2.5-1.5B), generalized JSD beta = 0.5, alpha = 0.5. One step = loss forward + backward into the student's
hidden states and head. Variants:

* ``naive_full``: both heads on all B x T positions (``[B, T, V]`` logits, as TRL's GKD trainer computes them),
  then the divergence and CE with the completion mask applied afterwards;
* ``naive_gathered``: both heads on the completion positions only, all at once, no recomputation;
* ``chunked``: ``srlm_pl.losses.chunked_kd_loss`` (what ``DistillModule`` runs): completion positions only,
  ``--chunks`` positions at a time (each size in turn), each chunk's logits recomputed in backward.

Part 2, a real teacher/student pair when ``--pair-dir`` holds SmolLM2-135M-Instruct (built by
``/work/shared/bench/assets.py``): student = every 2nd teacher layer (15 of 30, as ``layer_stride: 2``), B = 4,
T = 512 random token ids (cost does not depend on the ids), fp32 weights with bf16 autocast, one step = student
forward + teacher forward + loss + backward + AdamW step. ``chunked`` is ``DistillModule.kd_loss``;
``naive_full`` takes both models' ``.logits``.

Memory: every variant runs in a fresh subprocess. On CPU the peak is the process's peak resident set size
(``resource.getrusage(RUSAGE_SELF).ru_maxrss``); ``rss_before_gib`` is the resident set after inputs/models are
built and ``peak_extra_gib`` = peak - before, the step's own memory. On CUDA it is
``torch.cuda.max_memory_allocated`` (reset before the steps). A variant is skipped, not run, when a linear
extrapolation from a ``B = 1`` run says it would not fit in ``--max-gib`` (default: 60% of the memory available
at start), so the benchmark never pushes a shared machine into swapping or the OOM killer.

    python tools/bench_distill.py                     # prints a table and one JSON line (last line)
    python tools/bench_distill.py --steps 2 --skip-pair
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

GIB = 1024**3
VARIANTS = ("naive_full", "naive_gathered", "chunked")
PAIR_VARIANTS = ("naive_full", "chunked")
DEFAULT_PAIR = "/tmp/probe/smollm2_hf"


def _rss() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def _peak_rss() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux: KiB


def _available() -> int:
    import psutil

    return int(psutil.virtual_memory().available)


# ------------------------------------------------------------------------------------------------ workers
def _loss_step(variant: str, a: argparse.Namespace):
    import torch
    import torch.nn.functional as F

    from srlm_pl.losses import generalized_jsd
    from srlm_pl.ops import chunked_kd_loss

    g = torch.Generator().manual_seed(0)
    dev = torch.device(a.device)
    s_head = torch.nn.Linear(a.student_hidden, a.vocab, bias=False).to(dev)
    t_head = torch.nn.Linear(a.teacher_hidden, a.vocab, bias=False).to(dev).requires_grad_(False)
    s_h = torch.randn(a.batch, a.seq, a.student_hidden, generator=g).to(dev).requires_grad_()
    t_h = torch.randn(a.batch, a.seq, a.teacher_hidden, generator=g).to(dev)
    ids = torch.randint(0, a.vocab_tokens, (a.batch, a.seq), generator=g).to(dev)
    labels = ids.clone()
    labels[:, : a.prompt] = -100
    mask, targets = labels[:, 1:] != -100, labels[:, 1:][labels[:, 1:] != -100]
    kw = dict(beta=a.beta, temperature=1.0)

    def step() -> float:
        s_h.grad, s_head.weight.grad = None, None
        with torch.autocast(dev.type, dtype=torch.bfloat16, enabled=a.precision == "bf16-mixed"):
            if variant == "chunked":
                loss, _ = chunked_kd_loss(s_h[:, :-1][mask], t_h[:, :-1][mask], s_head, t_head, targets,
                                          alpha=a.alpha, chunk_size=a.chunk, vocab_size=a.vocab_tokens, **kw)
            else:
                full = variant == "naive_full"
                sh, th = (s_h[:, :-1], t_h[:, :-1]) if full else (s_h[:, :-1][mask], t_h[:, :-1][mask])
                s_logits = s_head(sh)[..., : a.vocab_tokens]
                with torch.no_grad():
                    t_logits = t_head(th)[..., : a.vocab_tokens]
                kd = generalized_jsd(s_logits, t_logits, **kw)
                tgt = labels[:, 1:] if variant == "naive_full" else targets
                ce = F.cross_entropy(s_logits.float().reshape(-1, a.vocab_tokens), tgt.reshape(-1), ignore_index=-100)
                kd = kd[mask].mean() if variant == "naive_full" else kd.mean()
                loss = a.alpha * ce + (1 - a.alpha) * kd
            loss.backward()
        return float(loss)

    return step


def _pair_step(variant: str, a: argparse.Namespace):
    import torch

    from srlm_pl.losses import generalized_jsd
    from srlm_pl.models.loading import ModelSpec
    from srlm_pl.modules.distill import DistillModule

    module = DistillModule(policy=ModelSpec(name_or_path=a.pair_dir, layer_stride=2, dtype="float32"),
                           teacher=ModelSpec(name_or_path=a.pair_dir, dtype="float32"), beta=a.beta, alpha=a.alpha,
                           loss_chunk_size=a.chunk)
    module.configure_model()
    dev = torch.device(a.device)
    module.to(dev)
    teacher = module.teacher
    opt = torch.optim.AdamW(module.model.parameters(), lr=1e-6)
    g = torch.Generator().manual_seed(0)
    vocab = module.kd_vocab_size
    ids = torch.randint(0, vocab, (a.batch, a.seq), generator=g).to(dev)
    labels = ids.clone()
    labels[:, : a.prompt] = -100
    batch = {"input_ids": ids, "attention_mask": torch.ones_like(ids), "labels": labels,
             "position_ids": torch.arange(a.seq, device=dev).expand(a.batch, -1)}
    mask = labels[:, 1:] != -100

    def step() -> float:
        with torch.autocast(dev.type, dtype=torch.bfloat16, enabled=a.precision == "bf16-mixed"):
            if variant == "chunked":
                loss, _ = module.kd_loss(batch)
            else:
                s_logits = module.model(input_ids=ids, attention_mask=batch["attention_mask"]).logits[:, :-1, :vocab]
                with torch.no_grad():
                    t_logits = teacher(input_ids=ids, attention_mask=batch["attention_mask"]).logits[:, :-1, :vocab]
                loss = generalized_jsd(s_logits, t_logits, beta=a.beta)[mask].mean()
                if a.alpha:
                    ce = torch.nn.functional.cross_entropy(s_logits.float().reshape(-1, vocab),
                                                           labels[:, 1:].reshape(-1), ignore_index=-100)
                    loss = a.alpha * ce + (1 - a.alpha) * loss
            loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        return float(loss)

    return step


def worker(a: argparse.Namespace) -> dict[str, Any]:
    import torch

    torch.manual_seed(0)
    step = (_pair_step if a.part == "pair" else _loss_step)(a.variant, a)
    cuda = a.device.startswith("cuda")
    before = _rss()
    if cuda:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        before = torch.cuda.memory_allocated()
    times, losses = [], []
    for i in range(a.warmup + a.steps):
        t0 = time.perf_counter()
        losses.append(step())
        if cuda:
            torch.cuda.synchronize()
        if i >= a.warmup:
            times.append(time.perf_counter() - t0)
    peak = torch.cuda.max_memory_allocated() if cuda else _peak_rss()
    return {"part": a.part, "variant": a.variant, "batch": a.batch, "s_per_step": statistics.median(times),
            "step_times": [round(t, 3) for t in times], "peak_gib": peak / GIB, "rss_before_gib": before / GIB,
            "peak_extra_gib": (peak - before) / GIB, "loss": losses[-1], "memory": "cuda max_memory_allocated"
            if cuda else "ru_maxrss of a fresh process"}


# ------------------------------------------------------------------------------------------------ driver
def run_worker(a: argparse.Namespace, part: str, variant: str, batch: int, steps: int, warmup: int) -> dict[str, Any]:
    argv = [sys.executable, __file__, "--worker", "--part", part, "--variant", variant, "--batch", str(batch),
            "--steps", str(steps), "--warmup", str(warmup)]
    for key in ("seq", "prompt", "vocab", "vocab_tokens", "student_hidden", "teacher_hidden", "chunk", "beta",
                "alpha", "precision", "device", "pair_dir", "threads"):
        argv += [f"--{key.replace('_', '-')}", str(getattr(a, key))]
    proc = subprocess.run(argv, capture_output=True, text=True)
    if proc.returncode != 0:
        return {"part": part, "variant": variant, "batch": batch, "error": proc.stderr.strip().splitlines()[-3:]}
    return json.loads(proc.stdout.strip().splitlines()[-1])


def measure(a: argparse.Namespace, part: str, variant: str) -> dict[str, Any]:
    """Full-size run, unless a B=1 probe extrapolates past the memory budget."""
    if a.batch > 1 and variant.startswith("naive"):
        probe = run_worker(a, part, variant, 1, 1, 0)
        if "error" in probe:
            return probe
        projected = probe["rss_before_gib"] + probe["peak_extra_gib"] * a.batch
        if projected > a.max_gib:
            return {"part": part, "variant": variant, "batch": a.batch, "skipped":
                    f"projected peak {projected:.1f} GiB (B=1 extra {probe['peak_extra_gib']:.2f} GiB x {a.batch}) "
                    f"> --max-gib {a.max_gib:.1f}", "probe_b1": probe}
    return run_worker(a, part, variant, a.batch, a.steps, a.warmup)


def table(rows: list[dict[str, Any]]) -> str:
    lines = ["| part | variant | chunk | B | s/step | peak GiB | step extra GiB |", "|---|---|---|---|---|---|---|"]
    for r in rows:
        head = f"| {r['part']} | {r['variant']} | {r.get('chunk') or '-'} | {r['batch']} |"
        if "s_per_step" in r:
            lines.append(f"{head} {r['s_per_step']:.2f} | {r['peak_gib']:.2f} | {r['peak_extra_gib']:.2f} |")
        else:
            lines.append(f"{head} - | - | {r.get('skipped') or r.get('error')} |")
    return "\n".join(lines)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--batch", type=int, default=4, help="sequences per step")
    p.add_argument("--seq", type=int, default=512, help="tokens per sequence")
    p.add_argument("--prompt", type=int, default=128, help="prompt tokens per sequence (not in the loss)")
    p.add_argument("--vocab", type=int, default=151936, help="head rows (Qwen2.5-0.5B/1.5B embedding rows)")
    p.add_argument("--vocab-tokens", type=int, default=151665, help="tokenizer size the logits are sliced to")
    p.add_argument("--student-hidden", type=int, default=896, help="student width (Qwen2.5-0.5B)")
    p.add_argument("--teacher-hidden", type=int, default=1536, help="teacher width (Qwen2.5-1.5B)")
    p.add_argument("--chunks", default="1024,256", help="chunk sizes to run the chunked variant with "
                   "(positions per chunk: model.init_args.loss_chunk_size)")
    p.add_argument("--variants", default=",".join(VARIANTS), help="loss variants to run (part 1)")
    p.add_argument("--chunk", type=int, default=1024, help=argparse.SUPPRESS)
    p.add_argument("--beta", type=float, default=0.5, help="generalized JSD beta")
    p.add_argument("--alpha", type=float, default=0.5, help="CE weight")
    p.add_argument("--precision", default="bf16-mixed", choices=["bf16-mixed", "fp32"],
                   help="fp32 weights with or without bf16 autocast")
    p.add_argument("--device", default="cpu", help="cpu or cuda")
    p.add_argument("--steps", type=int, default=2, help="timed steps per variant (median reported)")
    p.add_argument("--warmup", type=int, default=1, help="untimed steps first")
    p.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    p.add_argument("--pair-dir", default=DEFAULT_PAIR, help="SmolLM2-135M-Instruct HF folder for part 2")
    p.add_argument("--skip-pair", action="store_true", help="only part 1")
    p.add_argument("--skip-loss", action="store_true", help="only part 2")
    p.add_argument("--max-gib", type=float, default=None, help="memory budget per variant (default 60%% available)")
    p.add_argument("--json", default=None, help="also write the results to this file")
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--part", default="loss", help=argparse.SUPPRESS)
    p.add_argument("--variant", default="chunked", help=argparse.SUPPRESS)
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    a = parse_args(argv)
    if a.threads:
        import torch

        torch.set_num_threads(a.threads)
    if a.worker:
        print(json.dumps(worker(a)))
        return 0
    if a.max_gib is None:
        a.max_gib = 0.6 * _available() / GIB
    rows: list[dict[str, Any]] = []
    chunks = [int(c) for c in a.chunks.split(",")]
    parts = ([] if a.skip_loss else [("loss", v) for v in a.variants.split(",")])
    if not a.skip_pair and Path(a.pair_dir, "config.json").is_file():
        parts += [("pair", v) for v in PAIR_VARIANTS]
    elif not a.skip_pair:
        print(f"part 2 skipped: {a.pair_dir} holds no model (build it with /work/shared/bench/assets.py)")
    for part, variant in parts:
        for chunk in chunks if variant == "chunked" else chunks[:1]:
            a.chunk = chunk
            rows.append({**measure(a, part, variant), "chunk": chunk if variant == "chunked" else None})
            print(table(rows[-1:]).splitlines()[-1], flush=True)
    import torch

    config = {k: getattr(a, k) for k in ("batch", "seq", "prompt", "vocab", "vocab_tokens", "student_hidden",
                                         "teacher_hidden", "chunks", "beta", "alpha", "precision", "device", "steps",
                                         "warmup", "max_gib")}
    result = {"bench": "distill", "config": config, "torch": torch.__version__, "threads": torch.get_num_threads(),
              "results": rows}
    print(table(rows))
    if a.json:
        Path(a.json).write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
