"""Evaluate a model on a math or code problem set (HumanEval, built-in code tasks): greedy pass@1, or pass@k / maj@k
with --n samples per problem.

    python tools/evaluate.py --model runs/quickstart/export/final --dataset builtin --out runs/eval/quickstart
    python tools/evaluate.py --help

The implementation is ``srlm_pl.evaluation`` (also ``python -m srlm_pl.evaluation``).
"""

import sys

from srlm_pl.evaluation.cli import main

if __name__ == "__main__":
    sys.exit(main())
