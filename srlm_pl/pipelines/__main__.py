"""``python -m srlm_pl.pipelines PIPELINE.yaml --out runs/pipelines/NAME`` (same as ``tools/run_pipeline.py``).

Validates every stage's config first, then runs the stages in order, each from the previous stage's export, in
``<out>/<i>_<name>``; finished stages are skipped on a rerun and a failed stage resumes from its last checkpoint.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from srlm_pl.evaluation.cli import log_to_console
from srlm_pl.pipelines.runner import StageFailed, run_pipeline, validate
from srlm_pl.pipelines.spec import PipelineError, load_pipeline


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("pipeline", help="pipeline YAML file (configs/pipelines/*.yaml)")
    p.add_argument("--out", help="output folder (default runs/pipelines/<pipeline name>)")
    p.add_argument("--restart_from", help="delete this stage's folder and every later one, then run from it")
    p.add_argument("--validate_only", action="store_true", help="check every stage and exit")
    p.add_argument("--in_process", action="store_true", help="run stages in this process (default: subprocesses)")
    p.add_argument("--threads", type=int, default=0, help="CPU threads per stage (0: torch's default; 1 on a busy CPU)")
    p.add_argument("--backend", choices=("hf", "vllm", "auto"),
                   help="generation engine of the pipeline's evaluations (default: its evaluation.backend, else hf)")
    p.add_argument("--verbose", action="store_true", help="stream each stage's output (it always goes to stage.log)")
    a = p.parse_args(argv)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    log_to_console()
    try:
        pipe = load_pipeline(a.pipeline)
        if a.backend:
            pipe.evaluation["backend"] = a.backend
        out = Path(a.out or Path("runs") / "pipelines" / pipe.name)
        if a.validate_only:
            validate(pipe, out)
            print(f"{a.pipeline}: {len(pipe.stages)} stages valid")
            return 0
        result = run_pipeline(pipe, out, launcher="inprocess" if a.in_process else "subprocess",
                              restart_from=a.restart_from, verbose=a.verbose, threads=a.threads)
    except (PipelineError, StageFailed) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print((Path(result["out"]) / "pipeline.md").read_text())
    return 0


if __name__ == "__main__":
    sys.exit(main())
