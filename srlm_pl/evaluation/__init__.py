"""Evaluation harness: problems → prompts → batched generation → verifier → predictions JSONL → summary.

``run_evaluation(EvalConfig(model=..., dataset=...), out_dir)`` is the API; ``tools/evaluate.py`` the command.
Files: ``prompts.py`` (prompt styles per dataset), ``datasets.py`` (problems, rows without answers counted),
``loading.py`` (model folders, GGUF, Lightning checkpoints), ``predictions.py`` (resumable predictions file),
``harness.py`` (the loop), ``summary.py`` (accuracy, pass@k, maj@k, reports), ``plots.py`` (curves, bar charts).
"""

from srlm_pl.evaluation.harness import EvalConfig, run_evaluation
from srlm_pl.evaluation.predictions import EvalError

__all__ = ["EvalConfig", "EvalError", "run_evaluation"]
