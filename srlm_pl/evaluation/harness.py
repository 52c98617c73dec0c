"""The evaluation loop: load problems and model → render prompts → batched generation → verify → append
predictions → summary.

Choices: batches are formed from the problems still to do, sorted by prompt length (less padding); a problem's
samples come from its own random generator seeded by ``(seed, problem id)``, so results do not depend on batch
size, batch composition or on where an interrupted run resumed. Generation is ``srlm_pl.generation.engine.generate``
(the same KV-cache sampler as GRPO and validation; greedy at ``temperature: 0``), optionally under bf16 autocast
with fp32 weights (``precision: bf16``). Answers are checked by ``srlm_pl.verifiers.verify_batch`` (deadline per
answer: ``timeout``); code tasks (``humaneval``, ``builtin_code``) by running each program against the task's tests in
the sandbox (``srlm_pl.verifiers.verify_code_completions``, deadline ``code_timeout``), the program being the prompt
plus the completion in completion style and the completion's last ``python`` block in chat style. Predictions are
appended and fsync'ed after every batch (see ``predictions.py``).
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch

from srlm_pl.data.code_sources import BuiltinCodeTasks
from srlm_pl.data.sources import BuiltinProblems
from srlm_pl.evaluation.datasets import EvalSet, eval_source, load_eval_set
from srlm_pl.evaluation.loading import LoadedModel, check_model_path, load_for_eval
from srlm_pl.evaluation.predictions import EvalError, PredictionStore
from srlm_pl.evaluation.prompts import PromptStyle, resolve_style
from srlm_pl.evaluation.summary import summarize, write_summary

log = logging.getLogger(__name__)


@dataclass
class EvalConfig:
    """What to evaluate and how (the fields of ``tools/evaluate.py``; see its ``--help``)."""

    model: str
    dataset: str = "gsm8k"
    data_file: str | None = None
    data_root: str = "../shared/data"
    split: str = "test"
    limit: int | None = None
    builtin: BuiltinProblems = field(default_factory=lambda: BuiltinProblems(level=1, num_problems=200, seed=3))
    builtin_code: BuiltinCodeTasks = field(default_factory=lambda: BuiltinCodeTasks(level=1, num_problems=200, seed=3))
    gguf_file: str | None = None
    run_config: str | None = None
    n: int = 1
    k: list[int] = field(default_factory=lambda: [1])
    temperature: float = 0.0
    top_p: float = 1.0
    top_k: int = 0
    max_new_tokens: int = 512
    batch_size: int = 16
    prompt_style: str = "auto"
    system_prompt: str | None = None
    instruction: str | None = None
    user_template: str | None = None
    precision: Literal["fp32", "bf16"] = "fp32"
    device: str = "auto"
    seed: int = 0
    timeout: float = 1.0
    code_timeout: float = 5.0
    threads: int = 0
    progress: bool = True
    backend: Literal["hf", "vllm", "auto"] = "hf"

    def check(self) -> None:
        if self.n < 1 or self.batch_size < 1 or self.max_new_tokens < 1:
            raise EvalError("--n, --batch_size and --max_new_tokens must be >= 1")
        if self.n > 1 and self.temperature == 0:
            raise EvalError("--n > 1 needs sampling: set --temperature > 0 (greedy samples would all be equal)")
        if any(k < 1 or k > self.n for k in self.k):
            raise EvalError(f"every --k must be in 1..n (n={self.n}), got {self.k}")
        if self.limit is not None and self.limit < 1:
            raise EvalError("--limit must be >= 1")


def problem_seed(seed: int, problem_id: str) -> int:
    return int.from_bytes(hashlib.sha256(f"{seed}:{problem_id}".encode()).digest()[:8], "little") & (2**63 - 1)


def _fingerprint(name: str) -> str:
    """Names, sizes and mtimes of the model's weight files: a retrained model in the same folder is a new model."""
    path = Path(name)
    files: list[Path] = []
    if path.is_file():
        files = [path]
    elif path.is_dir():
        files = sorted(p for pattern in ("*.safetensors", "*.gguf", "*.bin") for p in path.glob(pattern))
    return ";".join(f"{f.name}:{f.stat().st_size}:{int(f.stat().st_mtime)}" for f in files) or name


