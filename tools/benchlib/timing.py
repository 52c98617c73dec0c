"""The one step timer of the benchmarks: a ``Clock`` stamps the begin and end of every step (synchronising the
device first), for a plain loop (``time_loop``) and for a Lightning fit (``StepTimer``) alike.

Two spans, as the TRL anchor measures them: ``step`` is the mean of end - begin over the timed steps (the
anchor's distillation and GRPO figures); ``interval`` is the time between the end of the last untimed step and
the end of the last timed one, divided by the timed steps, so data loading between steps counts (its SFT
figure). The first ``warmup`` steps are never timed.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from typing import Any, Literal

Span = Literal["step", "interval"]


def synchronize(device: str) -> None:
    if device.startswith("cuda"):
        import torch

        torch.cuda.synchronize()


class Clock:
    """Begin and end stamps of every step."""

    def __init__(self, device: str = "cpu") -> None:
        self.device = device
        self.begins: list[float] = []
        self.ends: list[float] = []

    def begin(self) -> None:
        synchronize(self.device)
        self.begins.append(time.perf_counter())

    def end(self) -> None:
        synchronize(self.device)
        self.ends.append(time.perf_counter())

    def summary(self, warmup: int, span: Span = "step") -> dict[str, Any]:
        """``s_per_step`` over the steps after ``warmup``, with each timed step's own duration."""
        timed = [e - b for b, e in zip(self.begins[warmup:], self.ends[warmup:], strict=False)]
        if not timed:
            raise RuntimeError(f"no timed step: {len(self.ends)} steps ran, {warmup} of them warm-up")
        if span == "interval":
            start = self.ends[warmup - 1] if warmup > 0 else self.begins[0]
            s_per_step = (self.ends[-1] - start) / len(timed)
        else:
            s_per_step = sum(timed) / len(timed)
        return {"s_per_step": s_per_step, "s_per_step_median": statistics.median(timed), "steps": len(timed),
                "warmup": warmup, "step_times": [round(t, 4) for t in timed]}


def time_loop(step: Callable[[], Any], warmup: int, steps: int, device: str = "cpu") -> tuple[Clock, list[Any]]:
    """Run ``step`` ``warmup + steps`` times under a clock; returns the clock and every step's return value."""
    clock, values = Clock(device), []
    for _ in range(warmup + steps):
        clock.begin()
        values.append(step())
        clock.end()
    return clock, values


def step_timer(device: str = "cpu", metrics: tuple[str, ...] = ()) -> Any:
    """A Lightning callback timing every training step with a ``Clock``; it also keeps each batch's token counts
    (``num_tokens`` non-padding, ``cells`` = all positions) and the values of ``metrics`` the module logged."""
    from lightning.pytorch.callbacks import Callback

    class StepTimer(Callback):
        def __init__(self) -> None:
            self.clock = Clock(device)
            self.tokens: list[int] = []
            self.cells: list[int] = []
            self.logged: list[dict[str, float]] = []

        def on_train_batch_start(self, trainer: Any, module: Any, batch: Any, batch_idx: int) -> None:
            self.clock.begin()

        def on_train_batch_end(self, trainer: Any, module: Any, outputs: Any, batch: Any, batch_idx: int) -> None:
            self.clock.end()
            if isinstance(batch, dict) and "num_tokens" in batch:
                self.tokens.append(int(batch["num_tokens"]))
                self.cells.append(int(batch["input_ids"].numel()))
            logged = trainer.callback_metrics
            self.logged.append({k: float(logged[k]) for k in metrics if k in logged})

    return StepTimer()
