"""``verify_code`` and ``verify_code_batch``: run programs against tests in the sandbox, return verdicts.

The verdict is decided here, in the parent, from the tests process's report only: it must start with this
run's random 16-byte token (``hmac.compare_digest``) and then say that every test passed. The exit code,
anything printed, and anything the candidate process sends are never consulted. Statuses:

- ``correct``: the tests ran to the end against the program;
- ``incorrect``: a test failed or raised, the program raised at import time, ``entry_point`` is not a
  callable top-level name of the program, or no genuine report arrived;
- ``no_answer``: the program is empty (nothing is run);
- ``timeout``: the wall-clock deadline passed (or the candidate hit its CPU limit) before the report;
- ``invalid``: ``reference`` (a known-good program) does not pass the tests, so they cannot judge.

``Verdict.path`` says why, as ``code:<reason>`` (``code:passed``, ``code:AssertionError``,
``code:NoEntryPoint``, ``code:deadline``, ...); it names an exception class of the tests process, never text
the program chose. Reference verdicts are cached per (reference, tests, entry point), timeouts excepted.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import math
import os
import threading
from collections import OrderedDict
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor

from ..verdict import Verdict
from . import pool

TOKEN_BYTES = 16
MAX_PROGRAM_CHARS = 4 << 20  # a longer program is judged incorrect without running (the job frame cap is 64 MiB)
BACKSTOP_SLACK = 0.9  # the zygote enforces the deadline; the parent gives up on a silent sandbox after this
_REFERENCE_CACHE: OrderedDict[str, Verdict] = OrderedDict()
_CACHE_SIZE = 4096
_LOCK = threading.Lock()
_POOL: pool.SandboxPool | None = None


def sandbox_pool() -> pool.SandboxPool:
    """The process-wide pool (a fresh one after ``os.fork``)."""
    global _POOL
    with _LOCK:
        if _POOL is None or _POOL.pid != os.getpid():
            _POOL = pool.SandboxPool()
        return _POOL


def restart_pool() -> None:
    """Close the process-wide pool; the next call starts fresh sandboxes (e.g. after changing the limits)."""
    global _POOL
    with _LOCK:
        old, _POOL = _POOL, None
    if old is not None:
        old.close()


def warmup_code() -> dict:
    """Start all sandboxes now (raises SandboxUnavailable where they cannot run); their setup details."""
    return sandbox_pool().warmup()


def _outcome(report: bytes, token: bytes) -> dict | None:
    if len(report) < TOKEN_BYTES + 4 or not hmac.compare_digest(report[:TOKEN_BYTES], token):
        return None
    body = report[TOKEN_BYTES:]
    try:
        size = int.from_bytes(body[:4], "big")
        outcome = json.loads(body[4:4 + size]) if size == len(body) - 4 else None
    except ValueError:
        return None
    return outcome if isinstance(outcome, dict) else None


def _decide(answer: dict | None, token: bytes) -> Verdict:
    if answer is None:
        return Verdict("timeout", path="code:sandbox_lost")
    try:
        outcome = _outcome(bytes.fromhex(str(answer.get("report", ""))), token)
    except ValueError:
        outcome = None
    if outcome is not None and outcome.get("passed") is True:
        return Verdict("correct", path="code:passed")
    if answer.get("timed_out") is True:
        return Verdict("timeout", path="code:deadline")
    if answer.get("candidate") == "SIGXCPU":
        return Verdict("timeout", path="code:cpu_limit")
    if outcome is None:
        return Verdict("incorrect", path="code:no_report")
    error = str(outcome.get("error", ""))[:64]
    return Verdict("incorrect", path=f"code:{error if error.isidentifier() else 'failed'}")


def _run(program: str, tests: str, entry_point: str | None, timeout: float) -> Verdict:
    if not program.strip():
        return Verdict("no_answer", path="code:empty")
    if len(program) > MAX_PROGRAM_CHARS:
        return Verdict("incorrect", path="code:too_large")
    token = os.urandom(TOKEN_BYTES)
    job = {"program": program, "tests": tests, "entry_point": entry_point, "timeout": timeout,
           "limits": {"cpu_seconds": math.ceil(timeout) + 1}}
    return _decide(sandbox_pool().run(job, token, timeout + BACKSTOP_SLACK), token)


def _reference_ok(reference: str, tests: str, entry_point: str | None, timeout: float) -> bool:
    key = hashlib.sha256(repr((reference, tests, entry_point)).encode("utf-8", "surrogatepass")).hexdigest()
    with _LOCK:
        cached = _REFERENCE_CACHE.get(key)
    if cached is None:
        cached = _run(reference, tests, entry_point, timeout)
        if cached.status != "timeout":
            with _LOCK:
                _REFERENCE_CACHE[key] = cached
                while len(_REFERENCE_CACHE) > _CACHE_SIZE:
                    _REFERENCE_CACHE.popitem(last=False)
    return cached.status == "correct"


def _check_args(program: object, tests: object, entry_point: object, row: int) -> None:
    if not isinstance(program, str):
        raise TypeError(f"programs[{row}]: expected str, got {type(program).__name__}")
    if not isinstance(tests, str) or not tests.strip():
        raise ValueError(f"tests[{row}]: expected non-empty test code (str), got {tests!r:.60}")
    if len(tests) > 8 * MAX_PROGRAM_CHARS:
        raise ValueError(f"tests[{row}]: {len(tests)} characters of test code, more than {8 * MAX_PROGRAM_CHARS}")
    if entry_point is not None and not (isinstance(entry_point, str) and entry_point.isidentifier()):
        raise ValueError(f"entry_points[{row}]: expected a Python identifier or None, got {entry_point!r:.60}")


def verify_code(program: str, tests: str, *, entry_point: str | None = None, reference: str | None = None,
                timeout: float = 5.0) -> Verdict:
    """Run ``program`` in the sandbox against ``tests`` (see the module docstring for the statuses)."""
    return verify_code_batch([program], [tests], entry_points=[entry_point], references=[reference],
                             timeout=timeout)[0]


def _one(program: str, tests: str, entry_point: str | None, reference: str | None, timeout: float) -> Verdict:
    if reference is not None and not _reference_ok(reference, tests, entry_point, timeout):
        return Verdict("invalid", path="code:reference_fails")
    return _run(program, tests, entry_point, timeout)


def verify_code_batch(programs: Sequence[str], tests: Sequence[str] | str, *,
                      entry_points: Sequence[str | None] | str | None = None,
                      references: Sequence[str | None] | None = None, timeout: float = 5.0,
                      max_workers: int | None = None) -> list[Verdict]:
    """Verdicts of many programs, run in parallel over the pool, in order; same semantics as verify_code.

    ``tests`` and ``entry_points`` may be one value for all programs; ``max_workers`` caps the parallel jobs
    (default: the pool size, ``SRLM_SANDBOX_WORKERS`` or twice the CPU count, 2 to 16). Safe from any thread.
    """
    n = len(programs)
    tests_list = [tests] * n if isinstance(tests, str) else list(tests)
    entries = list(entry_points) if isinstance(entry_points, Sequence) and not isinstance(entry_points, str) \
        else [entry_points] * n
    refs = list(references) if references is not None else [None] * n
    if not (len(tests_list) == len(entries) == len(refs) == n):
        raise ValueError(f"verify_code_batch: {n} programs but {len(tests_list)} tests, {len(entries)} entry "
                         f"points and {len(refs)} references")
    if not (isinstance(timeout, int | float) and 0 < timeout <= 600):
        raise ValueError(f"timeout: expected seconds in (0, 600], got {timeout!r}")
    for row in range(n):
        _check_args(programs[row], tests_list[row], entries[row], row)
    if n == 0:
        return []
    workers = min(n, max_workers or sandbox_pool().size)
    with ThreadPoolExecutor(max_workers=workers) as executor:
        return list(executor.map(_one, programs, tests_list, entries, refs, [float(timeout)] * n))
