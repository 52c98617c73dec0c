"""A callback that crashes a run once (while a flag file is absent), for the pipeline resume tests."""

from pathlib import Path

from lightning.pytorch.callbacks import Callback


class CrashOnceAtStep(Callback):
    def __init__(self, step: int, flag: str) -> None:
        self.step, self.flag = step, Path(flag)

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:  # noqa: ANN001
        if trainer.global_step == self.step and not self.flag.exists():
            self.flag.write_text("crashed once\n")
            raise RuntimeError(f"simulated crash at step {self.step}")
