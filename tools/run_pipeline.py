"""Run a hybrid pipeline (stages chained through their Hugging Face exports), with resumption.

    python tools/run_pipeline.py configs/pipelines/sft_grpo.yaml --out runs/pipelines/sft_grpo
    python tools/run_pipeline.py --help

The implementation is ``srlm_pl.pipelines`` (also ``python -m srlm_pl.pipelines``).
"""

import sys

from srlm_pl.pipelines.__main__ import main

if __name__ == "__main__":
    sys.exit(main())
