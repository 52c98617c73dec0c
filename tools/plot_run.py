"""Plot a run's training curves (loss, reward, accuracy, completion length, KL) as PNG files.

    python tools/plot_run.py runs/grpo_tiny                 # -> runs/grpo_tiny/plots/*.png
    python tools/plot_run.py runs/pipelines/sft_grpo --out /tmp/plots   # every stage, one line each

Reads ``metrics.csv`` (CSV logger) and TensorBoard event files under RUN_DIR; groups without data are skipped.
"""

import argparse
import sys

from srlm_pl.evaluation.plots import plot_run


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("run_dir", help="a run folder (trainer.default_root_dir), a logs folder, or a pipeline folder")
    p.add_argument("--out", help="output folder (default RUN_DIR/plots)")
    a = p.parse_args(argv)
    try:
        written = plot_run(a.run_dir, a.out)
    except FileNotFoundError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    if not written:
        print(f"no loss/reward/accuracy/length/KL metrics found under {a.run_dir}", file=sys.stderr)
        return 1
    print("\n".join(str(p) for p in written))
    return 0


if __name__ == "__main__":
    sys.exit(main())
