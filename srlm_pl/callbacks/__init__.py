"""Built-in callbacks."""

from srlm_pl.callbacks.checkpoint import Checkpoint
from srlm_pl.callbacks.export import HFExport

__all__ = ["Checkpoint", "HFExport"]
