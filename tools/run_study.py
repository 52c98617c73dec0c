"""Run a study: every recipe x model arm x seed of a study file, evaluated on several test sets (the paper's study:
configs/paper/studies/paper.yaml), or the study in miniature (no study file: base, SFT, LoRA-SFT, KD, GRPO, SFT→GRPO and
KD→GRPO from one tiny or SmolLM2 base model on the same held-out problems). Both write study.md, study.json, study.png.

    python tools/run_study.py configs/paper/studies/paper.yaml --dry-run   # check all stages, list them, GPU hours
    python tools/run_study.py configs/paper/studies/paper.yaml --out runs/study/paper
    python tools/run_study.py configs/paper/studies/tiny.yaml             # both arms' recipe files, tiny models, CPU

Study in miniature:
    python tools/run_study.py                          # tiny preset, offline CPU (see docs/evaluation.md for timing)
    python tools/run_study.py --model smollm2 --out runs/study/smollm2 --sft_steps 60 ...
    python tools/run_study.py --teacher large          # KD from a bigger tiny teacher trained on the side

A rerun of the same command resumes (finished recipes are skipped). Implementation: ``srlm_pl.pipelines.study``.
"""

import argparse
import dataclasses
import os
import sys
import time
import typing

from srlm_pl.evaluation.cli import log_to_console
from srlm_pl.evaluation.predictions import EvalError
from srlm_pl.pipelines import PipelineError, StageFailed
from srlm_pl.pipelines.study import StudyConfig, run_study


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    hints = typing.get_type_hints(StudyConfig)
    for f in dataclasses.fields(StudyConfig):
        kind = hints[f.name]
        choices = typing.get_args(kind) if typing.get_origin(kind) is typing.Literal else None
        base = next((t for t in typing.get_args(kind) if t is not type(None)), kind)  # int | None -> int
        default = "per model (MODEL_DEFAULTS)" if f.default is None else f.default
        p.add_argument(f"--{f.name}", default=f.default, choices=choices, type=None if choices else base,
                       help=f"default: {default}")
    p.add_argument("study", nargs="?", help="a study file (configs/paper/*.yaml study files); none: the miniature")
    p.add_argument("--dry-run", action="store_true", help="study file: check every stage, data and model, print the "
                   "stage list and a GPU-hour estimate; train nothing")
    p.add_argument("--out", help="output folder (default runs/study/<model or study name>)")
    p.add_argument("--threads", type=int, default=0, help="CPU threads per stage (0: torch's default; 1 on a busy CPU)")
    p.add_argument("--restart_from", help="redo this recipe (a study file: this stage, in every arm and seed) and "
                   "every later one, after changing its settings")
    p.add_argument("--in_process", action="store_true", help="run stages in this process (default: subprocesses)")
    a = p.parse_args(argv)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    log_to_console()
    if a.study:
        return study_file_main(a)
    if a.dry_run:
        p.error("--dry-run needs a study file (e.g. configs/paper/studies/paper.yaml)")
    cfg = StudyConfig(**{f.name: getattr(a, f.name) for f in dataclasses.fields(StudyConfig)})
    out = a.out or f"runs/study/{cfg.model}"
    start = time.perf_counter()
    try:
        report = run_study(cfg, out, launcher="inprocess" if a.in_process else "subprocess",
                           threads=a.threads, restart_from=a.restart_from)
    except (PipelineError, StageFailed, FileNotFoundError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(open(os.path.join(out, "study.md"), encoding="utf-8").read())
    print(f"wall time {time.perf_counter() - start:.0f} s; files: {out}/study.md, study.json, study.png")
    return 0 if report["rows"] else 1


def study_file_main(a: argparse.Namespace) -> int:
    from srlm_pl.pipelines.study_file import load_study
    from srlm_pl.pipelines.study_run import run_study_file

    start = time.perf_counter()
    try:
        spec = load_study(a.study)
        out = a.out or f"runs/study/{spec.name}"
        if a.dry_run:
            from srlm_pl.pipelines.study_check import dry_run

            print(dry_run(spec, out))
            return 0
        run_study_file(spec, out, launcher="inprocess" if a.in_process else "subprocess", threads=a.threads,
                       restart_from=a.restart_from)
    except (PipelineError, StageFailed, EvalError, FileNotFoundError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(open(os.path.join(out, "study.md"), encoding="utf-8").read())
    print(f"wall time {time.perf_counter() - start:.0f} s; files: {out}/study.md, study.json, study.png")
    return 0


if __name__ == "__main__":
    sys.exit(main())
