"""Built-in callbacks."""

from srlm_pl.callbacks.checkpoint import Checkpoint
from srlm_pl.callbacks.export import HFExport
from srlm_pl.callbacks.samples import SampleLogger

__all__ = ["Checkpoint", "HFExport", "SampleLogger"]
