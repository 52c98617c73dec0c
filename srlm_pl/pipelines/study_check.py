"""A study's dry run: every stage parsed by the CLI, its data and models looked up, and a GPU-hour estimate.

What is checked: each (arm) pipeline's stages parse and instantiate through the CLI (types, class paths, module
argument checks; seeds differ only in seed arguments), every local data file, model folder and evaluation set
exists, and hub ids are listed as ``not checked`` (``in the local cache`` when huggingface_hub has their config).

The estimate multiplies each stage's work by throughputs measured on one H100 by ``tools/gpu_check.py``
(``docs/results/gpu_check_h100.json``: SFT and KD training tokens/s, GRPO generation and training tokens/s, all for
the 0.5B policy in bf16 autocast). Work per stage comes from its parsed config: SFT/KD tokens = rows seen x tokens
per row; GRPO = steps x prompts x G x (generation of ``max_new_tokens`` + training on prompt + completion);
evaluation = problems x samples x the expected completion length. Rows and tokens per row of a local JSONL are
counted (4 characters per token); hub datasets use the study file's ``estimate`` table. Every completion is
assumed to run to ``max_new_tokens`` in GRPO and in validation (an upper bound; validation = runs x
``val_generation.num_prompts`` x its ``max_new_tokens``), dynamic-sampling refills are not counted. With packing a
training step holds ``max_length`` tokens of several examples, so ``max_steps`` is converted to examples by
``max_length / tokens per example``.
"""

from __future__ import annotations

import functools
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from srlm_pl.pipelines.spec import PipelineError
from srlm_pl.pipelines.study_file import StudySpec, arm_pipeline

THROUGHPUT_FILE = Path(__file__).resolve().parents[2] / "docs" / "results" / "gpu_check_h100.json"
CHARS_PER_TOKEN = 4.0
DEFAULT_TOKENS_PER_ROW = 400
EVAL_SETS = {"gsm8k": 1319, "math500": 500, "svamp": 1000, "amc23": 40, "aime24": 30}  # test rows (full sets)


@dataclass
class Throughput:
    """Tokens per second on the measured GPU."""

    device: str
    sft: float
    kd: float
    generation: float
    grpo_train: float

    @classmethod
    def load(cls, path: Path = THROUGHPUT_FILE) -> Throughput:
        raw = json.loads(path.read_text())
        return cls(raw["device"], raw["sft"]["tokens_per_s"], raw["kd"]["tokens_per_s"],
                   raw["grpo"]["generation_tokens_per_s"], raw["grpo"]["train_tokens_per_s"])


LOCAL_ROOTS = ("runs", "data", "models", "checkpoints", "outputs")  # "runs/x" is a missing folder, not a hub id


@functools.lru_cache(maxsize=1)
def _cached_repos() -> frozenset[str]:
    """Repo ids (models and datasets) in the local Hugging Face cache, scanned once."""
    try:
        from huggingface_hub import scan_cache_dir

        return frozenset(repo.repo_id for repo in scan_cache_dir().repos)
    except Exception:  # noqa: BLE001 (no cache folder yet, or an old hub client: nothing cached)
        return frozenset()


def reference(value: str | None) -> str:
    """How a model or data reference resolves here: ``local``, ``missing``, ``built-in`` or a hub-id status."""
    if value is None or value in ("tiny", "builtin", "builtin_code", "humaneval"):
        return "built-in"
    if Path(value).exists():
        return "local"
    looks_local = value.startswith((".", "/", "~")) or value.endswith((".jsonl", ".json", ".parquet"))
    if looks_local or value.count("/") != 1 or value.split("/")[0] in LOCAL_ROOTS:
        return "missing"
    return "hub id, in the local cache" if value in _cached_repos() else "hub id, not checked (offline)"


def _rows_tokens(source: dict[str, Any], table: dict[str, Any]) -> tuple[int, float, str]:
    """Rows and mean tokens per row of a data source, and where the numbers come from."""
    path = str(source.get("path"))
    if path == "builtin":
        return int(source["builtin"]["num_problems"]), 120.0, "built-in generator (~120 tokens)"
    files = [Path(path)] if Path(path).is_file() else sorted(Path(path).glob(f"{source.get('split')}.jsonl"))
    if files:
        lines = files[0].read_text(encoding="utf-8").splitlines()
        rows = len(lines) - int(source.get("offset") or 0)
        if source.get("limit"):
            rows = min(rows, int(source["limit"]))
        chars = sum(len(line) for line in lines) / max(1, len(lines))
        return max(rows, 0), chars / CHARS_PER_TOKEN, f"counted in {files[0]}"
    known = table.get(path)
    if known is None:
        return 1000, DEFAULT_TOKENS_PER_ROW, f"{path}: not in the estimate table: 1000 x {DEFAULT_TOKENS_PER_ROW}"
    rows = int(known["rows"]) if not source.get("limit") else min(int(known["rows"]), int(source["limit"]))
    return rows, float(known["tokens"]), f"estimate table ({known['rows']} rows x {known['tokens']} tokens)"


