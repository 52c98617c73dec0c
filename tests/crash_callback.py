"""A callback that kills a run at a given step (simulates a crash for the resume tests)."""

from lightning.pytorch.callbacks import Callback


class CrashAtStep(Callback):
    def __init__(self, step: int) -> None:
        self.step = step

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:  # noqa: ANN001
        if trainer.global_step == self.step:
            raise RuntimeError(f"simulated crash at step {self.step}")
