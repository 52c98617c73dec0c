"""Old module paths kept importable after the move to the layered layout, with a ``FutureWarning`` (shown by default:
the warning is meant for users' code, which Python's filters would hide a ``DeprecationWarning`` from).

``import srlm_pl.rollout`` (and ``from srlm_pl.rollout import ...``, or a ``class_path`` through it) returns the
module at its new path, the same module object, so monkeypatching either name patches both.
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.util
import sys
import warnings
from types import ModuleType

MOVED = {
    "srlm_pl.head_input": "srlm_pl.models.forward",
    "srlm_pl.fast_decode": "srlm_pl.generation.fast_decode",
    "srlm_pl.linear_ce": "srlm_pl.ops.linear_ce",
    "srlm_pl.linear_logprob": "srlm_pl.ops.linear_logprob",
    "srlm_pl.fused_kd": "srlm_pl.ops.fused_kd",
    "srlm_pl.kd_batch": "srlm_pl.kd.batch",
    "srlm_pl.teacher": "srlm_pl.kd.teacher",
    "srlm_pl.rollout": "srlm_pl.rl.rollout",
    "srlm_pl.scoring": "srlm_pl.rl.scoring",
    "srlm_pl.logprobs": "srlm_pl.rl.logprobs",
}


class _Alias(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    def __init__(self) -> None:
        self._specs: dict[str, importlib.machinery.ModuleSpec] = {}

    def find_spec(self, fullname: str, path: object, target: object = None) -> importlib.machinery.ModuleSpec | None:
        if fullname not in MOVED:
            return None
        return importlib.util.spec_from_loader(fullname, self)

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> ModuleType:
        new = MOVED[spec.name]
        warnings.warn(f"{spec.name} moved to {new}; the old path will be removed", FutureWarning, stacklevel=2)
        module = importlib.import_module(new)
        self._specs[spec.name] = module.__spec__  # the import system overwrites it with the alias's spec
        return module

    def exec_module(self, module: ModuleType) -> None:
        # the module ran at its new path already; give it back its own spec (reload, relative imports)
        module.__spec__ = self._specs.pop(module.__spec__.name, module.__spec__)


def install() -> None:
    if not any(isinstance(f, _Alias) for f in sys.meta_path):
        sys.meta_path.append(_Alias())
