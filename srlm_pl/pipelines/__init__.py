"""Hybrid pipelines: stages (full CLI configs plus overrides) run in order, each from the previous stage's export.

``load_pipeline(path)`` parses a pipeline file (``spec.py``), ``run_pipeline(pipeline, out)`` validates every stage
and runs them with resumption (``runner.py``); ``python -m srlm_pl.pipelines`` / ``tools/run_pipeline.py`` is the
command, ``study.py`` the small-scale comparison of recipes behind ``tools/run_study.py``.
"""

from srlm_pl.pipelines.runner import StageFailed, run_pipeline, validate
from srlm_pl.pipelines.spec import Pipeline, PipelineError, Stage, load_pipeline

__all__ = ["Pipeline", "PipelineError", "Stage", "StageFailed", "load_pipeline", "run_pipeline", "validate"]
