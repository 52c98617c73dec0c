"""Sandboxed execution of model-written Python against tests: the only place such code ever runs.

Public API (re-exported lazily from :mod:`srlm_pl.verifiers`)::

    from srlm_pl.verifiers import extract_code, verify_code, verify_code_batch
    verify_code("def add(a, b):\\n    return a + b\\n", "assert add(2, 3) == 5\\n", entry_point="add")

Modules, one job each: :mod:`.extract` (code out of a completion, parsed never run), :mod:`.api` (verdicts),
:mod:`.pool` (warm sandboxes in the parent), :mod:`.host` (what of the host the sandbox may see),
:mod:`.launcher`, :mod:`.tree`, :mod:`.cgroups`, :mod:`.syscalls` (setting a sandbox up), :mod:`.zygote`,
:mod:`.confine`, :mod:`.candidate`, :mod:`.harness` (what runs inside), :mod:`.protocol` and
:mod:`.plaindata` (what crosses the pipes). docs/code_sandbox.md says what is enforced and how.

This ``__init__`` imports nothing, so the sandbox launcher loads only the modules it needs.
"""

from __future__ import annotations

from typing import Any

_EXPORTS = {"verify_code": "api", "verify_code_batch": "api", "warmup_code": "api", "sandbox_pool": "api",
            "extract_code": "extract", "SandboxUnavailable": "host"}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module(f"{__name__}.{module}"), name)