def _device(name: str) -> torch.device:
    return torch.device(("cuda" if torch.cuda.is_available() else "cpu") if name == "auto" else name)


def _settings(cfg: EvalConfig, data: EvalSet, style: PromptStyle) -> dict[str, Any]:
    return {"model": cfg.model, "model_files": _fingerprint(cfg.model), "gguf_file": cfg.gguf_file,
            "data": data.source, "prompt": {"label": style.label, "template": asdict(style.template)},
            "n": cfg.n, "temperature": cfg.temperature, "top_p": cfg.top_p, "top_k": cfg.top_k,
            "max_new_tokens": cfg.max_new_tokens, "precision": cfg.precision, "seed": cfg.seed,
            **({"backend": cfg.backend} if cfg.backend != "hf" else {})}  # hf: the key earlier folders lack


def _score_batch(loaded: LoadedModel, batch: list[dict[str, Any]], prompts: list[list[int]], texts: list[str],
                 cfg: EvalConfig, sampling: Any, engine: Any, program_mode: str) -> list[dict[str, Any]]:
    from srlm_pl.generation.engine import decode_completions

    seeds = [problem_seed(cfg.seed, r["id"]) for r in batch] if cfg.temperature > 0 else None
    device = next(loaded.model.parameters()).device
    autocast = torch.autocast(device.type, dtype=torch.bfloat16) if cfg.precision == "bf16" and engine.name == "hf" \
        else contextlib.nullcontext()  # vLLM runs in its own dtype (bf16 precision -> bfloat16 weights)
    start = time.perf_counter()
    with autocast:
        out = engine.generate(prompts, sampling, seeds=seeds)
    seconds = time.perf_counter() - start
    lengths, truncated = out.lengths.tolist(), out.truncated.tolist()
    completions = decode_completions(loaded.tokenizer, out)
    golds = [r["answer"] for r in batch for _ in range(cfg.n)]
    verdicts, extracted, normalized = check_completions(golds, completions, cfg, program_mode)
    rows = []
    for i, (text, verdict) in enumerate(zip(completions, verdicts, strict=True)):
        problem = batch[i // cfg.n]
        rows.append({"id": problem["id"], "sample": i % cfg.n, "prompt": texts[i // cfg.n], "gold": problem["answer"],
                     "completion": text, "extracted": extracted[i], "normalized": normalized[i],
                     "verdict": verdict.status, "tokens": lengths[i], "truncated": bool(truncated[i]),
                     "seconds": seconds / len(completions)})
    return rows


def code_stop_strings(data: EvalSet, style: PromptStyle) -> list[str]:
    """Code tasks in completion style stop generating at the Codex stop sequences (``\\ndef``, ``\\nclass``, ...),
    where the program is cut anyway; everything else stops at EOS only."""
    from srlm_pl.verifiers.code_task import STOP_SEQUENCES, is_code_gold

    code = bool(data.rows) and is_code_gold(data.rows[0]["answer"])
    return list(STOP_SEQUENCES) if code and style.program_mode == "prompt_completion" else []


def check_completions(golds: list[str], completions: list[str], cfg: EvalConfig,
                      program_mode: str) -> tuple[list[Any], list[str | None], list[str | None]]:
    """Verdicts, extracted answers and the keys maj@k votes on. Math: the verifier's extracted answer and its
    normal form; code tasks: the program that ran (identical programs vote together)."""
    from srlm_pl.verifiers import (
        build_program,
        is_code_gold,
        normalize,
        parse_code_gold,
        verify_batch,
        verify_code_completions,
    )

    if golds and all(is_code_gold(g) for g in golds):
        verdicts = verify_code_completions(completions, golds, mode=program_mode, timeout=cfg.code_timeout)
        programs = [build_program(c, parse_code_gold(g), program_mode) for c, g in zip(completions, golds, strict=True)]
        return verdicts, programs, programs
    verdicts = verify_batch(golds, completions, timeout=cfg.timeout)
    extracted = [v.extracted for v in verdicts]
    return verdicts, extracted, [normalize(e) if e is not None else None for e in extracted]


def run_evaluation(cfg: EvalConfig, out_dir: str | Path, *, overwrite: bool = False,
                   loaded: LoadedModel | None = None) -> dict[str, Any]:
    """Evaluate ``cfg.model`` on ``cfg.dataset`` into ``out_dir``; resumes from its predictions file."""
    from srlm_pl.generation.backends import build_engine
    from srlm_pl.generation.config import GenerationConfig
    from srlm_pl.generation.engine import SamplingConfig

    cfg.check()
    check_model_path(cfg.model, cfg.run_config)  # before any work
    if cfg.threads > 0:
        torch.set_num_threads(cfg.threads)
    src = eval_source(cfg.dataset, data_file=cfg.data_file, data_root=cfg.data_root, split=cfg.split,
                      limit=cfg.limit, builtin=cfg.builtin, builtin_code=cfg.builtin_code)
    data = load_eval_set(src, cfg.dataset)
    device = _device(cfg.device)
    loaded = loaded or load_for_eval(cfg.model, gguf_file=cfg.gguf_file, run_config=cfg.run_config, device=str(device))
    style = resolve_style(cfg.prompt_style, cfg.dataset, loaded.run_config, system_prompt=cfg.system_prompt,
                          instruction=cfg.instruction, user_template=cfg.user_template)
    store = PredictionStore(out_dir, _settings(cfg, data, style), overwrite=overwrite)
    done = store.load_complete(cfg.n)
    todo = [r for r in data.rows if r["id"] not in done]
    texts = {r["id"]: style.render(r["question"], loaded.tokenizer) for r in todo}
    ids = {pid: loaded.tokenizer(t, add_special_tokens=False)["input_ids"] for pid, t in texts.items()}
    todo.sort(key=lambda r: len(ids[r["id"]]))
    sampling = SamplingConfig(max_new_tokens=cfg.max_new_tokens, temperature=cfg.temperature, top_p=cfg.top_p,
                              top_k=cfg.top_k, num_samples=cfg.n, stop_strings=code_stop_strings(data, style))
    log.info("%s on %s: %d problems, %d already done, %d to do (prompt: %s)", loaded.description, data.source,
             len(data.rows), len(data.rows) - len(todo), len(todo), style.label)
    from tqdm.auto import tqdm

    start = time.perf_counter()
    engine = build_engine(GenerationConfig(backend=cfg.backend, dtype="bfloat16" if cfg.precision == "bf16"
                                           else "float32"), loaded.model, loaded.tokenizer, key="--backend") \
        if todo else None  # nothing left to generate: no engine to start
    load_seconds = time.perf_counter() - start
    with tqdm(total=len(data.rows), initial=len(data.rows) - len(todo), desc=f"eval {cfg.dataset}", unit="problem",
              disable=not cfg.progress) as bar:
        for b in range(0, len(todo), cfg.batch_size):
            batch = todo[b: b + cfg.batch_size]
            rows = _score_batch(loaded, batch, [ids[r["id"]] for r in batch], [texts[r["id"]] for r in batch],
                                cfg, sampling, engine, style.program_mode)
            store.append(rows)
            for r in rows:
                done.setdefault(r["id"], []).append(r)
            bar.update(len(batch))
            bar.set_postfix(acc=f"{_running_accuracy(done, data):.3f}")
    getattr(engine, "close", lambda: None)()  # vLLM: its temporary folder (its memory: see vllm_engine)
    problems = {r["id"]: done[r["id"]] for r in data.rows}
    info = {"model": loaded.description, "dataset": cfg.dataset, "source": data.source, "split": cfg.split,
            "limit": cfg.limit, "prompt_style": style.label,
            "settings": {"n": cfg.n, "temperature": cfg.temperature, "top_p": cfg.top_p,
                         "max_new_tokens": cfg.max_new_tokens, "precision": cfg.precision, "seed": cfg.seed,
                         "batch_size": cfg.batch_size, "device": str(device), "threads": torch.get_num_threads(),
                         "backend": engine.name if engine is not None else cfg.backend,
                         "engine_load_seconds": round(load_seconds, 2)},
            "wall_seconds_this_session": round(time.perf_counter() - start, 2)}
    summary = summarize(problems, cfg.k, data_report=data.report(), info=info)
    write_summary(out_dir, summary)
    return summary


def _running_accuracy(done: dict[str, list[dict[str, Any]]], data: EvalSet) -> float:
    flags = [r["verdict"] == "correct" for p in data.rows for r in done.get(p["id"], [])]
    return sum(flags) / len(flags) if flags else 0.0
