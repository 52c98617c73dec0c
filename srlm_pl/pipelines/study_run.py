"""Running a study file: train every (arm, seed) pipeline, evaluate every model on every test set, write the table.

Layout of ``out``: ``<arm>/seed<k>/stages/<stage>/`` (a stage folder per merged stage, named after it, so adding or
reordering recipes moves nothing), its evaluations in ``<stage>/study_eval/<dataset>/{greedy,sampled}`` (resumable;
removed with the stage by ``restart_from``), the untrained models' in ``<arm>/untrained/``, and
``study.{md,json,png}``. A rerun of the same command skips finished stages and evaluations and resumes an interrupted
one.
"""

from __future__ import annotations

import json
import statistics
import time
from pathlib import Path
from typing import Any

from srlm_pl.pipelines.spec import PipelineError
from srlm_pl.pipelines.study_file import Arm, StudySpec, arm_pipeline

UNTRAINED = "untrained"


def _eval(model: str, dataset: str, folder: Path, spec: StudySpec, *, extra: dict[str, Any], seed: int,
          sampled: bool) -> dict[str, Any]:
    from srlm_pl.evaluation.harness import EvalConfig, run_evaluation

    settings: dict[str, Any] = {"progress": False, **spec.eval_settings, **extra}
    if sampled:
        assert spec.sampled is not None
        settings.update(spec.sampled)
        settings["k"] = [1]
        settings["seed"] = seed
    return run_evaluation(EvalConfig(model=model, dataset=dataset, **settings), folder)


def evaluate_model(model: str, folder: Path, spec: StudySpec, *, seed: int, extra: dict[str, Any] | None = None,
                   greedy_folder: Path | None = None) -> dict[str, Any]:
    """Greedy pass@1 (and sampled avg@n when the study asks) of one model on every test set; ``extra``: EvalConfig
    fields over the study's (default ``prompt_style: auto``); greedy runs go to ``greedy_folder`` when given (an
    untrained model's greedy answers do not depend on the seed)."""
    extra = {"prompt_style": "auto", **(extra or {})}
    out: dict[str, Any] = {}
    for dataset in spec.datasets:
        entry = {"greedy": _eval(model, dataset, (greedy_folder or folder) / dataset / "greedy", spec, extra=extra,
                                 seed=seed, sampled=False)}
        if spec.sampled is not None:
            entry["sampled"] = _eval(model, dataset, folder / dataset / "sampled", spec, extra=extra, seed=seed,
                                     sampled=True)
        out[dataset] = entry
    return out


def _score(summary: dict[str, Any]) -> dict[str, Any]:
    return {"accuracy": summary["accuracy"], "problems": summary["problems"],
            "no_answer_rate": summary["no_answer_rate"], "mean_completion_tokens": summary["mean_completion_tokens"],
            "truncated": summary["truncated"], "samples_per_problem": summary["samples_per_problem"]}


def run_arm_seed(spec: StudySpec, arm: Arm, seed: int, out: Path, *, launcher: str, threads: int,
                 restart_from: str | None = None) -> list[dict]:
    """Train one (arm, seed) pipeline and evaluate each recipe's model; returns one row per recipe."""
    from srlm_pl.pipelines.runner import export_dir, run_pipeline, stage_dir

    built = arm_pipeline(spec, arm, seed)
    stages_out = out / arm.key / f"seed{seed}" / "stages"
    result = run_pipeline(built.pipeline, stages_out, launcher=launcher, threads=threads,  # type: ignore[arg-type]
                          restart_from=restart_from)
    seconds = {s["stage"]: s["train_seconds"] for s in result["stages"]}
    rows = []
    for recipe in spec.recipes:
        stage = built.final_stage[recipe.key]
        model = str(export_dir(stages_out, built.pipeline, stage))
        evals = evaluate_model(model, stage_dir(stages_out, built.pipeline, stage) / "study_eval", spec, seed=seed)
        chain = _chain(built, stage)
        rows.append({"arm": arm.key, "seed": seed, "recipe": recipe.key, "model": model, "stages": chain,
                     "train_seconds": round(sum(seconds[s] for s in chain), 1),
                     "eval": {d: {m: _score(s) for m, s in e.items()} for d, e in evals.items()}})
    return rows


def _chain(built: Any, stage: str) -> list[str]:
    """The stages a recipe's model went through, first to last."""
    pipe = built.pipeline
    names = [stage]
    while True:
        current = pipe.stages[pipe.index(names[0])]
        if current.init in ("config", "previous"):
            return names
        names.insert(0, current.init)


def run_study_file(spec: StudySpec, out: str | Path, *, launcher: str = "subprocess", threads: int = 0,
                   restart_from: str | None = None) -> dict[str, Any]:
    """Run (or resume) the whole study; writes ``study.md``, ``study.json`` and ``study.png`` into ``out``.

    ``restart_from``: a merged stage name (``sft``, ``sft_kd_grpo.kd``, ...: the dry run lists them) to retrain, with
    every later stage of its pipeline and their evaluations, in every arm and seed.
    """
    out = Path(out)
    start = time.perf_counter()
    if threads > 0:
        import torch

        torch.set_num_threads(threads)
    from srlm_pl.pipelines.runner import validate

    for arm in spec.arms:  # every stage parses before anything trains (seeds differ only in their seed arguments)
        built = arm_pipeline(spec, arm, spec.seeds[0])
        validate(built.pipeline, out / arm.key / f"seed{spec.seeds[0]}" / "stages")
        if restart_from is not None and restart_from not in [s.name for s in built.pipeline.stages]:
            raise PipelineError(f"--restart_from {restart_from!r}: no such stage; stages: "
                                f"{[s.name for s in built.pipeline.stages]}")
    rows: list[dict[str, Any]] = []
    for arm in spec.arms:
        for seed in spec.seeds:
            evals = evaluate_model(arm.model, out / arm.key / UNTRAINED / f"seed{seed}", spec, seed=seed,
                                   extra=arm.evaluation, greedy_folder=out / arm.key / UNTRAINED)
            rows.append({"arm": arm.key, "seed": seed, "recipe": UNTRAINED, "model": arm.model, "stages": [],
                         "train_seconds": 0.0,
                         "eval": {d: {m: _score(s) for m, s in e.items()} for d, e in evals.items()}})
            rows += run_arm_seed(spec, arm, seed, out, launcher=launcher, threads=threads, restart_from=restart_from)
            report = {"study": spec.name, "file": spec.path, "rows": rows,
                      "wall_seconds": round(time.perf_counter() - start, 1)}
            write_report(spec, report, out)
    return report