def _validation_seconds(trainer: dict[str, Any], init: dict[str, Any], batches: float, epochs: float,
                        tp: Throughput) -> float:
    """Generation-based validation: runs x prompts x ``max_new_tokens`` (every completion at its full budget); an
    integer ``val_check_interval`` counts training batches (micro-batches), as Lightning does."""
    val = init.get("val_generation") or {}
    prompts, new = int(val.get("num_prompts") or 0), int(val.get("max_new_tokens") or 0)
    if not prompts or trainer.get("limit_val_batches") == 0:
        return 0.0
    interval = trainer.get("val_check_interval")
    if isinstance(interval, int) and interval > 1:
        runs = batches / interval  # every k training batches
    else:  # a fraction of an epoch (1.0 by default)
        runs = epochs / float(interval or 1.0)
    runs += 1 if trainer.get("num_sanity_val_steps") == -1 else 0
    return runs * prompts * new / tp.generation


def stage_seconds(cfg: dict[str, Any], tp: Throughput, table: dict[str, Any]) -> tuple[float, str]:
    """Estimated GPU seconds of one parsed stage config (training + validation), and how they were computed."""
    trainer, init = cfg["trainer"], cfg["model"]["init_args"]
    data = cfg["data"]["init_args"]
    module = cfg["model"]["class_path"].rsplit(".", 1)[-1]
    rows, tokens, source = _rows_tokens(data["train"], table)
    micro, accumulate = int(data.get("batch_size") or 1), int(trainer.get("accumulate_grad_batches") or 1)
    max_steps = int(trainer.get("max_steps") or -1)
    max_epochs = trainer.get("max_epochs")
    if max_epochs is None or int(max_epochs) < 0:  # Lightning: max_steps ends the run, else its default 1000 epochs
        epochs = math.inf if max_steps > 0 else 1000.0
    else:
        epochs = float(max_epochs)
    if module == "GRPOModule":
        steps = max_steps if max_steps > 0 else int(epochs * rows // micro)
        completions = steps * micro * int(init["num_generations"])
        new = int(init["max_new_tokens"])
        seconds = completions * new / tp.generation + completions * (new + tokens) / tp.grpo_train
        val = _validation_seconds(trainer, init, steps, steps * micro / max(rows, 1), tp)
        return seconds + val, (f"{steps} steps x {completions // max(steps, 1)} completions x {new} tokens "
                               f"+ validation {val / 3600:.2f} h; {source}")
    # rows seen: whole epochs, or max_steps x batch when that ends the run first; a packed row holds
    # max_length tokens of several examples, so max_steps counts packed rows, not examples
    per_step = micro * accumulate * (data["max_length"] / tokens if data.get("packing") else 1)
    seen = epochs * rows if max_steps <= 0 else min(epochs * rows, max_steps * per_step)
    batches = seen / (micro * (data["max_length"] / tokens if data.get("packing") else 1))
    val = _validation_seconds(trainer, init, batches, seen / max(rows, 1), tp)
    total = seen * tokens
    if module == "DistillModule":
        lmbda, new = float(init.get("lmbda") or 0.0), int(init.get("max_new_tokens") or 0)
        seconds = total / tp.kd + lmbda * seen * new / tp.generation + val
        return seconds, (f"{seen:.0f} rows x {tokens:.0f} tokens at KD speed (+ on-policy sampling {lmbda:g}) "
                         f"+ validation {val / 3600:.2f} h; {source}")
    return total / tp.sft + val, (f"{seen:.0f} rows x {tokens:.0f} tokens at SFT speed + validation "
                                  f"{val / 3600:.2f} h; {source}")


def eval_seconds(spec: StudySpec, tp: Throughput, completion_tokens: float) -> tuple[float, str]:
    """GPU seconds to evaluate one model on every test set (greedy, plus sampled avg@n when set)."""
    limit = spec.eval_settings.get("limit")
    problems = sum(min(EVAL_SETS.get(d, 200), limit or 10**9) for d in spec.datasets)
    samples = 1 + (int(spec.sampled["n"]) if spec.sampled else 0)
    budget = float(spec.eval_settings.get("max_new_tokens", 512))
    tokens = min(budget, completion_tokens)
    return problems * samples * tokens / tp.generation, f"{problems} problems x {samples} samples x {tokens:.0f} tokens"


def dry_run(spec: StudySpec, out: str | Path, estimate: dict[str, Any] | None = None) -> str:
    """Check the study and return the report: references, the stage list and the GPU-hour estimate.

    Raises ``PipelineError`` for a stage that does not parse, a missing local file or folder, or a missing test set.
    """
    from srlm_pl.evaluation.datasets import eval_source, load_eval_set
    from srlm_pl.pipelines.runner import parse_stage_cli, stage_args

    estimate = estimate if estimate is not None else spec.estimate
    tp = Throughput.load()
    table = estimate.get("data", {})
    completion_tokens = float(estimate.get("mean_completion_tokens", 1024))
    lines = [f"# Dry run of study {spec.name} ({spec.path})", ""]
    refs: dict[str, str] = {}
    total = 0.0
    stage_lines = ["| arm | stage | configs | starts from | GPU h per seed | work |", "|---|---|---|---|---|---|"]
    for arm in spec.arms:
        refs[arm.model] = reference(arm.model)
        built = arm_pipeline(spec, arm, spec.seeds[0])
        folder = Path(out) / arm.key / f"seed{spec.seeds[0]}" / "stages"
        for i, stage in enumerate(built.pipeline.stages):
            cli = parse_stage_cli(stage_args(folder, built.pipeline, i), stage)
            cfg = cli.config.as_dict()
            for value in _references(cfg):
                refs[value] = reference(value)
            seconds, how = stage_seconds(cfg, tp, table)
            total += seconds * len(spec.seeds)
            start = stage.init if stage.init != "config" else arm.model
            stage_lines.append(f"| {arm.key} | {stage.name} | {', '.join(stage.config)} | {start} | "
                               f"{seconds / 3600:.2f} | {how} |")
    models = len(spec.arms) * len(spec.seeds) * (len(spec.recipes) + 1)
    ev_s, ev_how = eval_seconds(spec, tp, completion_tokens)
    total += models * ev_s
    missing = [k for k, v in refs.items() if v == "missing"]
    for dataset in spec.datasets:
        src = eval_source(dataset, data_root=spec.eval_settings.get("data_root", "../shared/data"),
                          limit=spec.eval_settings.get("limit"), builtin=spec.eval_settings.get("builtin"))
        try:
            n = len(load_eval_set(src, dataset).rows)
            refs[f"test set {dataset}"] = f"local, {n} problems"
        except Exception as err:  # noqa: BLE001 (reported below as missing)
            refs[f"test set {dataset}"] = "missing"
            missing.append(f"test set {dataset}: {err}")
    lines += ["References:", "", *[f"- `{k}`: {v}" for k, v in refs.items()], "",
              f"Stages ({len(spec.seeds)} seed(s) each; identical stages of several recipes train once):", "",
              *stage_lines, "",
              f"Evaluation: {models} models x ({ev_how}) = {models * ev_s / 3600:.1f} GPU h.", "",
              f"Estimate: {math.ceil(total / 360) / 10:.1f} GPU hours on one {tp.device} "
              f"(throughputs of {THROUGHPUT_FILE.name}; see srlm_pl.pipelines.study_check for the assumptions)."]
    if missing:
        raise PipelineError("study " + spec.name + ": missing: " + "; ".join(missing) + "\n" + "\n".join(lines))
    return "\n".join(lines)


def _references(cfg: dict[str, Any]) -> list[str]:
    init, data = cfg["model"]["init_args"], cfg["data"]["init_args"]
    out = [init["policy"]["name_or_path"]]
    if isinstance(init.get("teacher"), dict):
        out.append(init["teacher"]["name_or_path"])
    if init.get("teacher_logits"):
        out.append(str(init["teacher_logits"]))
    for split in ("train", "val"):
        if isinstance(data.get(split), dict):
            out.append(str(data[split]["path"]))
    return [o for o in out if o and "/export/" not in o]
