"""The command line: ``python -m srlm_pl {fit,validate,test,predict} --config CONFIG.yaml``.

A ``LightningCLI`` in subclass mode for model and data, so ``model.class_path`` swaps the strategy
(``srlm_pl.SFTModule``, ``srlm_pl.DistillModule``, ``srlm_pl.GRPOModule``) and ``data.class_path`` the
data module. The policy spec is given once (``model.init_args.policy``) and linked to the data
module's tokenizer. The resolved config is saved next to the logs and overwritten on reruns.
"""

from __future__ import annotations

from jsonargparse import Namespace
from lightning.pytorch.cli import LightningCLI

from srlm_pl.callbacks.checkpoint import ResumeError, check_resume
from srlm_pl.data.datamodules import BaseDataModule
from srlm_pl.modules.base import PostTrainingModule

CSV_LOGGER = "lightning.pytorch.loggers.CSVLogger"
CHECKPOINT = "srlm_pl.callbacks.Checkpoint"


class SRLMCLI(LightningCLI):
    """LightningCLI with the policy → tokenizer link and run-folder defaults.

    Defaults filled in before instantiation (and saved with the config): a CSV logger under
    ``trainer.default_root_dir`` when no logger is configured, and a ``srlm_pl.callbacks.Checkpoint``
    (``last.ckpt`` in ``<default_root_dir>/checkpoints``) when no checkpoint callback is configured, so
    ``fit --ckpt_path last`` finds the interrupted run's checkpoint. Before fit, ``--ckpt_path last`` with no
    checkpoint there exits with an error naming the folder searched, and a fresh run over an existing
    ``last.ckpt`` warns that it starts over.
    """

    def add_arguments_to_parser(self, parser) -> None:  # noqa: ANN001 (jsonargparse parser)
        parser.link_arguments("model.init_args.policy", "data.init_args.tokenizer", apply_on="parse")

    def before_instantiate_classes(self) -> None:
        cfg = self.config[self.subcommand] if self.subcommand else self.config
        trainer = cfg.trainer
        check_strategy_fits_accelerator(trainer.strategy, trainer.accelerator)
        root = trainer.default_root_dir or "."
        if trainer.logger is None or trainer.logger is True:
            trainer.logger = Namespace(class_path=CSV_LOGGER, init_args=Namespace(save_dir=root, name="logs"))
        callbacks = trainer.callbacks or []
        callbacks = callbacks if isinstance(callbacks, list) else [callbacks]
        if self.subcommand == "fit" and trainer.enable_checkpointing is not False and not any(
                _is_checkpoint_callback(str(getattr(cb, "class_path", ""))) for cb in callbacks):
            callbacks.append(Namespace(class_path=CHECKPOINT, init_args=Namespace()))
            trainer.callbacks = callbacks

    def before_fit(self) -> None:
        try:
            check_resume(self.trainer, self.config_init[self.subcommand].get("ckpt_path"))
        except ResumeError as err:
            raise SystemExit(f"error: {err}") from None


def _is_checkpoint_callback(class_path: str) -> bool:
    """A ``ModelCheckpoint`` (or subclass) by name; ``OnExceptionCheckpoint`` does not replace the default one."""
    return "Checkpoint" in class_path and not class_path.endswith("OnExceptionCheckpoint")


def check_strategy_fits_accelerator(strategy: object, accelerator: object) -> None:
    """FSDP (v1) needs CUDA: fail at start, naming the alternatives, instead of deep inside Lightning."""
    import torch

    name = strategy if isinstance(strategy, str) else str(getattr(strategy, "class_path", ""))
    is_fsdp1 = name.startswith("fsdp") or name.endswith(("FSDPStrategy", "FSDPDecoderStrategy"))
    on_cpu = accelerator == "cpu" or (accelerator in (None, "auto") and not torch.cuda.is_available())
    if is_fsdp1 and on_cpu:
        raise ValueError(
            f"trainer.strategy={name!r} (FSDP) needs CUDA GPUs, but the accelerator is the CPU. On CPU use FSDP2 "
            "(--config configs/strategies/fsdp2.yaml, i.e. srlm_pl.parallel.FSDP2Strategy, which runs on gloo) "
            "or DDP (--config configs/strategies/ddp.yaml).")


def main(args: list[str] | None = None, run: bool = True) -> SRLMCLI:
    """Run the CLI (``args`` instead of ``sys.argv``; ``run=False`` only parses and instantiates)."""
    return SRLMCLI(
        PostTrainingModule, BaseDataModule, subclass_mode_model=True, subclass_mode_data=True,
        save_config_kwargs={"overwrite": True}, auto_configure_optimizers=False, args=args, run=run,
    )