def cell(values: list[float]) -> str:
    """Mean over seeds in percent, with the standard deviation when there are several seeds."""
    if not values:
        return "-"
    mean = 100 * statistics.fmean(values)
    return f"{mean:.1f}" if len(values) == 1 else f"{mean:.1f} ± {100 * statistics.stdev(values):.1f}"


def table(spec: StudySpec, rows: list[dict[str, Any]], mode: str) -> list[str]:
    """The paper's layout: one block per arm, a row per recipe, a column per test set, then the average."""
    head = ["model", "recipe", *spec.datasets, "avg"]
    lines = ["| " + " | ".join(head) + " |", "|" + "|".join("---" for _ in head) + "|"]
    labels = {UNTRAINED: "none (as released)", **{r.key: r.label for r in spec.recipes}}
    for arm in spec.arms:
        for recipe in [UNTRAINED, *(r.key for r in spec.recipes)]:
            mine = [r for r in rows if r["arm"] == arm.key and r["recipe"] == recipe]
            if not mine:
                continue
            per_set = [[r["eval"][d][mode]["accuracy"] for r in mine if mode in r["eval"].get(d, {})]
                       for d in spec.datasets]
            averages = [statistics.fmean(r["eval"][d][mode]["accuracy"] for d in spec.datasets) for r in mine
                        if all(mode in r["eval"].get(d, {}) for d in spec.datasets)]
            lines.append(f"| {arm.label} | {labels[recipe]} | " + " | ".join(cell(v) for v in per_set)
                         + f" | {cell(averages)} |")
    return lines


def write_report(spec: StudySpec, report: dict[str, Any], out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    seeds = len(spec.seeds)
    lines = [f"# Study {spec.name}", "", spec.description, "",
             f"Greedy pass@1 (%), mean{' ± std' if seeds > 1 else ''} over {seeds} seed(s):", "",
             *table(spec, report["rows"], "greedy")]
    if spec.sampled is not None:
        lines += ["", f"Sampled avg@{spec.sampled.get('n')} (%, temperature {spec.sampled.get('temperature')}):", "",
                  *table(spec, report["rows"], "sampled")]
    lines += ["", "Completion length and failures (first seed, greedy): mean tokens / no-answer rate / truncated", "",
              *length_table(spec, report["rows"]), "",
              f"Wall time of the run that wrote this file: {report['wall_seconds']:.0f} s (a resumed run counts only "
              "its own part). Models, stage folders and evaluation files: `study.json`."]
    (out / "study.md").write_text("\n".join(lines) + "\n")
    (out / "study.json").write_text(json.dumps(report, indent=2, ensure_ascii=False) + "\n")
    plot(spec, report["rows"], out / "study.png")


def length_table(spec: StudySpec, rows: list[dict[str, Any]]) -> list[str]:
    head = ["model", "recipe", *spec.datasets]
    lines = ["| " + " | ".join(head) + " |", "|" + "|".join("---" for _ in head) + "|"]
    first = spec.seeds[0]
    for r in rows:
        if r["seed"] != first:
            continue
        arm = next(a.label for a in spec.arms if a.key == r["arm"])
        cells = []
        for d in spec.datasets:
            g = r["eval"][d]["greedy"]
            cells.append(f"{g['mean_completion_tokens']:.0f} / {100 * g['no_answer_rate']:.0f}% / {g['truncated']}")
        lines.append(f"| {arm} | {r['recipe']} | " + " | ".join(cells) + " |")
    return lines


def plot(spec: StudySpec, rows: list[dict[str, Any]], path: Path) -> None:
    """Grouped bars: one panel per test set, a bar per recipe and arm (greedy pass@1, mean over seeds)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    recipes = [UNTRAINED, *(r.key for r in spec.recipes)]
    fig, axes = plt.subplots(1, len(spec.datasets), figsize=(3.2 * len(spec.datasets) + 1, 3.6), squeeze=False)
    width = 0.8 / max(1, len(spec.arms))
    for ax, dataset in zip(axes[0], spec.datasets, strict=True):
        for j, arm in enumerate(spec.arms):
            values = []
            for recipe in recipes:
                acc = [r["eval"][dataset]["greedy"]["accuracy"] for r in rows
                       if r["arm"] == arm.key and r["recipe"] == recipe]
                values.append(100 * statistics.fmean(acc) if acc else 0.0)
            ax.bar([i + j * width for i in range(len(recipes))], values, width, label=arm.label)
        ax.set_title(dataset)
        ax.set_xticks([i + width * (len(spec.arms) - 1) / 2 for i in range(len(recipes))])
        ax.set_xticklabels(recipes, rotation=60, ha="right", fontsize=7)
        ax.set_ylabel("greedy pass@1 (%)")
    axes[0][0].legend(fontsize=7)
    fig.suptitle(f"Study {spec.name}")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
