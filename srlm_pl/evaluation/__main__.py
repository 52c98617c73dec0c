"""``python -m srlm_pl.evaluation --model ... --dataset ... --out ...`` (same as ``tools/evaluate.py``)."""

import sys

from srlm_pl.evaluation.cli import main

sys.exit(main())
