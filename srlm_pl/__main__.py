"""``python -m srlm_pl {fit,validate,test,predict} --config CONFIG.yaml``: the CLI, with srlm_pl's INFO messages
(data loading and length statistics, stage notes) on stderr."""

from srlm_pl.cli import main
from srlm_pl.evaluation.cli import log_to_console

if __name__ == "__main__":
    log_to_console()
    main()
